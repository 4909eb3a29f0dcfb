"""RGB-D sequences with camera poses: ICL-NUIM (Open3D/Redwood layout) and Microsoft 7-Scenes.

Pairs are chosen by measured overlap: for candidate frame pairs (i, j), the fraction of the
depth-valid points of frame i (a subsampled grid) that are inside frame j and depth-consistent
there; a pair's overlap is the smaller of the two directions, and pairs with overlap in
``[min_overlap, max_overlap]`` are kept. The overlap matrix is cached in ``cache_dir`` (meant
to sit next to the run's outputs; the dataset folder may be read-only).

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

Measured on the ICL-NUIM living room here (211 frames, poses from a reconstruction): every
frame pair overlaps by >= 0.41, so the overlap filter alone keeps 21689 of 22155 pairs, but the
photometric error of warped correspondences grows with the frame gap (mean abs. grey error
~3 at gaps <= 10, ~5 at 10-30, ~9 beyond 80) as the poses drift: use ``max_frame_gap: 30``
(5399 pairs, mean error ~4 grey levels) for that sequence.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from ..files import atomic_write
from ..geometry import inside_image, project, sample_depth, unproject
from ..image_io import read_image
from .utils import make_rng, merge_conf, read_depth_png, resize_view
from .view_pair import ViewPairSampler

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


def _icl_frames(root: Path, depth_scale: float) -> List[dict]:
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


def _seven_scenes_frames(root: Path, conf: dict) -> List[dict]:
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


# ---------------------------------------------------------------------------------------------
# overlap


def compute_overlap_matrix(
    frames: List[dict],
    step: int = 16,
    rel_tol: float = 0.05,
    downsample: int = 4,
    max_frame_gap: Optional[int] = None,
) -> np.ndarray:
    """N x N matrix: O[i, j] = share of depth-valid grid points of i visible and consistent in j.

    Frames of different ``group`` (different world frames) get -1. Targets use depth maps
    subsampled by ``downsample`` (nearest, with K adjusted) to bound memory.
    """
    n = len(frames)
    depths, Ks, src = [], [], []
    for f in frames:
        d = load_depth(f)
        h, w = d.shape
        ys, xs = np.mgrid[step // 2 : h : step, step // 2 : w : step]
        src.append((np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float32), d[ys, xs].ravel()))
        dummy = np.zeros((h, w, 1), np.uint8)
        _, ds, Kd = resize_view(dummy, d, f["K"], (w // downsample, h // downsample))
        depths.append(ds)
        Ks.append(Kd)
    if len({d.shape for d in depths}) != 1:
        raise ValueError("All frames of an RGB-D set must have the same size.")
    D = torch.from_numpy(np.stack(depths))
    K = torch.from_numpy(np.stack(Ks)).float()
    Tw = torch.from_numpy(np.stack([f["T_world_from_cam"] for f in frames])).double()
    groups = np.array([f["group"] for f in frames])
    O = np.full((n, n), -1.0, np.float32)
    for i in range(n):  # one batched warp per source frame (all targets at once)
        js = np.nonzero(groups == groups[i])[0]
        js = js[js != i]
        if max_frame_gap is not None:
            js = js[np.abs(js - i) <= max_frame_gap]
        if js.size == 0:
            continue
        kp, z = src[i]
        keep = z > 0
        if not keep.any():
            O[i, js] = 0.0
            continue
        # source points at full resolution -> subsampled-image coordinates
        kp = (torch.from_numpy(kp[keep]) + 0.5) / downsample - 0.5
        xyz0 = unproject(kp[None], torch.from_numpy(z[keep])[None], K[i][None])  # 1 x M x 3
        T = (torch.linalg.inv(Tw[js]) @ Tw[i]).float()  # b x 4 x 4, cam_j from cam_i
        xyz1 = xyz0 @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3]  # b x M x 3
        kp1 = project(xyz1, K[js])
        z1 = xyz1[..., 2]
        obs = sample_depth(D[js], kp1)
        vis = (
            (z1 > 0)
            & inside_image(kp1, D.shape[-2:])
            & (obs > 0)
            & ((obs - z1).abs() <= rel_tol * z1)
        )
        O[i, js] = vis.float().mean(-1).numpy()
    return O


# ---------------------------------------------------------------------------------------------


class RGBDDataset(Dataset):
    """Posed RGB-D pairs (ICL-NUIM or 7-Scenes layout) chosen by measured overlap.

    Args:
        conf: see ``default_conf``. ``roots``: sequence folders (ICL-NUIM) or scene folders
            (7-Scenes). ``cache_dir``: where to cache overlap matrices (None: recompute).
            ``pairs_per_epoch``: None = every kept pair each epoch, else a random subset drawn
            per epoch (:meth:`set_epoch`). Crop / resize / photometric keys go to
            :class:`ViewPairSampler`.
    """

    default_conf = {
        "roots": [],
        "format": "auto",  # "auto", "icl_nuim" or "7scenes"
        "sequences": None,  # 7-Scenes: list of seq folders, or a split file ("TrainSplit.txt")
        "depth_scale": 1000.0,  # stored value / scale = depth (mm -> m)
        "min_overlap": 0.3,
        "max_overlap": 0.95,
        "max_frame_gap": None,  # only pairs at most this many frames apart (None: all)
        "overlap_step": 16,  # grid step (px) of the overlap estimate
        "overlap_rel_tol": 0.05,
        "cache_dir": None,
        "pairs_per_epoch": None,
        "random_swap": True,  # randomly use (j, i) instead of (i, j)
        "seed": None,
        "seven_scenes": {
            "K_rgb": [525.0, 525.0, 320.0, 240.0],
            "K_depth": [585.0, 585.0, 320.0, 240.0],
            "T_rgb_from_depth": None,  # 4x4; None = identity (approximate, see module doc)
        },
        **{k: v for k, v in ViewPairSampler.default_conf.items()},
    }

    def __init__(self, conf: Optional[dict] = None):
        self.conf = c = merge_conf(self.default_conf, conf)
        roots = [c["roots"]] if isinstance(c["roots"], (str, os.PathLike)) else list(c["roots"])
        if not roots:
            raise ValueError("RGBDDataset: set 'roots' to one or more RGB-D sequence folders.")
        self.frames = []
        for r in roots:
            r = Path(r)
            if not r.is_dir():
                raise FileNotFoundError(f"RGB-D folder {r} does not exist; check 'roots'.")
            fmt = detect_format(r) if c["format"] == "auto" else c["format"]
            if fmt == "icl_nuim":
                self.frames += _icl_frames(r, c["depth_scale"])
            elif fmt == "7scenes":
                if c["seven_scenes"]["T_rgb_from_depth"] is None:
                    logger.warning(
                        "7-Scenes %s: depth is not registered to RGB; using a zero-baseline "
                        "registration, correspondences are approximate (~5-15 px).",
                        r,
                    )
                self.frames += _seven_scenes_frames(r, c)
            else:
                raise ValueError(f"Unknown RGB-D format {fmt!r}; use 'icl_nuim' or '7scenes'.")
        self.overlap = self._overlap_matrix()
        O = np.minimum(self.overlap, self.overlap.T)
        ii, jj = np.nonzero(np.triu((O >= c["min_overlap"]) & (O <= c["max_overlap"]), 1))
        self.all_pairs = np.stack([ii, jj], -1)
        self.pair_overlap = O[ii, jj]
        if len(self.all_pairs) == 0:
            raise ValueError(
                f"RGBDDataset: no frame pair of {roots} has overlap in "
                f"[{c['min_overlap']}, {c['max_overlap']}] (max found {O.max():.2f})."
            )
        self.sampler = ViewPairSampler({k: c[k] for k in ViewPairSampler.default_conf})
        self.set_epoch(0)

    def _overlap_matrix(self) -> np.ndarray:
        c = self.conf
        args = dict(
            step=c["overlap_step"], rel_tol=c["overlap_rel_tol"], max_frame_gap=c["max_frame_gap"]
        )
        if c["cache_dir"] is None:
            return compute_overlap_matrix(self.frames, **args)
        key = json.dumps(
            {
                "frames": [
                    (
                        str(Path(f["image"]).resolve()),
                        str(Path(f["depth"]).resolve()),
                        np.asarray(f["T_world_from_cam"]).round(9).tolist(),
                    )
                    for f in self.frames
                ],
                "sz": [os.stat(f["depth"]).st_size for f in self.frames],
                "scale": c["depth_scale"],
                "seven": c["seven_scenes"],
                **args,
            },
            sort_keys=True,
        )
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        path = Path(c["cache_dir"]) / f"rgbd_overlap_{digest}.npy"
        if path.is_file():
            O = np.load(path)
            if O.shape == (len(self.frames),) * 2:
                return O
        O = compute_overlap_matrix(self.frames, **args)
        # atomic: concurrent workers never read a partial file
        atomic_write(path, lambda f: np.save(f, O))
        return O

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's pairs (all pairs if ``pairs_per_epoch`` is None)."""
        self.epoch = int(epoch)
        n = self.conf["pairs_per_epoch"]
        if n is None or n >= len(self.all_pairs):
            self.pairs = self.all_pairs
        else:
            rng = make_rng(self.conf["seed"], self.epoch, 2**31 - 1)
            self.pairs = self.all_pairs[rng.choice(len(self.all_pairs), int(n), replace=False)]

    def __len__(self) -> int:
        return len(self.pairs)

    def _view(self, f: dict) -> dict:
        image = read_image(f["image"])
        depth = load_depth(f, image.shape[:2])
        if depth.shape != image.shape[:2]:
            raise ValueError(
                f"Depth {f['depth']} is {depth.shape}, image {f['image']} is {image.shape[:2]}."
            )
        return {
            "image": image,
            "depth": depth,
            "K": f["K"],
            "name": f["name"],
            "path": str(f["image"]),
        }

    def __getitem__(self, index: int) -> dict:
        rng = make_rng(self.conf["seed"], self.epoch, index)
        i, j = (int(v) for v in self.pairs[index])
        if self.conf["random_swap"] and rng.random() < 0.5:
            i, j = j, i
        f0, f1 = self.frames[i], self.frames[j]
        T_1from0 = np.linalg.inv(f1["T_world_from_cam"]) @ f0["T_world_from_cam"]
        return self.sampler(
            self._view(f0), self._view(f1), T_1from0, rng, name=f"{f0['name']}|{f1['name']}"
        )
