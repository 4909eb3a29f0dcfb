"""RGB-D sequences with camera poses: ICL-NUIM (Open3D/Redwood layout) and Microsoft 7-Scenes.

Pairs are chosen by measured overlap: for candidate frame pairs (i, j), the fraction of the
depth-valid points of frame i (a subsampled grid) that are inside frame j and depth-consistent
there; a pair's overlap is the smaller of the two directions, and pairs with overlap in
``[min_overlap, max_overlap]`` are kept. The overlap matrix is cached in ``cache_dir`` (meant
to sit next to the run's outputs; the dataset folder may be read-only).

The layouts and their readers: :mod:`.rgbd_layouts`.

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
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from ..io.files import atomic_write
from ..io.images import read_image
from ..options import with_defaults
from .geometry import inside_image, project, sample_depth, unproject
from .rgbd_layouts import detect_format, icl_frames, load_depth, seven_scenes_frames
from .utils import make_rng, resize_view
from .view_pair import ViewPairSampler

logger = logging.getLogger(__name__)


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
        self.conf = c = with_defaults(self.default_conf, conf, "RGBDDataset")
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
                self.frames += icl_frames(r, c["depth_scale"])
            elif fmt == "7scenes":
                if c["seven_scenes"]["T_rgb_from_depth"] is None:
                    logger.warning(
                        "7-Scenes %s: depth is not registered to RGB; using a zero-baseline "
                        "registration, correspondences are approximate (~5-15 px).",
                        r,
                    )
                self.frames += seven_scenes_frames(r, c)
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
