"""MegaDepth pairs with the D2-Net preprocessing (the pairs of the paper, §IV-A).

Layout under ``root`` (D2-Net's ``undistort_reconstructions.py`` + ``preprocess_scene.py``):

- ``scene_info/<scene>.0.npz`` (or ``<scene>.npz``): ``image_paths``, ``depth_paths`` (relative
  to ``root``, None for unusable images), ``intrinsics`` (3 x 3 per image), ``poses`` (4 x 4 or
  flattened 16, world-to-camera), ``overlap_matrix``, ``scale_ratio_matrix`` (-1 = undefined),
  plus keys we do not need (``points3D_id_to_2D``, ``n_points3D``, ``angles``, ...);
- ``Undistorted_SfM/<scene>/images/*.jpg``;
- ``phoenix/S6/zl548/MegaDepth_v1/<scene>/dense0/depths/*.h5`` (dataset ``depth``, 0 = unknown);
- ``train_scenes.txt`` / ``valid_scenes.txt``: one scene per line (D2-Net's lists).

Each epoch draws at most ``pairs_per_scene`` pairs per scene (the paper: 100, to balance
scenes) among those with overlap in ``[min_overlap, max_overlap]`` and scale ratio within
``[1 / max_scale_ratio, max_scale_ratio]``; the validation split uses a fixed draw.

Intrinsics refer to the depth map's resolution (D2-Net resizes the image to the depth map);
we do the same and scale K if an image differs. COLMAP puts pixel centres at +0.5, so with
``colmap_pixel_centers`` the principal point is shifted by -0.5 to our convention.
Crops: D2-Net centres 256 crops on a random shared 3D point at full resolution; we centre them
on a random depth-consistent correspondence (same idea, no need for the SfM tracks).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import h5py
import numpy as np
from torch.utils.data import Dataset

from ..io.images import read_image
from ..options import with_defaults
from .utils import make_rng, pixel_scale_matrix, resize_view
from .view_pair import ViewPairSampler

logger = logging.getLogger(__name__)


def read_scene_list(path: Path) -> list:
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"MegaDepth scene list {path} does not exist; copy D2-Net's train_scenes.txt / "
            "valid_scenes.txt there or set 'scene_list'."
        )
    scenes = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    if not scenes:
        raise ValueError(f"MegaDepth scene list {path} is empty.")
    return scenes


def read_depth_h5(path: Path) -> np.ndarray:
    try:
        with h5py.File(path, "r") as f:
            depth = np.asarray(f["depth"], dtype=np.float32)
    except (OSError, KeyError) as e:
        raise IOError(
            f"Cannot read MegaDepth depth {path} (an .h5 with dataset 'depth'): {e}"
        ) from e
    if depth.ndim != 2:
        raise ValueError(f"MegaDepth depth {path} has shape {depth.shape}; expected H x W.")
    depth[~np.isfinite(depth) | (depth < 0)] = 0.0
    return depth


class MegaDepthDataset(Dataset):
    """MegaDepth pair samples, re-drawn per epoch (:meth:`set_epoch`).

    Args:
        conf: see ``default_conf``. ``scene_list``: None = ``<root>/train_scenes.txt`` or
            ``valid_scenes.txt`` by ``split``; else a file path or a list of scene names.
            Crop / resize / photometric keys go to :class:`ViewPairSampler`.
    """

    default_conf = {
        "root": None,
        "scene_info_dir": None,  # default <root>/scene_info
        "split": "train",  # "train" or "val" (val: the same pairs every epoch)
        "scene_list": None,
        "min_overlap": 0.5,
        "max_overlap": 1.0,
        "max_scale_ratio": float("inf"),
        "pairs_per_scene": 100,
        "seed": 0,
        "val_seed": 42,
        "colmap_pixel_centers": True,
        **{k: v for k, v in ViewPairSampler.default_conf.items()},
    }

    def __init__(self, conf: Optional[dict] = None):
        self.conf = c = with_defaults(self.default_conf, conf, "MegaDepthDataset")
        if c["root"] is None:
            raise ValueError("MegaDepthDataset: set 'root' to the MegaDepth folder.")
        self.root = Path(c["root"])
        if not self.root.is_dir():
            raise FileNotFoundError(f"MegaDepth root {self.root} does not exist; check 'root'.")
        if c["split"] not in ("train", "val"):
            raise ValueError(
                f"MegaDepthDataset: split must be 'train' or 'val', got {c['split']!r}."
            )
        info_dir = Path(c["scene_info_dir"]) if c["scene_info_dir"] else self.root / "scene_info"
        if not info_dir.is_dir():
            raise FileNotFoundError(
                f"MegaDepth scene_info folder {info_dir} does not exist; run D2-Net's "
                "preprocess_scene.py or set 'scene_info_dir'."
            )
        sl = c["scene_list"]
        if sl is None:
            sl = self.root / ("train_scenes.txt" if c["split"] == "train" else "valid_scenes.txt")
        scenes = read_scene_list(Path(sl)) if isinstance(sl, (str, Path)) else list(sl)

        self.scenes = []
        missing = []
        for scene in scenes:
            path = next(
                (
                    p
                    for p in (info_dir / f"{scene}.0.npz", info_dir / f"{scene}.npz")
                    if p.is_file()
                ),
                None,
            )
            if path is None:
                missing.append(scene)  # D2-Net skips scenes without scene info, so do we
                continue
            info = self._load_scene(scene, path)
            if info is not None:
                self.scenes.append(info)
        if missing:
            logger.warning(
                "MegaDepth: %d scene(s) without scene_info in %s, e.g. %s.",
                len(missing),
                info_dir,
                missing[:3],
            )
        if not self.scenes:
            raise ValueError(
                f"MegaDepth: no scene of the list has scene info with valid pairs in {info_dir} "
                f"({len(scenes)} listed, {len(missing)} without .npz)."
            )
        self.sampler = ViewPairSampler({k: c[k] for k in ViewPairSampler.default_conf})
        self.set_epoch(0)

    def _load_scene(self, scene: str, path: Path) -> Optional[dict]:
        c = self.conf
        try:
            info = np.load(path, allow_pickle=True)
            O = np.asarray(info["overlap_matrix"], np.float64)
            S = np.asarray(info["scale_ratio_matrix"], np.float64)
            image_paths, depth_paths = info["image_paths"], info["depth_paths"]
            intrinsics, poses = info["intrinsics"], info["poses"]
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(
                f"Malformed MegaDepth scene info {path}: {e}. Expected D2-Net's preprocess_scene.py "
                "output (image_paths, depth_paths, intrinsics, poses, overlap_matrix, scale_ratio_matrix)."
            ) from e
        n = len(image_paths)
        if O.shape != (n, n) or S.shape != (n, n) or len(depth_paths) != n:
            raise ValueError(
                f"Malformed MegaDepth scene info {path}: sizes of the arrays disagree "
                f"({n} images, overlap {O.shape})."
            )
        usable = np.array(
            [
                image_paths[i] is not None
                and depth_paths[i] is not None
                and intrinsics[i] is not None
                and poses[i] is not None
                for i in range(n)
            ]
        )
        r = c["max_scale_ratio"]
        valid = (O >= c["min_overlap"]) & (O <= c["max_overlap"]) & (S <= r) & (S >= 1.0 / r)
        valid &= usable[:, None] & usable[None, :]
        np.fill_diagonal(valid, False)
        pairs = np.argwhere(valid).astype(np.int32)
        if len(pairs) == 0:
            return None
        return {
            "scene": scene,
            "pairs": pairs,
            "image_paths": image_paths,
            "depth_paths": depth_paths,
            "intrinsics": intrinsics,
            "poses": poses,
        }

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's pairs: at most ``pairs_per_scene`` per scene, then shuffle."""
        self.epoch = int(epoch)
        c = self.conf
        rng = make_rng(c["val_seed"], 0) if c["split"] == "val" else make_rng(c["seed"], self.epoch)
        items = []
        for s, info in enumerate(self.scenes):
            m = len(info["pairs"])
            k = min(int(c["pairs_per_scene"]), m)
            for p in rng.choice(m, k, replace=False):
                items.append((s, int(p)))
        order = rng.permutation(len(items))
        self.items = [items[i] for i in order]

    def __len__(self) -> int:
        return len(self.items)

    def _view(self, info: dict, i: int) -> dict:
        image_path = self.root / str(info["image_paths"][i])
        depth_path = self.root / str(info["depth_paths"][i])
        depth = read_depth_h5(depth_path)
        image = read_image(image_path)
        K = np.asarray(info["intrinsics"][i], np.float64).reshape(3, 3).copy()
        if self.conf["colmap_pixel_centers"]:
            K[0, 2] -= 0.5
            K[1, 2] -= 0.5
        to_view = np.eye(3)
        if image.shape[:2] != depth.shape:
            # K describes the depth map's pixels: bring the image onto that grid
            (h, w), (dh, dw) = image.shape[:2], depth.shape
            image, _, _ = resize_view(image, None, K, (dw, dh))
            to_view = pixel_scale_matrix(dw / w, dh / h)
        return {
            "image": image,
            "depth": depth,
            "K": K,
            "name": str(info["image_paths"][i]),
            "path": str(image_path),
            "source_to_view": to_view,
        }

    def __getitem__(self, index: int) -> dict:
        s, p = self.items[index]
        info = self.scenes[s]
        i, j = (int(v) for v in info["pairs"][p])
        rng = make_rng(
            self.conf["val_seed"] if self.conf["split"] == "val" else self.conf["seed"],
            self.epoch if self.conf["split"] == "train" else 0,
            index,
        )
        P0 = np.asarray(info["poses"][i], np.float64).reshape(4, 4)
        P1 = np.asarray(info["poses"][j], np.float64).reshape(4, 4)
        T_1from0 = P1 @ np.linalg.inv(P0)  # poses are world-to-camera
        v0, v1 = self._view(info, i), self._view(info, j)
        name = f"{info['scene']}/{Path(v0['name']).name}|{Path(v1['name']).name}"
        return self.sampler(v0, v1, T_1from0, rng, name=name)
