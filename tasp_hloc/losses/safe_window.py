"""Safe windows: which descriptor cells may serve as negatives for an anchor (paper §III-C).

For an anchor p in one image and every cell c of that image's stride-s descriptor map, the
mask is True where c may be used as a negative, i.e. where c lies *outside* the anchor's safe
window. Two windows:

- square (D2-Net, ASLFeat): ``||c - p||_inf > K`` in pixels, with the cell centre of cell (i, j)
  at pixel ``(s j + (s - 1) / 2, s i + (s - 1) / 2)``. Default K = 16 px (4 cells at stride 4).
- 3D: ``||X(c) - X(p)||_2 > K3d`` with X the 3D point in the image's camera frame. SfM scale is
  arbitrary per scene, so a metric K3d is meaningless; we use ``K3d = rel * z(p)`` with z(p) the
  anchor's depth. On a fronto-parallel surface at depth z, a pixel offset d maps to a metric
  offset d z / f, so the 3D ball is a disc of radius ``rel * f`` pixels: rel = K / f gives the
  square window's size. The default rel = 0.04 is K = 16 px at f = 400 px, between a 256 px wide
  image of ~60° field of view (f ~ 220 px: a 9 px disc) and 256 px crops of 640 px images
  (f ~ 525 px: a 21 px disc). Unlike the square window it follows depth discontinuities: a far
  background cell next to a foreground anchor is a valid negative, and the window shrinks in
  pixels where the surface is far and grows where it is close (Fig. 4).

Cells with unknown depth (z <= 0 or non-finite) have no 3D position. We keep them as candidates
but judge them with the square window. Dropping them would remove textured regions whose depth
merely failed the MVS consistency check (holes are common in MegaDepth) and would bias negatives
towards well-reconstructed surfaces; accepting them unconditionally would let a depth hole right
next to the anchor — very likely the same surface — become the "hardest negative". The square
window is the baseline's rule, so these cells are never treated worse than in the base model.
Anchors without a valid 3D point fall back to the square window for all cells in the same way.
"""

import torch


def _check_anchors(anchors: torch.Tensor, last: int, name: str):
    if anchors.dim() != 3 or anchors.shape[-1] != last:
        raise ValueError(f"Expected {name} of shape B x N x {last}, got {tuple(anchors.shape)}.")


def square_window_mask(
    anchors: torch.Tensor, h: int, w: int, stride: int = 4, radius: float = 16.0
) -> torch.Tensor:
    """Cells outside the square safe window ``||c - p||_inf > radius`` (pixels).

    Args:
        anchors: B x N x 2 anchor pixel positions (x, y) in this image.
        h, w: size of the descriptor map (cells).
        stride: pixels per cell.
        radius: half-side K of the window in pixels.
    Returns:
        B x N x (h * w) bool, True = may be used as a negative.
    """
    _check_anchors(anchors, 2, "anchors")
    # ||c - p||_inf > K  <=>  |dx| > K or |dy| > K: test the axes separately (B x N x w and
    # B x N x h) and broadcast, instead of forming B x N x HW x 2 differences.
    off = (stride - 1) / 2
    xs = torch.arange(w, device=anchors.device, dtype=anchors.dtype) * stride + off
    ys = torch.arange(h, device=anchors.device, dtype=anchors.dtype) * stride + off
    out_x = (xs - anchors[..., 0:1]).abs() > radius  # B x N x w
    out_y = (ys - anchors[..., 1:2]).abs() > radius  # B x N x h
    return (out_y[..., :, None] | out_x[..., None, :]).flatten(-2)  # B x N x HW


def valid_points_3d(xyz: torch.Tensor) -> torch.Tensor:
    """Whether 3D points (last or channel dim 3, z = depth) are usable: finite and z > 0."""
    return torch.isfinite(xyz).all(-1) & (xyz[..., 2] > 0)


def window_3d_mask(
    anchors: torch.Tensor,
    anchors_xyz: torch.Tensor,
    xyz_map: torch.Tensor,
    stride: int = 4,
    rel: float = 0.04,
    radius: float = 16.0,
) -> torch.Tensor:
    """Cells outside the 3D safe window ``||X(c) - X(p)||_2 > rel * z(p)``.

    Cells with unknown depth, and all cells of an anchor with unknown depth, use the square
    window of half-side ``radius`` pixels instead (see the module docstring).

    Args:
        anchors: B x N x 2 anchor pixel positions (x, y) in this image (for the fallback).
        anchors_xyz: B x N x 3 anchor 3D points in this camera's frame (z = depth).
        xyz_map: B x 3 x h x w 3D points of the cells in this camera's frame.
        stride: pixels per cell.
        rel: window radius relative to the anchor depth.
        radius: square-window half-side in pixels for the fallback.
    Returns:
        B x N x (h * w) bool, True = may be used as a negative.
    """
    _check_anchors(anchors, 2, "anchors")
    _check_anchors(anchors_xyz, 3, "anchors_xyz")
    if xyz_map.dim() != 4 or xyz_map.shape[1] != 3 or xyz_map.shape[0] != anchors.shape[0]:
        raise ValueError(f"Expected xyz_map of shape B x 3 x h x w, got {tuple(xyz_map.shape)}.")
    b, _, h, w = xyz_map.shape
    cells = xyz_map.flatten(2).transpose(1, 2)  # B x HW x 3
    cell_ok = valid_points_3d(cells)  # B x HW
    anchor_ok = valid_points_3d(anchors_xyz)  # B x N
    # Zero the unknown points so that cdist stays finite; they are overridden below.
    cells = torch.where(cell_ok[..., None], cells, torch.zeros_like(cells))
    axyz = torch.where(anchor_ok[..., None], anchors_xyz, torch.zeros_like(anchors_xyz))
    dist = torch.cdist(axyz.to(cells.dtype), cells)  # B x N x HW
    outside_3d = dist > rel * axyz[..., 2:3].to(dist.dtype)
    square = square_window_mask(anchors, h, w, stride, radius)
    known = anchor_ok[:, :, None] & cell_ok[:, None, :]
    return torch.where(known, outside_3d, square)


def negative_mask(
    anchors: torch.Tensor,
    h: int,
    w: int,
    stride: int = 4,
    window: str = "square",
    radius: float = 16.0,
    rel: float = 0.04,
    anchors_xyz: torch.Tensor = None,
    xyz_map: torch.Tensor = None,
) -> torch.Tensor:
    """Dispatch to the square or 3D window. Returns B x N x (h * w) bool (True = negative)."""
    if window == "square":
        return square_window_mask(anchors, h, w, stride, radius)
    if window == "3d":
        if anchors_xyz is None or xyz_map is None:
            raise ValueError(
                "The 3D safe window needs the anchors' 3D points and the dense 3D map "
                "(data['xyz_kpts0/1'] and data['xyz0/1']); use window='square' without depth."
            )
        if xyz_map.shape[-2:] != (h, w):
            raise ValueError(
                f"xyz map size {tuple(xyz_map.shape[-2:])} differs from the descriptor map "
                f"{(h, w)}: give the 3D points at the descriptor cells."
            )
        return window_3d_mask(anchors, anchors_xyz, xyz_map, stride, rel, radius)
    raise ValueError(f"Unknown safe window {window!r}: use 'square' or '3d'.")
