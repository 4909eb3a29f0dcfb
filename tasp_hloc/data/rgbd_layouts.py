"""The on-disk layouts of the RGB-D sequences (:mod:`.rgbd`): readers and frame lists.

Layouts (depth in millimetres in both; 0 = unknown):
- ICL-NUIM: ``<root>/image/NNNNN.jpg``, ``<root>/depth/NNNNN.png``, ``<root>/trajectory.log``
  (5-line blocks: ``i i i+1`` then a row-major 4x4 camera-to-world), and
  ``<root>/camera_primesense.json`` (``intrinsic_matrix`` is K flattened column-major).
- 7-Scenes: ``<root>/seq-0N/frame-XXXXXX.{color.png|color.jpg,depth.png,pose.txt}``, pose =
  camera-to-world 4x4, depth 0 and 65535 invalid. No intrinsics are stored; RGB uses
  f = 525, c = (320, 240) and depth f = 585, c = (320, 240).

7-Scenes' depth camera is NOT registered to the RGB camera (raw Kinect, different intrinsics,
a few cm of baseline) and its poses come from KinectFusion on depth, i.e. describe the depth
camera. We splat each depth map into the RGB camera (nearest pixel, z-buffer) using
``T_rgb_from_depth`` (default identity: only the intrinsics differ) and move the pose to the
RGB camera. With the default, the unknown baseline (~2.5 cm) leaves a parallax error of about
``525 * 0.025 / z`` px (~5-15 px at 1-3 m): 7-Scenes pairs are APPROXIMATE, fine for I/O and
pipeline tests, not for accurate training. Provide a calibrated ``T_rgb_from_depth`` to do better.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import List, Optional

import numpy as np

from .utils import read_depth_png

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# readers


def read_trajectory_log(path: Path) -> dict:
    """Open3D/Redwood ``.log``: {frame index: 4 x 4 camera-to-world}."""
    try:
        lines = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    except OSError as e:
        raise FileNotFoundError(f"Cannot read trajectory file {path}: {e}") from e
    if not lines or len(lines) % 5 != 0:
        raise ValueError(
            f"Malformed trajectory file {path}: expected blocks of 5 non-empty lines "
            f"('i i i+1' + 4 matrix rows), got {len(lines)} lines."
        )
    poses = {}
    for b in range(0, len(lines), 5):
        try:
            idx = int(lines[b].split()[0])
            T = np.array([[float(v) for v in ln.split()] for ln in lines[b + 1 : b + 5]])
        except (ValueError, IndexError) as e:
            raise ValueError(f"Malformed trajectory file {path}, block at line {b + 1}: {e}") from e
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError(
                f"Malformed trajectory file {path}, block at line {b + 1}: not a 4x4 matrix."
            )
        poses[idx] = T
    return poses


def read_open3d_intrinsics(path: Path) -> np.ndarray:
    """3 x 3 K from Open3D's PinholeCameraIntrinsic JSON (column-major ``intrinsic_matrix``)."""
    try:
        data = json.loads(Path(path).read_text())
        K = np.asarray(data["intrinsic_matrix"], dtype=np.float64).reshape(3, 3).T
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as e:
        raise ValueError(
            f"Cannot read intrinsics from {path}: {e}. Expected Open3D JSON with "
            "'intrinsic_matrix' = [fx, 0, 0, 0, fy, 0, cx, cy, 1]."
        ) from e
    return K


def read_pose_txt(path: Path) -> np.ndarray:
    """4 x 4 matrix from a whitespace-separated text file (7-Scenes ``frame-*.pose.txt``)."""
    try:
        rows = [ln.split() for ln in Path(path).read_text().splitlines() if ln.strip()]
        T = np.array([[float(v) for v in r] for r in rows], dtype=np.float64)
    except (OSError, ValueError) as e:
        raise ValueError(f"Malformed pose file {path}: {e}. Expected a 4x4 matrix.") from e
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(f"Malformed pose file {path}: expected a 4x4 matrix, got shape {T.shape}.")
    return T


def register_depth(
    depth: np.ndarray,
    K_depth: np.ndarray,
    K_rgb: np.ndarray,
    T_rgb_from_depth: np.ndarray,
    out_hw: tuple,
) -> np.ndarray:
    """Splat a depth map into another camera (nearest pixel, nearest surface wins)."""
    h, w = depth.shape
    ys, xs = np.nonzero(depth > 0)
    z = depth[ys, xs].astype(np.float64)
    rays = np.linalg.inv(K_depth) @ np.stack([xs, ys, np.ones_like(xs)]).astype(np.float64)
    X = T_rgb_from_depth[:3, :3] @ (rays * z) + T_rgb_from_depth[:3, 3:]
    front = X[2] > 1e-6
    uv = K_rgb @ (X[:, front] / X[2, front])
    u, v = np.floor(uv[0] + 0.5).astype(int), np.floor(uv[1] + 0.5).astype(int)
    ok = (u >= 0) & (u < out_hw[1]) & (v >= 0) & (v < out_hw[0])
    out = np.full(out_hw[0] * out_hw[1], np.inf)
    np.minimum.at(out, v[ok] * out_hw[1] + u[ok], X[2, front][ok])
    out[~np.isfinite(out)] = 0.0
    return out.reshape(out_hw).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# frame lists


