"""Triplet anchors of a batch: the labelled keypoints plus random grid points (paper §IV-A)."""

from typing import Dict, Optional

import torch

from ..data.geometry import dense_xyz, grid_points, warp_points
from ..labels import label_map_to_keypoints


def build_anchors(
    batch: Dict,
    max_grid: int = 256,
    spacing: int = 4,
    generator: Optional[torch.Generator] = None,
    stride: int = 4,
    global_batch: Optional[int] = None,
    offset: int = 0,
) -> Dict:
    """Anchors in image 0, their correspondences in image 1 and the 3D maps the loss needs.

    ``global_batch``, ``offset``: the batch is rows ``offset:offset + B`` of a global batch of
    ``global_batch`` samples split across processes; the random grids are drawn for the whole
    global batch and this slice is kept, so every process draws the same numbers from
    ``generator`` (which stays identical across processes) and the anchors equal those of one
    process with the global batch.

    Returns a dict to merge into the batch: ``kpts0``, ``kpts1`` (B x N x 2), ``valid``,
    ``is_label`` (B x N bool), ``xyz_kpts0``, ``xyz_kpts1`` (B x N x 3), ``xyz0``, ``xyz1``
    (B x 3 x H/stride x W/stride). N is the largest anchor count of the batch; padding is
    invalid.
    """
    image0 = batch["image0"]
    b, _, h, w = image0.shape
    device = image0.device
    total = b if global_batch is None else global_batch
    if not 0 <= offset <= total - b:
        raise ValueError(f"Rows {offset}:{offset + b} are not inside a global batch of {total}.")
    grid = grid_points(h, w, spacing, max_grid, generator=generator, batch_size=total)
    grid = grid[offset : offset + b].to(device)
    per_sample, labelled = [], []
    for i in range(b):  # label counts differ per image: build, then pad
        kp = label_map_to_keypoints(batch["labels0"][i]).to(device)
        per_sample.append(torch.cat([kp, grid[i]]))
        labelled.append(len(kp))
    n = max(len(k) for k in per_sample)
    kpts0 = torch.zeros(b, n, 2, device=device)
    is_label = torch.zeros(b, n, dtype=torch.bool, device=device)
    present = torch.zeros(b, n, dtype=torch.bool, device=device)
    for i, k in enumerate(per_sample):
        kpts0[i, : len(k)] = k
        is_label[i, : labelled[i]] = True
        present[i, : len(k)] = True
    kpts1, valid, xyz_kpts0, xyz_kpts1 = warp_points(kpts0, batch)
    rows = torch.arange(b, device=device)[:, None]
    xy0 = kpts0.round().long()
    xy1 = kpts1.nan_to_num(0).round().long()
    xy1[..., 0].clamp_(0, w - 1), xy1[..., 1].clamp_(0, h - 1)
    # Both ends on real image content (not the black border of a warped photo).
    on_content = (
        batch["valid0"][rows, xy0[..., 1], xy0[..., 0]]
        & batch["valid1"][rows, xy1[..., 1], xy1[..., 0]]
    )
    return {
        "kpts0": kpts0,
        "kpts1": kpts1,
        "valid": valid & present & on_content,
        "is_label": is_label & present,
        "xyz_kpts0": xyz_kpts0,
        "xyz_kpts1": xyz_kpts1,
        "xyz0": dense_xyz(batch["depth0"], batch["K0"], stride),
        "xyz1": dense_xyz(batch["depth1"], batch["K1"], stride),
    }
