"""Small data the harness tests and the experiments' tests share: a blob texture, an exact
two-view scene and a data tree of the layout of the offline data folder."""

import cv2
import numpy as np


def rotation(axis, degrees):
    return cv2.Rodrigues(np.asarray(axis, float) / np.linalg.norm(axis) * np.radians(degrees))[0]


def two_view_scene(seed=0, n=200):
    """Points in front of two cameras; returns K0, K1, T_0to1, kpts0, kpts1 (exact)."""
    rng = np.random.default_rng(seed)
    K0 = np.array([[600.0, 0, 320], [0, 610, 240], [0, 0, 1]])
    K1 = np.array([[580.0, 0, 330], [0, 585, 235], [0, 0, 1]])
    T = np.eye(4)
    T[:3, :3] = rotation([0.2, 1.0, 0.1], 15)
    T[:3, 3] = [-0.6, 0.1, 0.15]
    X0 = rng.uniform([-2, -1.5, 4], [2, 1.5, 8], (n, 3))
    X1 = X0 @ T[:3, :3].T + T[:3, 3]
    k0 = (X0 @ K0.T)[:, :2] / X0[:, 2:]
    k1 = (X1 @ K1.T)[:, :2] / X1[:, 2:]
    return K0, K1, T, k0, k1


def texture(h=240, w=320, seed=0):
    """A random blob texture, RGB uint8, with plenty of corners and blobs."""
    rng = np.random.default_rng(seed)
    img = cv2.resize(
        rng.uniform(0, 255, (h // 8, w // 8, 3)).astype(np.uint8),
        (w, h),
        interpolation=cv2.INTER_CUBIC,
    )
    for _ in range(40):
        c = tuple(int(v) for v in rng.integers(0, 255, 3))
        cv2.circle(
            img, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(3, 15)), c, -1
        )
    return img


def fabricate_data(root):
    """A data tree of the same layout as /work/shared/data: photos + a pose pair file."""
    photos = root / "photos" / "held_out"
    photos.mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(photos / f"{i}.png"), texture(seed=i)[:, :, ::-1])
    pose_dir = root / "eval" / "pairs"
    (pose_dir / "images").mkdir(parents=True)
    K0, K1, T, _, _ = two_view_scene()
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(pose_dir / "images" / name), texture(seed=7)[:, :, ::-1])
    line = [
        "a.png",
        "b.png",
        "0",
        "0",
        *map(str, K0.ravel()),
        *map(str, K1.ravel()),
        *map(str, T.ravel()),
    ]
    (pose_dir / "x_with_gt.txt").write_text(" ".join(line) + "\n")
    return K0, T
