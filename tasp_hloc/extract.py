"""Extract TaSP features from a folder of images into an hloc feature file, without hloc."""

import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from .hloc_format import open_for_append, resume_names, rescale_prediction, to_hloc_prediction, write_features
from .image_io import ImageDataset, ImageReadError
from .tasp import TaSP

logger = logging.getLogger(__name__)

# About a pixel of localisation noise (as hloc assumes for SuperPoint), refinement or not.
DETECTION_NOISE = 1.0


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def build_model(model_conf: Dict, device: str) -> TaSP:
    conf = {k: v for k, v in model_conf.items() if k != "name"}
    return TaSP(conf).eval().to(device)


def _first(batch: List[Dict]) -> Dict:
    return batch[0]  # batch size 1: images differ in size


@torch.no_grad()
def extract(
    conf: Dict,
    image_dir: Path,
    feature_path: Path,
    names: Optional[Sequence[str]] = None,
    as_half: bool = True,
    overwrite: bool = False,
    device: Optional[str] = None,
    num_workers: int = 2,
    fail_fast: bool = False,
    model: Optional[TaSP] = None,
) -> Tuple[Path, List[Tuple[str, str]]]:
    """Write features of every image of ``image_dir`` (or ``names``) to ``feature_path``.

    Args:
        conf: a preset (``tasp_hloc.confs``): ``model`` and ``preprocessing`` dicts.
        names: image names relative to ``image_dir``; default: all images found there.
        overwrite: re-extract images already in the file (else they are skipped, so an
            interrupted run resumes where it stopped).
        fail_fast: raise on the first unreadable image instead of skipping it.

    Returns:
        ``(feature_path, failures)``: failures lists ``(name, reason)`` of skipped images.
    """
    feature_path = Path(feature_path)
    dataset = ImageDataset(image_dir, conf.get("preprocessing", {}), names)
    if not overwrite:
        done = resume_names(feature_path)
        dataset.names = [n for n in dataset.names if n not in done]
    if not dataset.names:
        logger.info("All images are already in %s; nothing to extract.", feature_path)
        return feature_path, []

    device = device or default_device()
    model = model if model is not None else build_model(conf["model"], device)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=1, shuffle=False, num_workers=num_workers, collate_fn=_first,
        pin_memory=device.startswith("cuda"),
    )
    failures = []
    with open_for_append(feature_path) as fd:
        for item in tqdm(loader, desc="extract", unit="img"):
            if "error" in item:
                if fail_fast:
                    raise ImageReadError(item["error"])
                logger.warning("%s", item["error"])
                failures.append((item["name"], item["error"]))
                continue
            image = torch.from_numpy(item["image"])[None].to(device, non_blocking=True)
            pred = to_hloc_prediction(model({"image": image}))
            pred = {k: v[0].cpu().numpy() for k, v in pred.items()}
            resized_size = np.array(image.shape[-2:][::-1])
            pred, uncertainty = rescale_prediction(
                pred, resized_size, item["original_size"], DETECTION_NOISE, as_half
            )
            write_features(fd, item["name"], pred, uncertainty)
    if failures:
        logger.warning(
            "Skipped %d unreadable images (fix or remove them and run again to add them):\n%s",
            len(failures), "\n".join(f"  {n}" for n, _ in failures),
        )
    return feature_path, failures
