"""Keypoints <-> 8x8-cell label maps, the detector's training target.

An H x W image (H, W multiples of 8) has an int64 label map of H/8 x W/8 cells. A cell holds
``dy * 8 + dx``, the position of its keypoint inside the cell (pixel (8*j + dx, 8*i + dy) for
cell (i, j)), or 64 (the dustbin) when it has none. Keypoints are x-y pixels with the centre of
the top-left pixel at (0, 0); they are rounded to the nearest pixel. When several keypoints fall
into one cell the highest-scoring one is kept (ties: the one listed last).
"""

from typing import Optional, Tuple

import torch

CELL = 8
DUSTBIN = CELL * CELL


def _check_size(size: Tuple[int, int]) -> Tuple[int, int]:
    h, w = int(size[0]), int(size[1])
    if h % CELL or w % CELL or h <= 0 or w <= 0:
        raise ValueError(
            f"Label maps need an image size that is a positive multiple of {CELL}, got "
            f"{h} x {w}: crop or pad the image first."
        )
    return h, w


def keypoints_to_label_map(
    keypoints: torch.Tensor, size: Tuple[int, int], scores: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Encode keypoints as a cell label map.

    Args:
        keypoints: :math:`(K, 2)` x-y pixels; points outside the image are ignored.
        size: image size ``(H, W)``, multiples of 8.
        scores: :math:`(K,)`; decides which keypoint a cell keeps. Default: all equal.

    Returns:
        :math:`(H/8, W/8)` int64 in [0, 64], 64 = no keypoint.
    """
    h, w = _check_size(size)
    hc, wc = h // CELL, w // CELL
    labels = torch.full((hc * wc,), DUSTBIN, dtype=torch.long, device=keypoints.device)
    if keypoints.numel() == 0:
        return labels.view(hc, wc)
    if keypoints.dim() != 2 or keypoints.shape[1] != 2:
        raise ValueError(f"Expected keypoints of shape (K, 2), got {tuple(keypoints.shape)}.")
    xy = torch.round(keypoints.double()).long()  # nearest pixel (halves round to even)
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    if scores is None:
        scores = torch.zeros(len(xy), device=keypoints.device)
    xy, scores = xy[inside], scores[inside]
    if len(xy) == 0:
        return labels.view(hc, wc)
    cell = (xy[:, 1] // CELL) * wc + xy[:, 0] // CELL
    offset = (xy[:, 1] % CELL) * CELL + xy[:, 0] % CELL
    # A unique rank per keypoint (stable sort by score) makes "highest score wins" deterministic,
    # which a plain scatter with duplicate indices is not.
    rank = torch.empty_like(cell)
    rank[torch.sort(scores, stable=True).indices] = torch.arange(len(cell), device=cell.device)
    best = torch.full_like(labels, -1).scatter_reduce(0, cell, rank, "amax")
    winner = rank == best[cell]
    labels[cell[winner]] = offset[winner]
    return labels.view(hc, wc)


def label_map_to_keypoints(labels: torch.Tensor) -> torch.Tensor:
    """Decode a cell label map into keypoints.

    Args:
        labels: :math:`(H/8, W/8)` int64 in [0, 64].

    Returns:
        :math:`(K, 2)` float32 x-y pixels of the non-dustbin cells, in row-major cell order.
    """
    if labels.dim() != 2:
        raise ValueError(f"Expected a label map of shape (H/8, W/8), got {tuple(labels.shape)}.")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > DUSTBIN):
        raise ValueError(f"Label values must lie in [0, {DUSTBIN}].")
    i, j = torch.nonzero(labels != DUSTBIN, as_tuple=True)
    offset = labels[i, j]
    x = j * CELL + offset % CELL
    y = i * CELL + offset // CELL
    return torch.stack([x, y], -1).float()
