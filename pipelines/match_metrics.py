"""Matching and its accuracy for numpy features: what the HPatches pipeline and the benchmarks
share with each other and with ``tasp_hloc.model.matcher``.

Pixel coordinates are x-y with the top-left pixel centre at (0, 0); a homography H maps pixel
coordinates of image 0 to image 1.
"""

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

MMA_THRESHOLDS = (1, 3, 5, 10)


def mutual_nn_match(
    desc0: np.ndarray, desc1: np.ndarray, min_similarity: Optional[float] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours under cosine similarity: :func:`tasp_hloc.model.matcher.mutual_nearest_neighbor`
    (hloc's ``NN-mutual``) for one pair of numpy descriptor sets.

    desc0: N0 x D, desc1: N1 x D (any scale; normalised here).
    Returns matches M x 2 int64 (index in 0, index in 1) and their similarities M float32.
    """
    import torch

    from tasp_hloc.model.matcher import mutual_nearest_neighbor

    if len(desc0) == 0 or len(desc1) == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    d0, d1 = (
        np.ascontiguousarray(
            d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12), np.float32
        )
        for d in (desc0, desc1)
    )
    matches0, _ = mutual_nearest_neighbor(torch.from_numpy(d0)[None], torch.from_numpy(d1)[None])
    m = matches0[0].numpy()
    idx0 = np.flatnonzero(m > -1)
    sims = np.einsum("nd,nd->n", d0[idx0], d1[m[idx0]]).astype(np.float32)
    if min_similarity is not None:
        keep = sims >= min_similarity
        idx0, sims = idx0[keep], sims[keep]
    return np.stack([idx0, m[idx0]], axis=1).astype(np.int64), sims


def apply_homography(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 3 x 3 homography to N x 2 points -> N x 2 (points at infinity become inf)."""
    ph = np.concatenate([pts, np.ones((len(pts), 1))], axis=1) @ H.T
    with np.errstate(divide="ignore", invalid="ignore"):
        out = ph[:, :2] / ph[:, 2:]
    out[~np.isfinite(out)] = np.inf
    return out


def homography_match_errors(
    kpts0: np.ndarray, kpts1: np.ndarray, matches: np.ndarray, H: np.ndarray
) -> np.ndarray:
    """Reprojection error (pixels, in image 1) of each match: || H kpts0[i] - kpts1[j] ||. -> M."""
    if len(matches) == 0:
        return np.zeros(0)
    proj = apply_homography(H, kpts0[matches[:, 0]])
    return np.linalg.norm(proj - kpts1[matches[:, 1]], axis=1)


def mean_matching_accuracy(
    errors: np.ndarray, thresholds: Sequence[float] = MMA_THRESHOLDS
) -> Dict[float, float]:
    """Share of matches with error <= t, per threshold t, for one pair (0 when no match).

    Averaging this over pairs gives the MMA of D2-Net's HPatches protocol.
    """
    if len(errors) == 0:
        return {t: 0.0 for t in thresholds}
    return {t: float(np.mean(errors <= t)) for t in thresholds}
