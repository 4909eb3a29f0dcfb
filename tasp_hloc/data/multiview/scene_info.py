"""Covisibility of an SfM model as D2-Net's MegaDepth scene info (overlap and scale ratios).

D2-Net's ``preprocess_scene.py``: the overlap of (i, j) is the share of image i's 3D points that
image j also sees, and the scale ratio is, over the shared points, the smallest ratio of their
normalised depths (depth / focal) in the two images, so a pair with ratio 2 sees every common
point at least twice as large in one image as in the other.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np


def track_depths(reconstruction) -> tuple:
    """``(ids, {image index: {point3D id: depth / focal}})`` of the registered images, by name."""
    ids = sorted(
        (i for i, im in reconstruction.images.items() if im.has_pose),
        key=lambda i: reconstruction.images[i].name,
    )
    ndepth = []
    for i in ids:
        image = reconstruction.images[i]
        cam = reconstruction.cameras[image.camera_id]
        pose = image.cam_from_world()
        R, t = pose.rotation.matrix(), pose.translation
        focal = float(np.mean(cam.calibration_matrix()[[0, 1], [0, 1]]))
        d = {}
        for p in image.points2D:
            if p.has_point3D():
                z = float(R[2] @ reconstruction.points3D[p.point3D_id].xyz + t[2])
                if z > 0:
                    d[p.point3D_id] = z / focal
        ndepth.append(d)
    return ids, ndepth


def covisibility(ndepth: List[Dict[int, float]]) -> tuple:
    """``(overlap, scale_ratio)``: N x N matrices; scale ratio -1 where nothing is shared."""
    n = len(ndepth)
    overlap = np.zeros((n, n))
    scale = -np.ones((n, n))
    for a in range(n):
        for b in range(a + 1, n):
            common = ndepth[a].keys() & ndepth[b].keys()
            if not common:
                continue
            overlap[a, b] = len(common) / max(len(ndepth[a]), 1)
            overlap[b, a] = len(common) / max(len(ndepth[b]), 1)
            da = np.array([ndepth[a][k] for k in common])
            db = np.array([ndepth[b][k] for k in common])
            scale[a, b] = scale[b, a] = float(np.min(np.maximum(da / db, db / da)))
    return overlap, scale


def neighbours(overlap: np.ndarray, k: int = 5, min_overlap: float = 0.05) -> Dict[int, List[int]]:
    """The ``k`` most covisible images of each (indices), for the depth cross-check."""
    out = {}
    for a in range(len(overlap)):
        order = np.argsort(-overlap[a])
        out[a] = [int(b) for b in order[:k] if b != a and overlap[a, b] >= min_overlap]
    return out


def pairs_lines(
    names: List[str], overlap: np.ndarray, scale: np.ndarray, min_overlap: float
) -> str:
    """``name0 name1 overlap scale_ratio`` per pair with min(overlap both ways) >= min_overlap."""
    lines = ["# name0 name1 overlap scale_ratio (D2-Net's definitions; overlap = min of both ways)"]
    n = len(names)
    for a in range(n):
        for b in range(a + 1, n):
            o = min(overlap[a, b], overlap[b, a])
            if o >= min_overlap:
                lines.append(f"{names[a]} {names[b]} {o:.4f} {scale[a, b]:.4f}")
    return "\n".join(lines) + "\n"
