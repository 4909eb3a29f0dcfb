"""Matching and metrics shared by every method in the benchmarks.

Conventions: pixel coordinates are x-y with the top-left pixel centre at (0, 0); a homography H
maps pixel coordinates of image 0 to image 1; a relative pose (R, t) maps camera-0 coordinates to
camera-1 coordinates, X1 = R X0 + t; angles are in degrees.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

# The matcher and MMA are the pipelines' (pipelines/match_metrics.py), shared with hpatches.py.
from pipelines.match_metrics import (  # noqa: F401
    MMA_THRESHOLDS,
    homography_match_errors,
    mean_matching_accuracy,
    mutual_nn_match,
)
from tasp_hloc.data.utils import pixel_scale_matrix, scale_intrinsics  # noqa: F401 (datasets')

AUC_THRESHOLDS = (5, 10, 20)


# ----------------------------------------------------------------------------- homographies
def scale_homography(
    H: np.ndarray, scale0: Tuple[float, float], scale1: Tuple[float, float]
) -> np.ndarray:
    """H between original images -> H between images resized by (sx, sy) (pixel-centre aware)."""
    return pixel_scale_matrix(*scale1) @ H @ np.linalg.inv(pixel_scale_matrix(*scale0))


# ----------------------------------------------------------------------------- relative pose
def angle_between_rotations(R0: np.ndarray, R1: np.ndarray) -> float:
    """Angle (degrees) of R0^T R1."""
    cos = (np.trace(R0.T @ R1) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def angle_between_vectors(v0: np.ndarray, v1: np.ndarray) -> float:
    """Angle (degrees) between two 3-vectors."""
    n = np.linalg.norm(v0) * np.linalg.norm(v1)
    if n == 0:
        return 180.0
    return float(np.degrees(np.arccos(np.clip(np.dot(v0, v1) / n, -1.0, 1.0))))


def relative_pose_error(T_0to1: np.ndarray, R: np.ndarray, t: np.ndarray) -> Tuple[float, float]:
    """(rotation error, translation-direction error) in degrees of an estimate vs 4 x 4 T_0to1.

    The essential matrix fixes t only up to sign, so the translation error is min(e, 180 - e),
    as in SuperGlue's evaluation.
    """
    err_R = angle_between_rotations(T_0to1[:3, :3], R)
    err_t = angle_between_vectors(T_0to1[:3, 3], np.asarray(t).reshape(3))
    return err_R, min(err_t, 180.0 - err_t)


def estimate_relative_pose(
    kpts0: np.ndarray,
    kpts1: np.ndarray,
    K0: np.ndarray,
    K1: np.ndarray,
    threshold_px: float = 1.0,
    confidence: float = 0.99999,
) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Essential matrix by OpenCV RANSAC on normalised points, then the cheirality check.

    kpts0, kpts1: M x 2 matched pixels. The inlier threshold is ``threshold_px`` divided by the
    mean focal length (SuperGlue's recipe). Among the candidate E's OpenCV may return, keep the one
    whose decomposition has the most points in front of both cameras. The pose is that of the
    best minimal sample (no refit on the inliers), so it moves with small changes of the matches.
    OpenCV's RANSAC seeds its own generator: the same matches give the same pose.
    Returns (R 3 x 3, t 3, inlier mask M bool) or None when fewer than 5 matches or no model
    (OpenCV's error on degenerate samples included).
    """
    if len(kpts0) < 5:
        return None
    n0 = _normalise(kpts0, K0)
    n1 = _normalise(kpts1, K1)
    f_mean = np.mean([K0[0, 0], K0[1, 1], K1[0, 0], K1[1, 1]])
    try:
        E, mask = cv2.findEssentialMat(
            n0, n1, np.eye(3), method=cv2.RANSAC, prob=confidence, threshold=threshold_px / f_mean
        )
    except cv2.error:  # degenerate samples of a few matches (e.g. after a ratio test)
        return None
    if E is None:
        return None
    best = None
    for k in range(len(E) // 3):
        n_good, R, t, pose_mask = cv2.recoverPose(
            E[3 * k : 3 * k + 3], n0, n1, np.eye(3), mask=mask.copy()
        )
        if best is None or n_good > best[0]:
            best = (n_good, R, t.reshape(3), pose_mask.ravel() > 0)
    return best[1], best[2], best[3]


def estimate_relative_pose_lo(
    kpts0: np.ndarray,
    kpts1: np.ndarray,
    K0: np.ndarray,
    K1: np.ndarray,
    threshold_px: float = 1.0,
    seed: int = 0,
) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Essential matrix by COLMAP's LO-RANSAC (pycolmap): local optimisation on the inliers and
    a final refit, then the cheirality check; what hloc and COLMAP use.

    Same inputs, threshold (pixels, at the mean focal length) and outputs as
    :func:`estimate_relative_pose`; ``seed`` fixes the sampling. Raises ImportError without pycolmap.
    """
    import pycolmap

    if len(kpts0) < 5:
        return None
    cameras = [
        pycolmap.Camera(
            model="PINHOLE",
            width=max(1, int(round(2 * K[0, 2]))),  # only the intrinsics matter here
            height=max(1, int(round(2 * K[1, 2]))),
            params=[K[0, 0], K[1, 1], K[0, 2], K[1, 2]],
        )
        for K in (K0, K1)
    ]
    options = pycolmap.RANSACOptions(max_error=threshold_px, random_seed=seed)
    result = pycolmap.estimate_essential_matrix(
        np.asarray(kpts0, np.float64), np.asarray(kpts1, np.float64), *cameras, options
    )
    if result is None:
        return None
    pose = result["cam2_from_cam1"]
    return (
        pose.rotation.matrix(),
        np.asarray(pose.translation).reshape(3),
        np.asarray(result["inlier_mask"]).ravel() > 0,
    )


def _normalise(pts: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixels M x 2 -> normalised image coordinates M x 2 (K^-1 [u v 1])."""
    return (pts - K[[0, 1], [2, 2]][None]) / K[[0, 1], [0, 1]][None]


def symmetric_epipolar_distance(
    kpts0: np.ndarray, kpts1: np.ndarray, K0: np.ndarray, K1: np.ndarray, T_0to1: np.ndarray
) -> np.ndarray:
    """Symmetric squared epipolar distance in normalised coordinates (SuperGlue's), M.

    A match is called correct below 5e-4.
    """
    n0 = np.concatenate([_normalise(kpts0, K0), np.ones((len(kpts0), 1))], axis=1)
    n1 = np.concatenate([_normalise(kpts1, K1), np.ones((len(kpts1), 1))], axis=1)
    t = T_0to1[:3, 3]
    t_x = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    E = t_x @ T_0to1[:3, :3]
    Ep0 = n0 @ E.T  # M x 3, epipolar lines in image 1
    p1tE = n1 @ E  # M x 3, epipolar lines in image 0
    d = np.sum(n1 * Ep0, axis=1) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return d * (
            1.0 / (Ep0[:, 0] ** 2 + Ep0[:, 1] ** 2) + 1.0 / (p1tE[:, 0] ** 2 + p1tE[:, 1] ** 2)
        )


def pose_auc(
    errors: Sequence[float], thresholds: Sequence[float] = AUC_THRESHOLDS
) -> Dict[float, float]:
    """Area under the recall-vs-error curve up to each threshold, divided by the threshold.

    As in SuperGlue's evaluation: the sorted errors give the points (e_i, i / n), prepended with
    (0, 0), integrated with the trapezoid rule up to t (the curve stays flat after the last error
    below t). A failed pair has error inf and only lowers the recall.
    """
    errors = np.sort(np.asarray(errors, dtype=np.float64))
    if len(errors) == 0:
        return {t: 0.0 for t in thresholds}
    recall = np.arange(1, len(errors) + 1) / len(errors)
    errors = np.concatenate([[0.0], errors])
    recall = np.concatenate([[0.0], recall])
    aucs = {}
    for t in thresholds:
        last = np.searchsorted(errors, t)  # points with error < t (incl. the origin)
        e = np.concatenate([errors[:last], [t]])
        r = np.concatenate([recall[:last], [recall[last - 1]]])
        aucs[t] = float(np.sum((e[1:] - e[:-1]) * (r[1:] + r[:-1]) / 2) / t)
    return aucs
