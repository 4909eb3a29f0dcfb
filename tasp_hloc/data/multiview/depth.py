"""Per-image depth from an SfM model: the tracks' sparse depth, densified where views agree.

MegaDepth densified with multi-view stereo and then filtered; on a CPU without PatchMatch we
interpolate the tracks instead. Per image, the projections of its 3D points are triangulated
(Delaunay) and inverse depth is interpolated linearly inside each triangle (exact for a plane
seen by a pinhole camera). Triangles that are long or span a depth jump are left empty (they
bridge occlusion boundaries). A pixel keeps its depth only when warping it into a covisible view
lands on that view's depth within ``rel_tol`` (the check the training loader applies too).
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import torch

from ..geometry import warp_depth_pose


def sparse_depth(reconstruction, image) -> tuple:
    """``(xy, z)``: pixels (our convention, top-left centre at 0) and depths of an image's tracks."""
    xy, xyz = [], []
    for p in image.points2D:
        if p.has_point3D():
            xy.append(p.xy)
            xyz.append(reconstruction.points3D[p.point3D_id].xyz)
    if not xy:
        return np.zeros((0, 2)), np.zeros(0)
    cam = image.cam_from_world()
    z = (np.asarray(xyz) @ cam.rotation.matrix().T + cam.translation)[:, 2]
    keep = z > 0
    return np.asarray(xy)[keep] - 0.5, z[keep]  # COLMAP puts the first pixel centre at 0.5


def interpolate_depth(
    xy: np.ndarray,
    z: np.ndarray,
    size: tuple,
    max_edge: float = 48.0,
    max_depth_ratio: float = 1.15,
) -> np.ndarray:
    """Dense H x W depth (0 = unknown) by linear interpolation of inverse depth in triangles.

    Args:
        xy: N x 2 pixels, z: N depths (> 0), size: (H, W).
        max_edge: triangles with a longer side (pixels) stay empty.
        max_depth_ratio: triangles whose corner depths differ by more stay empty.
    """
    from scipy.spatial import Delaunay, QhullError

    h, w = size
    depth = np.zeros((h, w), np.float32)
    if len(xy) < 3:
        return depth
    try:
        tri = Delaunay(xy)
    except QhullError:  # all points on a line
        return depth
    corners = xy[tri.simplices]  # T x 3 x 2
    edges = np.linalg.norm(corners - np.roll(corners, 1, axis=1), axis=-1).max(1)
    zs = z[tri.simplices]
    good = (edges <= max_edge) & (zs.max(1) <= max_depth_ratio * zs.min(1))
    ys, xs = np.mgrid[0:h, 0:w]
    grid = np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float64)
    simplex = tri.find_simplex(grid)
    inside = simplex >= 0
    inside[inside] = good[simplex[inside]]
    idx = np.nonzero(inside)[0]
    s = simplex[idx]
    T = tri.transform[s]  # barycentric coordinates, as scipy's LinearNDInterpolator
    b = np.einsum("nij,nj->ni", T[:, :2], grid[idx] - T[:, 2])
    bary = np.concatenate([b, 1 - b.sum(1, keepdims=True)], 1)
    inv = (bary * (1.0 / zs[s])).sum(1)
    depth.ravel()[idx] = (1.0 / inv).astype(np.float32)
    return depth


def filter_by_neighbours(
    depths: Dict[int, np.ndarray],
    K: Dict[int, np.ndarray],
    cam_from_world: Dict[int, np.ndarray],
    neighbours: Dict[int, List[int]],
    rel_tol: float = 0.03,
    stride: int = 1,
) -> Dict[int, np.ndarray]:
    """Keep a pixel's depth only where at least one neighbour view confirms it."""
    out = {}
    for i, d in depths.items():
        keep = np.zeros(d.shape, bool)
        ys, xs = np.nonzero(d > 0)
        if stride > 1:
            sel = (ys % stride == 0) & (xs % stride == 0)
            ys, xs = ys[sel], xs[sel]
        if len(xs):
            kp = torch.from_numpy(np.stack([xs, ys], -1).astype(np.float64))[None]
            for j in neighbours.get(i, []):
                T = cam_from_world[j] @ np.linalg.inv(cam_from_world[i])
                _, valid, _, _ = warp_depth_pose(
                    kp,
                    torch.from_numpy(d).double()[None],
                    torch.from_numpy(depths[j]).double()[None],
                    torch.from_numpy(K[i])[None],
                    torch.from_numpy(K[j])[None],
                    torch.from_numpy(T)[None],
                    rel_tol,
                    depth_mode="nearest",
                )
                v = valid[0].numpy()
                keep[ys[v], xs[v]] = True
        out[i] = np.where(keep, d, 0).astype(np.float32)
    return out


def camera_matrices(reconstruction, image) -> tuple:
    """``(K, cam_from_world 4x4)`` of a pinhole image, K in our pixel convention."""
    cam = reconstruction.cameras[image.camera_id]
    K = np.asarray(cam.calibration_matrix(), np.float64).copy()
    K[0, 2] -= 0.5
    K[1, 2] -= 0.5
    T = np.eye(4)
    pose = image.cam_from_world()
    T[:3, :3] = pose.rotation.matrix()
    T[:3, 3] = pose.translation
    return K, T


def dense_depths(
    reconstruction,
    neighbours: Dict[int, List[int]],
    rel_tol: float = 0.03,
    conf: Optional[dict] = None,
) -> Dict[int, np.ndarray]:
    """Densified, cross-checked depth of every registered image of an undistorted model."""
    conf = conf or {}
    depths, K, T = {}, {}, {}
    for image_id, image in reconstruction.images.items():
        if not image.has_pose:
            continue
        cam = reconstruction.cameras[image.camera_id]
        xy, z = sparse_depth(reconstruction, image)
        depths[image_id] = interpolate_depth(xy, z, (cam.height, cam.width), **conf)
        K[image_id], T[image_id] = camera_matrices(reconstruction, image)
    return filter_by_neighbours(depths, K, T, neighbours, rel_tol)
