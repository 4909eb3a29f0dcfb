"""Correspondence geometry for training pairs: depth + pose warps, homography warps, 3D points.

Conventions (project-wide):
- pixel coordinates are x-y, the centre of the top-left pixel is (0, 0);
- camera frame x right, y down, z forward; ``T_a_from_b`` maps frame b to frame a;
- depth 0 (or non-finite) means unknown; depth units are arbitrary (scale-free checks only).

Everything is batched torch, without Python loops over points, and needs no gradient
(labels and correspondences, not a differentiable renderer).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from kornia.geometry.conversions import (
    convert_points_from_homogeneous,
    convert_points_to_homogeneous,
)
from kornia.geometry.linalg import transform_points

from ..grid import cell_centers

__all__ = [
    "unproject",
    "project",
    "sample_depth",
    "warp_depth_pose",
    "warp_homography",
    "warp_points",
    "dense_xyz",
    "grid_points",
    "cell_centers",
    "inside_image",
]


def _check_kpts(kpts: torch.Tensor, name: str = "kpts") -> None:
    if kpts.dim() != 3 or kpts.shape[-1] != 2:
        raise ValueError(f"{name} must be B x N x 2 (x, y), got shape {tuple(kpts.shape)}.")


def unproject(kpts: torch.Tensor, depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Back-project pixels with their depth into the camera frame.

    Args:
        kpts: B x N x 2 pixel coordinates (x, y).
        depth: B x N depth at ``kpts`` (0 = unknown).
        K: B x 3 x 3 intrinsics.

    Returns:
        B x N x 3 points ``depth * K^-1 [x, y, 1]``; the zero vector where depth is 0.
    """
    _check_kpts(kpts)
    rays = transform_points(torch.linalg.inv(K), kpts)  # B x N x 2, normalised image plane
    return convert_points_to_homogeneous(rays) * depth.unsqueeze(-1)


