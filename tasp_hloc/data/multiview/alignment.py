"""Compare recovered cameras with known ones after a similarity alignment (Umeyama, 1991)."""

from __future__ import annotations

from typing import Dict

import numpy as np


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple:
    """``(s, R, t)`` minimising ``sum |dst - (s R src + t)|^2`` for N x 3 point sets."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    U, S, Vt = np.linalg.svd(xd.T @ xs / len(src))
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1
    R = U @ D @ Vt
    s = np.trace(np.diag(S) @ D) / xs.var(0).sum()
    return s, R, mu_d - s * R @ mu_s


def reconstruction_poses(reconstruction) -> Dict[str, np.ndarray]:
    """``{image name: cam_from_world 4 x 4}`` of a pycolmap reconstruction's registered images."""
    poses = {}
    for image in reconstruction.images.values():
        pose = np.eye(4)
        pose[:3] = image.cam_from_world().matrix()
        poses[image.name] = pose
    return poses


def camera_errors(estimated: Dict[str, np.ndarray], reference: Dict[str, np.ndarray]) -> dict:
    """Rotation (degrees) and centre errors of cameras present in both, after alignment.

    Args:
        estimated, reference: ``{name: cam_from_world 4 x 4}``.

    Returns:
        ``{"names", "rotation_deg", "centre", "centre_rel"}``: per camera; centre errors in the
        reference's units and relative to the reference cameras' spread (RMS distance to their
        mean).
    """
    names = sorted(estimated.keys() & reference.keys())
    if len(names) < 3:
        raise ValueError(f"Need at least 3 cameras in common to align, got {len(names)}.")

    def centre(T):
        return -T[:3, :3].T @ T[:3, 3]

    ce = np.array([centre(estimated[n]) for n in names])
    cr = np.array([centre(reference[n]) for n in names])
    s, R, t = umeyama(ce, cr)
    rot, cen = [], []
    for n, c0, c1 in zip(names, ce, cr):
        # world_ref = s R world_est + t, so R_ref_cam_from_world = R_est R^T
        R_aligned = estimated[n][:3, :3] @ R.T
        dR = R_aligned @ reference[n][:3, :3].T
        angle = np.degrees(np.arccos(np.clip((np.trace(dR) - 1) / 2, -1, 1)))
        rot.append(angle)
        cen.append(np.linalg.norm(s * R @ c0 + t - c1))
    spread = np.sqrt(((cr - cr.mean(0)) ** 2).sum(1).mean())
    cen = np.array(cen)
    return {
        "names": names,
        "rotation_deg": np.array(rot),
        "centre": cen,
        "centre_rel": cen / spread,
    }
