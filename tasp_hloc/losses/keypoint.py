"""Task-aligned keypoint loss (paper Eq. 10-11).

The detector is SuperPoint's 65-way cell classifier (64 pixel positions of an 8 x 8 cell plus
a dustbin). The plain loss is the cell-wise cross-entropy against the label of each cell. Task
alignment replaces the target weight 1 of a positive cell (a cell holding a labelled keypoint)
by the alignment factor of that keypoint's triplet,

    delta = exp(t * (m - M)),    t = 0.5, m = the triplet margin, no gradient,

so a keypoint whose descriptor is already well separated (M = 0: delta = e^{t m} ~ 1.65) pushes
its detection score up harder than one whose descriptor is confused (at most M = m + 2 for unit
descriptors: delta = e^{-2t} ~ 0.37 at t = 0.5). Per cell:

    positive cell c (label < 64):  -delta_c * log softmax(logits_c)[label_c]
    negative cell c (label = 64):  -log softmax(logits_c)[64]

Normalisation: the sum over valid cells divided by the number of valid cells of the sample
(the mean cell cross-entropy of SuperPoint; delta is not renormalised, so task alignment
changes the scale of the positive terms by up to e^{t m}). Positive cells whose keypoint has
no valid triplet keep delta = 1. With task alignment off the loss is SuperPoint's.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..options import with_defaults
from .soft_targets import soft_cell_cross_entropy


def alignment_factor(
    M: torch.Tensor, margin: float = 1.0, temperature: float = 0.5
) -> torch.Tensor:
    """delta = exp(t * (m - M)), detached (Eq. 10)."""
    return torch.exp(temperature * (margin - M.detach()))


def anchors_to_cells(
    values: torch.Tensor,
    keypoints: torch.Tensor,
    mask: torch.Tensor,
    hc: int,
    wc: int,
    cell: int = 8,
    fill: float = 1.0,
):
    """Scatter per-anchor values into the detector cells that contain the anchors.

    The anchor at pixel (x, y) belongs to cell (round(y) // cell, round(x) // cell); several
    anchors in one cell are averaged; cells without an anchor get ``fill``.

    Args:
        values: B x N values; keypoints: B x N x 2 pixels (x, y); mask: B x N bool (use).
        hc, wc: detector grid size; cell: pixels per cell.
    Returns:
        B x hc x wc values, B x hc x wc bool (cell received a value).
    """
    b, n = values.shape
    if keypoints.shape != (b, n, 2) or mask.shape != (b, n):
        raise ValueError(
            f"Expected values B x N, keypoints B x N x 2, mask B x N; got {tuple(values.shape)}, "
            f"{tuple(keypoints.shape)}, {tuple(mask.shape)}."
        )
    # NaN positions become -1: outside the grid, dropped below.
    ij = torch.nan_to_num(keypoints.detach(), nan=-1.0).round().long()
    ij = ij.div(cell, rounding_mode="floor")
    j, i = ij[..., 0], ij[..., 1]
    mask = mask & (i >= 0) & (i < hc) & (j >= 0) & (j < wc)
    flat = (i * wc + j).clamp(0, hc * wc - 1)
    offset = torch.arange(b, device=values.device)[:, None] * (hc * wc)
    idx = (flat + offset)[mask]
    total = values.new_zeros(b * hc * wc).index_add_(0, idx, values.detach()[mask])
    count = values.new_zeros(b * hc * wc).index_add_(0, idx, torch.ones_like(values)[mask])
    has = count > 0
    out = torch.where(has, total / count.clamp(min=1), torch.full_like(total, fill))
    return out.view(b, hc, wc), has.view(b, hc, wc)


def weighted_cell_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor = None,
    mask: torch.Tensor = None,
) -> torch.Tensor:
    """Per-sample mean of the 65-way cell cross-entropy, positive cells weighted.

    Args:
        logits: B x 65 x hc x wc detector logits (channel 64 = dustbin).
        labels: B x hc x wc int64 in [0, 64] (64 = no keypoint).
        weights: B x hc x wc weights of the positive cells (default 1; ignored on negatives).
        mask: B x hc x wc bool valid cells (default all).
    Returns:
        B losses: sum over valid cells / number of valid cells (0 if none).
    """
    if logits.dim() != 4 or logits.shape[1] != 65:
        raise ValueError(f"Expected logits B x 65 x H/8 x W/8, got {tuple(logits.shape)}.")
    shape = (logits.shape[0],) + tuple(logits.shape[2:])
    if labels.shape != shape:
        raise ValueError(
            f"Expected labels of shape {shape} (B x H/8 x W/8), got {tuple(labels.shape)}."
        )
    if labels.dtype != torch.int64 or labels.numel() and (labels.min() < 0 or labels.max() > 64):
        raise ValueError("Labels must be int64 in [0, 64] (64 = no keypoint in the cell).")
    if mask is None:
        mask = torch.ones(shape, dtype=torch.bool, device=logits.device)
    mask = mask.bool()
    if mask.shape != shape:
        raise ValueError(f"Expected label mask of shape {shape}, got {tuple(mask.shape)}.")
    # integer labels are one-hot soft targets: one cross-entropy for both
    targets = F.one_hot(labels, 65).permute(0, 3, 1, 2).to(logits.dtype)
    return soft_cell_cross_entropy(logits, targets, weights, mask)


class TaskAlignedKeypointLoss(nn.Module):
    """Detector loss with task-aligned positive weights.

    ``forward(logits, labels, mask=None, triplet_loss=None, keypoints=None, keypoint_valid=None)``
        logits: B x 65 x hc x wc; labels: B x hc x wc int64; mask: B x hc x wc bool.
        triplet_loss: B x N, M of the triplets anchored at ``keypoints`` (B x N x 2 pixels
            in the detector's image), used where ``keypoint_valid`` (B x N bool). Only anchors
            that are labelled keypoints should be passed as valid.
    Returns a dict:
        loss: B; delta: B x hc x wc (1 where no triplet or alignment off);
        delta_mean: B mean delta over positive valid cells (1 where none);
        aligned_fraction: B fraction of positive valid cells that received a triplet's delta.
    """

    default_conf = {
        "task_aligned": True,
        "margin": 1.0,
        "temperature": 0.5,
        "cell": 8,
    }

    def __init__(self, conf: dict = None):
        super().__init__()
        self.conf = with_defaults(self.default_conf, conf, "TaskAlignedKeypointLoss")

    def forward(
        self, logits, labels, mask=None, triplet_loss=None, keypoints=None, keypoint_valid=None
    ) -> dict:
        c = self.conf
        b, _, hc, wc = logits.shape
        delta = logits.new_ones(b, hc, wc)
        has = torch.zeros(b, hc, wc, dtype=torch.bool, device=logits.device)
        if c["task_aligned"] and triplet_loss is not None:
            if keypoints is None:
                raise ValueError("Task alignment needs the keypoints of the triplet anchors.")
            if keypoint_valid is None:
                keypoint_valid = torch.ones_like(triplet_loss, dtype=torch.bool)
            d = alignment_factor(triplet_loss, c["margin"], c["temperature"])
            delta, has = anchors_to_cells(d, keypoints, keypoint_valid.bool(), hc, wc, c["cell"])
        loss = weighted_cell_cross_entropy(logits, labels, delta, mask)
        pos = labels < 64
        if mask is not None:
            pos = pos & mask.bool()
        npos = pos.flatten(1).sum(-1)
        delta_mean = torch.where(
            npos > 0, (delta * pos).flatten(1).sum(-1) / npos.clamp(min=1), torch.ones_like(loss)
        )
        aligned = (has & pos).flatten(1).sum(-1) / npos.clamp(min=1)
        return {
            "loss": loss,
            "delta": delta,
            "delta_mean": delta_mean,
            "aligned_fraction": aligned.to(loss.dtype),
        }
