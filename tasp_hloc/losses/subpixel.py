"""A trained sub-pixel placement: not in the paper, off unless asked for.

The cell-softmax detector and labels on the pixel grid place keypoints to the pixel. This term
teaches the full-resolution heatmap to put its mass where a keypoint really is: in image 1, the
probability-weighted centroid of the 3 x 3 pixels around the (continuous) warp of a labelled keypoint of image 0
should land on that warp. It is the refinement TaSP runs with ``subpixel: "centroid"``
(``model.keypoints.refine_keypoints``), so training and inference move points the same way.
The warps are exact (homography or depth and pose) while the labels sit on whole pixels of
image 0; over many warps the quantisation of the labels averages out.

Contract of ``SubpixelReprojectionLoss.forward(heatmap1, kpts1, valid) -> dict``:
    heatmap1: :math:`(B, H, W)` keypoint probabilities of image 1 (``logits_to_heatmap``).
    kpts1:    :math:`(B, N, 2)` warps in image 1 of labelled keypoints of image 0 (x, y; top-left
              pixel centre at (0, 0)).
    valid:    :math:`(B, N)` bool, the warp exists (points outside image 1 are dropped here).
Returns ``loss`` :math:`(B,)`, the mean squared distance in pixels^2 between refined point and
warp over the sample's valid points (0 if none), and ``error`` :math:`(B,)`, the mean distance
in pixels (detached).
"""

from __future__ import annotations

import torch
from torch import nn

from ..model.keypoints import refine_keypoints


class SubpixelReprojectionLoss(nn.Module):
    def forward(self, heatmap1: torch.Tensor, kpts1: torch.Tensor, valid: torch.Tensor) -> dict:
        if heatmap1.dim() != 3 or kpts1.dim() != 3 or kpts1.shape[-1] != 2:
            raise ValueError(
                f"Expected heatmap1 (B, H, W) and kpts1 (B, N, 2), got "
                f"{tuple(heatmap1.shape)} and {tuple(kpts1.shape)}."
            )
        if valid.shape != kpts1.shape[:2]:
            raise ValueError(f"valid {tuple(valid.shape)} must be kpts1's (B, N).")
        _, h, w = heatmap1.shape
        kpts1 = kpts1.to(heatmap1.dtype)
        inside = (
            (kpts1[..., 0] >= 0) & (kpts1[..., 0] <= w - 1)
            & (kpts1[..., 1] >= 0) & (kpts1[..., 1] <= h - 1)
        )  # fmt: skip
        mask = valid.bool() & inside
        refined = refine_keypoints(heatmap1, kpts1.round())
        sq = ((refined - kpts1) ** 2).sum(-1).masked_fill(~mask, 0)
        n = mask.sum(-1).clamp(min=1).to(sq.dtype)
        dist = sq.detach().clamp(min=0).sqrt()
        return {"loss": sq.sum(-1) / n, "error": dist.sum(-1) / n}