def project(xyz: torch.Tensor, K: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Project camera-frame points to pixels.

    Args:
        xyz: B x N x 3 points in the camera frame.
        K: B x 3 x 3 intrinsics.
        eps: z is clamped to at least ``eps`` so that the output stays finite; callers must
            check ``xyz[..., 2] > 0`` themselves (points behind the camera are not visible).

    Returns:
        B x N x 2 pixel coordinates (x, y).
    """
    z = xyz[..., 2:].clamp(min=eps)
    uv1 = torch.cat([xyz[..., :2] / z, torch.ones_like(z)], -1)
    return convert_points_from_homogeneous(uv1 @ K.transpose(-1, -2))


def inside_image(kpts: torch.Tensor, size: Tuple[int, int], border: float = 0.0) -> torch.Tensor:
    """B x N bool: finite and within ``[border, W - 1 - border] x [border, H - 1 - border]``.

    The range of pixel centres (not the pixel extent ``[-0.5, W - 0.5]``) is used so that a
    bilinear lookup at a kept point never reads outside the image.
    """
    h, w = size
    x, y = kpts[..., 0], kpts[..., 1]
    return (
        torch.isfinite(kpts).all(-1)
        & (x >= border)
        & (x <= w - 1 - border)
        & (y >= border)
        & (y <= h - 1 - border)
    )


def sample_depth(
    depth: torch.Tensor,
    kpts: torch.Tensor,
    mode: str = "bilinear",
    edge_tol: float = 0.05,
) -> torch.Tensor:
    """Look up depth at sub-pixel locations without mixing across depth edges.

    A plain bilinear mix across a depth discontinuity invents a point floating between the
    foreground and the background, which then passes or fails depth checks at random. So
    ``"bilinear"`` interpolates only where the 4 neighbours are all known and agree within a
    relative ``edge_tol`` (a smooth surface), and otherwise returns the nearest pixel's depth,
    which is always the depth of a real surface. ``"nearest"`` always uses the nearest pixel.

    Args:
        depth: B x H x W depth (0 or non-finite = unknown).
        kpts: B x N x 2 pixel coordinates (x, y), top-left pixel centre at (0, 0).
        mode: ``"bilinear"`` (edge-guarded, default) or ``"nearest"``.
        edge_tol: relative spread ``max / min - 1`` of the 4 neighbours above which a cell is
            treated as a depth edge.

    Returns:
        B x N depth, 0 where unknown or outside the image.
    """
    _check_kpts(kpts)
    if depth.dim() != 3:
        raise ValueError(f"depth must be B x H x W, got shape {tuple(depth.shape)}.")
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}.")
    b, h, w = depth.shape
    depth = torch.where(torch.isfinite(depth) & (depth > 0), depth, torch.zeros_like(depth))
    flat = depth.reshape(b, h * w)
    x, y = kpts[..., 0], kpts[..., 1]
    finite = torch.isfinite(kpts).all(-1)
    x = torch.where(finite, x, torch.full_like(x, -10.0))
    y = torch.where(finite, y, torch.full_like(y, -10.0))

    def gather(xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        ok = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
        idx = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long()
        return torch.where(ok, torch.gather(flat, 1, idx), torch.zeros_like(x))

    # Nearest pixel: the pixel whose extent [i - 0.5, i + 0.5) contains the point.
    nearest = gather(torch.floor(x + 0.5), torch.floor(y + 0.5))
    if mode == "nearest":
        return nearest

    x0, y0 = torch.floor(x), torch.floor(y)
    ax, ay = x - x0, y - y0
    d00, d01 = gather(x0, y0), gather(x0 + 1, y0)
    d10, d11 = gather(x0, y0 + 1), gather(x0 + 1, y0 + 1)
    corners = torch.stack([d00, d01, d10, d11], -1)
    dmin, dmax = corners.min(-1).values, corners.max(-1).values
    smooth = (dmin > 0) & (dmax <= dmin * (1 + edge_tol))
    bil = (d00 * (1 - ax) + d01 * ax) * (1 - ay) + (d10 * (1 - ax) + d11 * ax) * ay
    return torch.where(smooth, bil, nearest)


def warp_depth_pose(
    kpts0: torch.Tensor,
    depth0: torch.Tensor,
    depth1: torch.Tensor,
    K0: torch.Tensor,
    K1: torch.Tensor,
    T_1from0: torch.Tensor,
    rel_tol: float = 0.05,
    depth_mode: str = "bilinear",
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Warp pixels of image 0 into image 1 with depth and relative pose, with occlusion check.

    A point is valid when its depth in image 0 is known, it lies in front of camera 1, it
    projects inside image 1 (pixel-centre range), and image 1's depth there agrees with the
    predicted depth within ``rel_tol`` (relative, so independent of the scene's scale).
    The last test rejects points hidden behind a foreground object in view 1.

    Args:
        kpts0: B x N x 2 pixels of image 0.
        depth0: B x H0 x W0 depth of image 0 (0 = unknown).
        depth1: B x H1 x W1 depth of image 1 (0 = unknown).
        K0: B x 3 x 3 intrinsics of image 0.
        K1: B x 3 x 3 intrinsics of image 1.
        T_1from0: B x 4 x 4 pose of camera 0 in camera 1 (cam1_from_cam0).
        rel_tol: relative depth tolerance of the consistency check.
        depth_mode: lookup mode of :func:`sample_depth`.

    Returns:
        - kpts1: B x N x 2 projections in image 1 (defined for every point with known depth,
          whether valid or not; meaningless where depth0 is unknown).
        - valid: B x N bool.
        - xyz0: B x N x 3 points in camera 0 (zero where depth0 is unknown).
        - xyz1: B x N x 3 the same points in camera 1 (``T_1from0 * xyz0``).
    """
    _check_kpts(kpts0, "kpts0")
    z0 = sample_depth(depth0, kpts0, depth_mode)
    xyz0 = unproject(kpts0, z0, K0)
    xyz1 = transform_points(T_1from0, xyz0)
    kpts1 = project(xyz1, K1)
    z1_pred = xyz1[..., 2]
    z1_obs = sample_depth(depth1, kpts1, depth_mode)
    valid = (
        (z0 > 0)
        & (z1_pred > 0)
        & inside_image(kpts1, depth1.shape[-2:])
        & (z1_obs > 0)
        & ((z1_obs - z1_pred).abs() <= rel_tol * z1_pred)
    )
    return kpts1, valid, xyz0, xyz1


def warp_homography(
    kpts0: torch.Tensor, H_1from0: torch.Tensor, size1: Tuple[int, int]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Warp pixels of image 0 into image 1 with a homography.

    Args:
        kpts0: B x N x 2 pixels of image 0.
        H_1from0: B x 3 x 3 homography mapping image-0 pixels to image-1 pixels.
        size1: (H1, W1) of image 1.

    Returns:
        kpts1: B x N x 2; valid: B x N bool (finite, in front: w > 0, inside image 1).
    """
    _check_kpts(kpts0, "kpts0")
    xyw = convert_points_to_homogeneous(kpts0) @ H_1from0.transpose(-1, -2)
    w = xyw[..., 2]
    # A point mapped through the line at infinity (w <= 0) is not seen in image 1.
    kpts1 = xyw[..., :2] / torch.where(w.abs() > 1e-12, w, torch.full_like(w, 1e-12)).unsqueeze(-1)
    valid = (w > 0) & inside_image(kpts1, size1)
    return kpts1, valid


def warp_points(
    kpts0: torch.Tensor, data: dict, rel_tol: float = 0.05
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Warp pixels of image 0 into image 1 for a collated batch of mixed pair kinds.

    Per batch element, homographic pairs (``data["is_homography"]``) use ``H_1from0`` and
    pose pairs use depth + pose. 3D points of homographic pairs come from their plane depth
    (constant 1 with a nominal K): ``xyz_kpts0`` in camera 0 at kpts0 and ``xyz_kpts1`` in
    camera 1 at kpts1, each frame being the plane of its own image (the only 3D distances that
    matter are within one image). For pose pairs ``xyz_kpts1 = T_1from0 * xyz_kpts0``.

    Args:
        kpts0: B x N x 2 pixels of image 0.
        data: batch with ``depth0``, ``depth1`` (B x H x W), ``K0``, ``K1`` (B x 3 x 3),
            ``T_1from0`` (B x 4 x 4), ``H_1from0`` (B x 3 x 3), ``is_homography`` (B,).
        rel_tol: relative depth tolerance of the occlusion check.

    Returns:
        kpts1 (B x N x 2), valid (B x N), xyz_kpts0 (B x N x 3, cam 0), xyz_kpts1 (B x N x 3, cam 1).
    """
    for key in ("depth0", "depth1", "K0", "K1", "T_1from0", "H_1from0", "is_homography"):
        if key not in data:
            raise KeyError(f"warp_points: the batch has no '{key}'; build it with tasp_hloc.data.")
    is_h = data["is_homography"].reshape(-1).bool().to(kpts0.device)
    size1 = tuple(data["depth1"].shape[-2:])
    kp_p, v_p, xyz0_p, xyz1_p = warp_depth_pose(
        kpts0, data["depth0"], data["depth1"], data["K0"], data["K1"], data["T_1from0"], rel_tol
    )
    if not bool(is_h.any()):
        return kp_p, v_p, xyz0_p, xyz1_p
    kp_h, v_h = warp_homography(kpts0, data["H_1from0"], size1)
    xyz0_h = unproject(kpts0, sample_depth(data["depth0"], kpts0, "nearest"), data["K0"])
    # The plane depth of image 1 is constant; use it at the (clamped) target location so
    # that xyz stays defined even for points that fall outside image 1.
    kp_h_safe = torch.nan_to_num(kp_h)
    kp_h_safe = torch.stack(
        [kp_h_safe[..., 0].clamp(0, size1[1] - 1), kp_h_safe[..., 1].clamp(0, size1[0] - 1)], -1
    )
    xyz1_h = unproject(
        torch.nan_to_num(kp_h), sample_depth(data["depth1"], kp_h_safe, "nearest"), data["K1"]
    )
    m = is_h.view(-1, 1)
    return (
        torch.where(m.unsqueeze(-1), kp_h, kp_p),
        torch.where(m, v_h, v_p),
        torch.where(m.unsqueeze(-1), xyz0_h, xyz0_p),
        torch.where(m.unsqueeze(-1), xyz1_h, xyz1_p),
    )


def dense_xyz(depth: torch.Tensor, K: torch.Tensor, stride: int = 4) -> torch.Tensor:
    """3D points (camera frame) at the centres of stride-s cells.

    Args:
        depth: B x H x W depth (0 = unknown).
        K: B x 3 x 3 intrinsics of the full-resolution image.
        stride: cell size s.

    Returns:
        B x 3 x H/s x W/s points; the zero vector where the depth is unknown (test with
        ``xyz[:, 2] > 0``).
    """
    b, h, w = depth.shape
    hc, wc = h // stride, w // stride
    c = cell_centers(hc, wc, stride, depth.device, depth.dtype).unsqueeze(0).expand(b, -1, -1)
    xyz = unproject(c, sample_depth(depth, c, "bilinear"), K)  # B x N x 3
    return xyz.transpose(1, 2).reshape(b, 3, hc, wc)


def grid_points(
    h: int,
    w: int,
    spacing: int = 4,
    max_points: int = 256,
    generator: Optional[torch.Generator] = None,
    batch_size: Optional[int] = None,
) -> torch.Tensor:
    """Random anchors on the ``spacing`` grid (paper §IV-A: 4x4 spacing, at most 256).

    The grid nodes are the centres of the stride-``spacing`` cells (see :func:`cell_centers`),
    so with spacing = descriptor stride each anchor sits on a descriptor cell centre.

    Args:
        h, w: image size.
        spacing: grid spacing in pixels.
        max_points: the number of anchors drawn without replacement (fewer if the grid is smaller).
        generator: torch generator for reproducible draws.
        batch_size: if given, draw independently per batch element.

    Returns:
        N x 2 (or B x N x 2 when ``batch_size`` is given) float32 pixel coordinates.
    """
    nodes = cell_centers(h // spacing, w // spacing, spacing)
    n = min(max_points, nodes.shape[0])
    if batch_size is None:
        return nodes[torch.randperm(nodes.shape[0], generator=generator)[:n]]
    idx = torch.stack(
        [torch.randperm(nodes.shape[0], generator=generator)[:n] for _ in range(batch_size)]
    )
    return nodes[idx]
