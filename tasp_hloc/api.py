"""Tensor-level helpers for the Python API (``from tasp_hloc import load_image, match_pair``)."""

from pathlib import Path
from typing import Dict, Union

import torch

from .image_io import read_image
from .match import mutual_nearest_neighbor


def load_image(path: Union[str, Path], grayscale: bool = False) -> torch.Tensor:
    """Read an image as hloc does (OpenCV, EXIF orientation ignored) into a float tensor
    :math:`(3, H, W)` RGB, or :math:`(1, H, W)` if ``grayscale``, with values in [0, 1]."""
    image = read_image(Path(path), grayscale)
    tensor = torch.from_numpy(image.copy()).float() / 255.0
    return tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1).contiguous()


def match_pair(feats0: Dict[str, torch.Tensor], feats1: Dict[str, torch.Tensor]) -> Dict:
    """Mutual nearest neighbours between the outputs of ``TaSP.extract`` for two images.

    Returns hloc's ``matches0`` / ``matching_scores0`` :math:`(B, N_0)` (index into image 1 or
    -1) and, per batch element, ``matches`` :math:`(K, 2)` (index into keypoints 0, 1) and
    ``scores`` :math:`(K,)`.
    """
    matches0, scores0 = mutual_nearest_neighbor(
        feats0["descriptors"],
        feats1["descriptors"],
        feats0.get("keypoint_mask"),
        feats1.get("keypoint_mask"),
    )
    matches, scores = [], []
    for m, s in zip(matches0, scores0):
        valid = m > -1
        idx0 = torch.nonzero(valid)[:, 0]
        matches.append(torch.stack([idx0, m[valid]], -1))
        scores.append(s[valid])
    return {"matches0": matches0, "matching_scores0": scores0, "matches": matches, "scores": scores}
