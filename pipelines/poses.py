"""Camera poses as the pipelines handle them: (qvec w,x,y,z ; tvec), cam_from_world."""

from __future__ import annotations

from typing import Tuple

import numpy as np

Pose = Tuple[np.ndarray, np.ndarray]  # (qvec w,x,y,z ; tvec), cam_from_world


def qvec_to_R(q) -> np.ndarray:
    w, x, y, z = np.asarray(q, float) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def R_to_qvec(R) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(np.asarray(R, float)).as_quat()
    q = np.array([w, x, y, z])
    return -q if q[0] < 0 else q


def pose_error(est: Pose, gt: Pose) -> Tuple[float, float]:
    """(camera-centre distance, rotation angle in degrees) between two cam_from_world poses."""
    Re, Rg = qvec_to_R(est[0]), qvec_to_R(gt[0])
    ce = -Re.T @ np.asarray(est[1], float)
    cg = -Rg.T @ np.asarray(gt[1], float)
    cos = np.clip((np.trace(Re.T @ Rg) - 1) / 2, -1.0, 1.0)
    return float(np.linalg.norm(ce - cg)), float(np.rad2deg(np.arccos(cos)))


def rigid_to_pose(rigid) -> Pose:
    """pycolmap.Rigid3d -> (qvec wxyz, tvec)."""
    xyzw = np.asarray(rigid.rotation.quat, float)
    return np.array([xyzw[3], *xyzw[:3]]), np.asarray(rigid.translation, float)