def icl_frames(root: Path, depth_scale: float) -> List[dict]:
    for sub in ("image", "depth"):
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"ICL-NUIM sequence {root} has no '{sub}/' folder.")
    K = read_open3d_intrinsics(root / "camera_primesense.json")
    poses = read_trajectory_log(root / "trajectory.log")
    images = {int(p.stem): p for p in (root / "image").iterdir() if p.stem.isdigit()}
    depths = {int(p.stem): p for p in (root / "depth").iterdir() if p.stem.isdigit()}
    frames = []
    for i in sorted(images):
        if i not in depths or i not in poses:
            continue
        frames.append(
            {
                "image": images[i],
                "depth": depths[i],
                "K": K,
                "T_world_from_cam": poses[i],
                "group": str(root),
                "name": f"{root.name}/{images[i].name}",
                "depth_scale": depth_scale,
                "kind": "icl",
            }
        )
    if not frames:
        raise FileNotFoundError(
            f"ICL-NUIM sequence {root}: no frame has an image, a depth map and a pose "
            f"({len(images)} images, {len(depths)} depth maps, {len(poses)} poses in trajectory.log)."
        )
    return frames


def seven_scenes_frames(root: Path, conf: dict) -> List[dict]:
    sel = conf["sequences"]
    if isinstance(sel, str):  # a split file such as TrainSplit.txt ('sequence2' per line)
        split = root / sel
        if not split.is_file():
            raise FileNotFoundError(f"7-Scenes split file {split} does not exist.")
        nums = [int(m) for m in re.findall(r"sequence(\d+)", split.read_text())]
        if not nums:
            raise ValueError(f"7-Scenes split file {split} lists no 'sequenceN' lines.")
        seqs = [root / f"seq-{n:02d}" for n in nums]
    elif sel:
        seqs = [root / s for s in sel]
    else:
        seqs = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("seq-"))
    if not seqs:
        raise FileNotFoundError(f"7-Scenes scene {root} has no seq-NN folders.")
    c7 = conf["seven_scenes"]
    fx, fy, cx, cy = c7["K_rgb"]
    K_rgb = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64)
    fx, fy, cx, cy = c7["K_depth"]
    K_depth = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64)
    T_rd = (
        np.eye(4)
        if c7["T_rgb_from_depth"] is None
        else np.asarray(c7["T_rgb_from_depth"], np.float64)
    )
    frames = []
    for seq in seqs:
        if not seq.is_dir():
            raise FileNotFoundError(f"7-Scenes sequence folder {seq} does not exist.")
        for pose in sorted(seq.glob("frame-*.pose.txt")):
            stem = pose.name[: -len(".pose.txt")]
            color = next(
                (
                    seq / f"{stem}.color.{e}"
                    for e in ("png", "jpg")
                    if (seq / f"{stem}.color.{e}").is_file()
                ),
                None,
            )
            depth = seq / f"{stem}.depth.png"
            if color is None or not depth.is_file():
                continue
            T_w_depth = read_pose_txt(pose)
            frames.append(
                {
                    "image": color,
                    "depth": depth,
                    "K": K_rgb,
                    "K_depth": K_depth,
                    "T_rgb_from_depth": T_rd,
                    "T_world_from_cam": T_w_depth @ np.linalg.inv(T_rd),
                    "group": str(root),
                    "name": f"{root.name}/{seq.name}/{color.name}",
                    "depth_scale": conf["depth_scale"],
                    "kind": "7scenes",
                }
            )
    if not frames:
        raise FileNotFoundError(
            f"7-Scenes scene {root}: no frame-*.pose.txt with matching .color.(png|jpg) and "
            f".depth.png in {[s.name for s in seqs]}."
        )
    return frames


def detect_format(root: Path) -> str:
    if (root / "trajectory.log").is_file():
        return "icl_nuim"
    if any(p.is_dir() and p.name.startswith("seq-") for p in root.iterdir()):
        return "7scenes"
    raise ValueError(
        f"Cannot tell the RGB-D format of {root}: expected trajectory.log (ICL-NUIM) or seq-NN "
        "folders (7-Scenes). Set 'format' explicitly."
    )


def load_depth(frame: dict, out_hw: Optional[tuple] = None) -> np.ndarray:
    """Depth of a frame in the RGB camera, float32, 0 = unknown."""
    if frame["kind"] == "7scenes":
        raw = read_depth_png(frame["depth"], frame["depth_scale"], invalid=(0, 65535))
        if out_hw is None:
            out_hw = raw.shape
        return register_depth(raw, frame["K_depth"], frame["K"], frame["T_rgb_from_depth"], out_hw)
    return read_depth_png(frame["depth"], frame["depth_scale"], invalid=(0,))
