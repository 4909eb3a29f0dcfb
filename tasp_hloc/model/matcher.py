"""Mutual nearest-neighbour matching of descriptor tensors (hloc's ``NN-mutual``): the kernel of
the HDF5 matcher (:mod:`tasp_hloc.match`) and the Python API's ``match_pair``."""

from typing import Dict, Optional, Tuple

import torch


def mutual_nearest_neighbor(
    desc0: torch.Tensor,
    desc1: torch.Tensor,
    mask0: Optional[torch.Tensor] = None,
    mask1: Optional[torch.Tensor] = None,
    max_distance: Optional[float] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mutual nearest neighbours by cosine similarity, in hloc's ``NN-mutual`` convention.

    Args:
        desc0: :math:`(B, N0, D)` unit-norm descriptors; desc1: :math:`(B, N1, D)`.
        mask0, mask1: :math:`(B, N0)`, :math:`(B, N1)` bool, False for padding.
        max_distance: hloc's ``distance_threshold`` (``NN-tasp``: 0.6): a nearest neighbour
            farther than this (Euclidean, i.e. cosine below 1 - d^2 / 2) is no match, and its
            score is 0, as hloc stores it.

    Returns:
        ``matches0`` :math:`(B, N0)` int64, index into image 1 or -1, and ``scores0``
        :math:`(B, N0)` = (cosine of the nearest neighbour + 1) / 2 (as hloc stores it, also
        for points whose match fails the mutual check; 0 for padding).
    """
    if desc0.dim() != 3 or desc1.dim() != 3 or desc0.shape[-1] != desc1.shape[-1]:
        raise ValueError(
            f"Expected (B, N, D) descriptors, got {tuple(desc0.shape)}, {tuple(desc1.shape)}."
        )
    b, n0, n1 = desc0.shape[0], desc0.shape[1], desc1.shape[1]
    if n0 == 0 or n1 == 0:
        return desc0.new_full((b, n0), -1, dtype=torch.long), desc0.new_zeros((b, n0))
    sim = torch.einsum("bnd,bmd->bnm", desc0, desc1)
    if mask0 is not None or mask1 is not None:
        valid = torch.ones_like(sim, dtype=torch.bool)
        if mask0 is not None:
            valid &= mask0[:, :, None]
        if mask1 is not None:
            valid &= mask1[:, None, :]
        sim = sim.masked_fill(~valid, float("-inf"))
    best0, nn0 = sim.max(2)  # B x N0
    nn1 = sim.argmax(1)  # B x N1
    mutual = torch.gather(nn1, 1, nn0) == torch.arange(n0, device=sim.device)[None]
    close = torch.isfinite(best0)
    if max_distance is not None:  # on each side's nearest neighbour, as hloc's find_nn
        close &= 2 * (1 - best0) <= max_distance**2
    mutual &= close
    matches0 = torch.where(mutual, nn0, nn0.new_tensor(-1))
    scores0 = torch.where(close, (best0 + 1) / 2, best0.new_tensor(0.0))
    return matches0, scores0


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
