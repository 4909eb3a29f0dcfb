"""Extract TaSP features from a folder of images into an hloc feature file, without hloc."""

import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from .confs import DETECTION_NOISE
from .device import resolve_device
from .hloc_format import (open_for_append, rescale_prediction, stored_names, to_hloc_prediction,
                          write_features)
from .image_io import ImageDataset, ImageReadError
from .tasp import TaSP

logger = logging.getLogger(__name__)

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
    commit_every: float = 1.0,
) -> Tuple[Path, List[Tuple[str, str]]]:
    """Write features of every image of ``image_dir`` (or ``names``) to ``feature_path``.

    Args:
        conf: a preset (``tasp_hloc.confs``): ``model`` and ``preprocessing`` dicts.
        names: image names relative to ``image_dir``; default: all images found there.
        overwrite: re-extract images already in the file (else they are skipped, so an
            interrupted run resumes where it stopped).
        fail_fast: raise on the first unreadable image instead of skipping it.
        commit_every: seconds between commits of the file (0: after every image); a SIGKILL
            loses at most the images finished since the last commit (see ``open_for_append``).

    Returns:
        ``(feature_path, failures)``: failures lists ``(name, reason)`` of skipped images.
    """
    feature_path = Path(feature_path)
    dataset = ImageDataset(image_dir, conf.get("preprocessing", {}), names)
    done = set() if overwrite else stored_names(feature_path, dataset.names)
    dataset.names = [n for n in dataset.names if n not in done]
    if not dataset.names:
        logger.info("All images are already in %s; nothing to extract.", feature_path)
        return feature_path, []
    logger.info("Extracting %d images into %s (%d already there).", len(dataset.names),
                feature_path, len(done))

    device = resolve_device(device)
    model = model if model is not None else build_model(conf["model"], device)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=1, shuffle=False, num_workers=num_workers, collate_fn=_first,
        pin_memory=device.startswith("cuda"),
    )
    failures = []
    batches = iter(loader)  # forks the decoding workers before the output is opened (locked)
    with open_for_append(feature_path, commit_every) as out:
        for item in tqdm(batches, total=len(dataset), desc="extract", unit="img"):
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
            with out.item(item["name"]) as fd:
                write_features(fd, item["name"], pred, uncertainty)
    if failures:
        logger.warning(
            "Skipped %d unreadable images (fix or remove them and run again to add them):\n%s",
            len(failures), "\n".join(f"  {n}" for n, _ in failures),
        )
    return feature_path, failures
