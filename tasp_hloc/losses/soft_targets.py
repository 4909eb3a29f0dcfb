"""Sub-pixel keypoint targets for the 65-way cell detector, and their cross-entropy.

A label at a sub-pixel position (x, y) is split over its 4 nearest pixels with bilinear weights
(pixel (x0, y0) gets (1 - fx)(1 - fy), ..., fx = x - floor(x)). A cell's target is the 64
weights of its pixels plus a dustbin of ``1 - their sum`` (cells holding more than one unit of
mass are rescaled to one, dustbin 0). A detector that predicts these targets exactly has a
heatmap whose probability-weighted centroid over the 3x3 window around its peak is the label's
position (``keypoints.refine_keypoints``): the readout is exact for the
targets, unlike integer labels, which can only teach the pixel grid.

Cross-entropy with soft targets, per cell: ``-sum_k t_k log softmax(logits)_k``; cells with
mass on a pixel are positives and take a weight (the task-aligned factor, ``keypoint.py``).
"""

import torch
import torch.nn.functional as F

CELL = 8


def soft_cell_targets(
    keypoints: torch.Tensor, mask: torch.Tensor, hc: int, wc: int, cell: int = CELL
) -> torch.Tensor:
    """65-way targets of sub-pixel keypoints.

    Args:
        keypoints: :math:`(B, N, 2)` x-y pixels (top-left pixel centre (0, 0)).
        mask: :math:`(B, N)` bool, the keypoints to use.
        hc, wc: the detector grid (the image is ``hc * cell`` x ``wc * cell`` pixels).

    Returns:
        :math:`(B, 65, hc, wc)` targets summing to 1 over the 65 channels; channel
        ``8*dy + dx`` is pixel (dx, dy) of the cell, channel 64 the dustbin. Mass that would fall
        outside the image is dropped (the dustbin takes it).
    """
    if keypoints.dim() != 3 or keypoints.shape[-1] != 2 or mask.shape != keypoints.shape[:2]:
        raise ValueError(
            f"Expected keypoints (B, N, 2) and mask (B, N), got {tuple(keypoints.shape)} "
            f"and {tuple(mask.shape)}."
        )
    b = keypoints.shape[0]
    h, w = hc * cell, wc * cell
    kp = torch.nan_to_num(keypoints.detach().float(), nan=-10.0)
    corner = kp.floor()
    frac = kp - corner
    heat = kp.new_zeros(b * h * w)
    offset = (torch.arange(b, device=kp.device) * (h * w))[:, None]
    for dx in (0, 1):
        for dy in (0, 1):
            x = corner[..., 0].long() + dx
            y = corner[..., 1].long() + dy
            wx = frac[..., 0] if dx else 1 - frac[..., 0]
            wy = frac[..., 1] if dy else 1 - frac[..., 1]
            use = mask & (x >= 0) & (x < w) & (y >= 0) & (y < h)
            index = (offset + y.clamp(0, h - 1) * w + x.clamp(0, w - 1))[use]
            heat.index_add_(0, index, (wx * wy)[use])
    heat = heat.view(b, 1, h, w).clamp(max=1.0)
    pixels = F.pixel_unshuffle(heat, cell)  # B x 64 x hc x wc, channel 8*dy + dx
    total = pixels.sum(1, keepdim=True)
    pixels = pixels / total.clamp(min=1.0)
    return torch.cat([pixels, (1 - total).clamp(min=0.0)], 1)


def soft_cell_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor = None,
    valid: torch.Tensor = None,
) -> torch.Tensor:
    """Per-sample mean over valid cells of the soft-target cross-entropy.

    Args:
        logits: :math:`(B, 65, hc, wc)`.
        targets: :math:`(B, 65, hc, wc)` from ``soft_cell_targets``.
        weights: :math:`(B, hc, wc)` weights of positive cells (dustbin target < 1); default 1.
        valid: :math:`(B, hc, wc)` bool cells to count; default all.

    Returns:
        :math:`(B,)` sum over valid cells / number of valid cells (0 where none).
    """
    if logits.shape != targets.shape or logits.dim() != 4 or logits.shape[1] != 65:
        raise ValueError(
            f"Expected logits and targets of one shape (B, 65, h, w), got "
            f"{tuple(logits.shape)} and {tuple(targets.shape)}."
        )
    ce = -(targets * logits.float().log_softmax(1)).sum(1)  # B x hc x wc
    if weights is not None:
        ce = torch.where(targets[:, 64] < 1, weights.detach().to(ce.dtype) * ce, ce)
    if valid is None:
        valid = torch.ones_like(ce, dtype=torch.bool)
    ce = ce.masked_fill(~valid, 0)
    return ce.flatten(1).sum(-1) / valid.flatten(1).sum(-1).clamp(min=1).to(ce.dtype)
