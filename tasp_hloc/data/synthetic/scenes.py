"""Synthetic 3D scenes of textured planes and boxes, ray cast on the fly into training pairs.

A scene is a closed room (an inward box) holding a few random boxes and free-standing planar
quads. Every surface is a textured rectangle ("quad"): random crops of real photos when
``texture_dir`` is set, procedural textures otherwise (so tests need no files). Two cameras look
at the same object from positions a baseline apart, so the pair has parallax, occlusions and depth
discontinuities, and it comes with exact depth maps, intrinsics and relative pose.

Rendering is ray casting, vectorised over pixels and quads: a ray hits a quad where it crosses its
plane inside its extent; the nearest hit wins. Depth is cast at the exact pixel centres (so
unprojecting a pixel with its depth lands on the surface); colour is the mean of
``supersample``^2 rays per pixel, which anti-aliases texture and silhouettes. Shading is
Lambertian (view independent), so a surface point has the same colour in both views.

World frame: y points down (like the cameras), the room is centred at the origin.

This module samples the scenes and cameras and is the dataset (:class:`SyntheticScenes`); the
ray casting is in :mod:`.render` and the textures in :mod:`.textures`.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ...options import with_defaults
from .render import render_color, render_depth
from .textures import _PhotoTextures, procedural_textures

# --------------------------------------------------------------------------------------------
# Scenes: quads of boxes, random rotations


def _quads_of_box(centre: np.ndarray, R: np.ndarray, half: np.ndarray) -> Dict[str, np.ndarray]:
    """The 6 faces of a box (axes = columns of R, half sizes ``half``) as quads."""
    o, u, v, ext = [], [], [], []
    for k in range(3):
        k1, k2 = (k + 1) % 3, (k + 2) % 3
        for sign in (-1.0, 1.0):
            o.append(centre + sign * half[k] * R[:, k] - half[k1] * R[:, k1] - half[k2] * R[:, k2])
            u.append(R[:, k1])
            v.append(R[:, k2])
            ext.append([2 * half[k1], 2 * half[k2]])
    return {"origin": np.array(o), "u": np.array(u), "v": np.array(v), "extent": np.array(ext)}


def _random_rotation(rng: np.random.Generator, max_tilt: float = math.pi) -> np.ndarray:
    """A random rotation: yaw about y (down) uniform, then a tilt of at most ``max_tilt``."""
    yaw = rng.uniform(-math.pi, math.pi)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    tilt = rng.uniform(-max_tilt, max_tilt)
    Ry = cv2.Rodrigues(np.array([0.0, yaw, 0.0]))[0]
    return cv2.Rodrigues(axis * tilt)[0] @ Ry


# --------------------------------------------------------------------------------------------
# The dataset


class SyntheticScenes(Dataset):
    """Pairs of views of random textured scenes with exact depth and pose.

    Item ``i`` is a deterministic function of (``seed``, i), and of the epoch when
    ``new_scenes_each_epoch``, when ``seed`` is set. Returns
    the project-wide pair-sample dict (see :mod:`tasp_hloc.data`), ``is_homography`` False.
    Extra: :meth:`sample` can also return the scene, for tests and pictures.
    """

    default_conf = {
        "texture_dir": None,  # folder of photos for textures; None: procedural textures
        "size": 256,  # int or [H, W]
        "num_samples": 10000,  # items per epoch
        "seed": 0,  # None: fresh randomness every call
        # False: item i is the same scene every epoch, so labels cached by pixel hash are reused
        # (homographic adaptation is dear per image); True: new scenes after set_epoch().
        "new_scenes_each_epoch": False,
        "num_boxes": [2, 5],  # inclusive ranges
        "num_planes": [1, 4],
        "room_size": [4.0, 9.0],  # side lengths of the room, metres
        "box_size": [0.3, 1.6],
        "plane_size": [0.6, 2.5],
        "fov": [45.0, 75.0],  # horizontal field of view, degrees
        "baseline": [0.1, 0.4],  # camera distance, fraction of camera-0-to-target distance
        "look_jitter": 0.1,  # camera-1 target offset, fraction of that distance
        "max_roll": 15.0,  # degrees, each camera
        "min_overlap": 0.3,  # fraction of view-0 pixels visible in view 1
        "overlap_step": 8,  # pixel step of the overlap estimate
        "max_tries": 30,  # camera resamplings before a new scene is drawn
        "supersample": 2,  # colour rays per pixel side
        "texture_size": 256,
        "texels_per_metre": [60.0, 200.0],
        "procedural_pool": 64,  # procedural textures drawn once per dataset (per worker)
        "max_texture_images": 500,
        "texture_max_side": 640,
        "ambient": 0.45,  # Lambertian shading: ambient + (1 - ambient) * |n . l|
        "tint": 0.15,  # per-quad colour gain +/-
        "photometric": None,  # conf of data.photometric.PhotometricAugmentation, per image; None: off
    }

    def __init__(self, conf: Optional[Dict[str, Any]] = None):
        self.conf = c = with_defaults(self.default_conf, conf, "SyntheticScenes")
        size = c["size"]
        self.size = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
        self.epoch = 0
        self._photos = (
            _PhotoTextures(c["texture_dir"], c["texture_max_side"], c["max_texture_images"])
            if c["texture_dir"]
            else None
        )
        self._pool: Optional[torch.Tensor] = None
        self._photometric = None
        if c["photometric"] is not None:
            from .photometric import PhotometricAugmentation

            self._photometric = PhotometricAugmentation(c["photometric"])

    def __len__(self) -> int:
        return int(self.conf["num_samples"])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        if self.conf["seed"] is None:
            return np.random.default_rng()
        epoch = self.epoch if self.conf["new_scenes_each_epoch"] else 0
        return np.random.default_rng([int(self.conf["seed"]), epoch, int(index)])

    # -- scene --------------------------------------------------------------------------------

    def _textures(self, n: int, rng: np.random.Generator) -> Tuple[torch.Tensor, np.ndarray]:
        """Texture stack and each quad's slice in it."""
        S = self.conf["texture_size"]
        if self._photos is not None:
            return self._photos.sample(n, S, rng), np.arange(n)
        if self._pool is None:  # fixed per dataset, so a seeded dataset is reproducible
            seed = 0 if self.conf["seed"] is None else self.conf["seed"]
            self._pool = procedural_textures(
                self.conf["procedural_pool"], S, np.random.default_rng([seed, 7])
            )
        return self._pool, rng.integers(len(self._pool), size=n)

    def sample_scene(self, rng: np.random.Generator) -> Dict[str, torch.Tensor]:
        """Random room, boxes and planes; quads with texture maps and shading. float64 tensors."""
        c = self.conf
        half_room = rng.uniform(*c["room_size"], size=3) / 2
        half_room[1] = min(half_room[1], rng.uniform(1.3, 2.0))  # rooms are lower than wide
        parts = [_quads_of_box(np.zeros(3), np.eye(3), half_room)]
        boxes, targets = [], []
        inner = half_room - 0.3
        for _ in range(rng.integers(c["num_boxes"][0], c["num_boxes"][1] + 1)):
            half = rng.uniform(*c["box_size"], size=3) / 2
            R = _random_rotation(rng, max_tilt=0.4)
            centre = rng.uniform(-inner, inner)
            boxes.append((centre, R, half))
            targets.append(centre)
            parts.append(_quads_of_box(centre, R, half))
        for _ in range(rng.integers(c["num_planes"][0], c["num_planes"][1] + 1)):
            ext = rng.uniform(*c["plane_size"], size=2)
            R = _random_rotation(rng)
            centre = rng.uniform(-inner, inner)
            targets.append(centre)
            parts.append(
                {
                    "origin": (centre - R[:, 0] * ext[0] / 2 - R[:, 1] * ext[1] / 2)[None],
                    "u": R[:, :1].T,
                    "v": R[:, 1:2].T,
                    "extent": ext[None],
                }
            )
        scene = {k: torch.from_numpy(np.concatenate([p[k] for p in parts])) for k in parts[0]}
        q = len(scene["origin"])
        textures, tex_index = self._textures(q, rng)
        # quad coordinates (metres) -> texels: random density, rotation and offset per quad
        dens = rng.uniform(*c["texels_per_metre"], size=q)
        ang = rng.uniform(-math.pi, math.pi, size=q)
        A = np.stack(
            [np.stack([np.cos(ang), -np.sin(ang)], -1), np.stack([np.sin(ang), np.cos(ang)], -1)], 1
        )
        A = A * dens[:, None, None]
        off = rng.uniform(0, c["texture_size"], size=(q, 2, 1))
        light = rng.normal(size=3)
        light /= np.linalg.norm(light)
        n = np.cross(scene["u"].numpy(), scene["v"].numpy())
        shade = c["ambient"] + (1 - c["ambient"]) * np.abs(n @ light)
        tint = 1 + rng.uniform(-c["tint"], c["tint"], size=(q, 3))
        scene.update(
            {
                "tex_affine": torch.from_numpy(np.concatenate([A, off], -1)),
                "texture": torch.from_numpy(tex_index),
                "shade": torch.from_numpy(shade[:, None] * tint),
                "half_room": torch.from_numpy(half_room),
            }
        )
        scene["boxes"], scene["targets"] = boxes, targets  # for camera placement
        scene["textures"] = textures
        return scene

    # -- cameras ------------------------------------------------------------------------------

    def _intrinsics(self, rng) -> torch.Tensor:
        h, w = self.size
        f = (w / 2) / math.tan(math.radians(rng.uniform(*self.conf["fov"])) / 2)
        return torch.tensor(
            [[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]], dtype=torch.float64
        )

    def _free(self, p: np.ndarray, scene, margin: float = 0.25) -> bool:
        """Is a camera at ``p`` inside the room and outside every box (with a margin)?"""
        if np.any(np.abs(p) > scene["half_room"].numpy() - margin):
            return False
        return all(np.any(np.abs(R.T @ (p - c)) > h + margin) for c, R, h in scene["boxes"])

    def _look_at(self, centre, target, rng) -> torch.Tensor:
        z = target - centre
        z = z / np.linalg.norm(z)
        down = np.array([0.0, 1.0, 0.0])
        x = np.cross(down, z)
        if np.linalg.norm(x) < 1e-3:  # looking straight up/down
            x = np.cross(np.array([0.0, 0.0, 1.0]), z)
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        roll = math.radians(rng.uniform(-self.conf["max_roll"], self.conf["max_roll"]))
        x, y = math.cos(roll) * x + math.sin(roll) * y, -math.sin(roll) * x + math.cos(roll) * y
        R_cw = np.stack([x, y, z])  # rows: camera axes in world
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R_cw, -R_cw @ centre
        return torch.from_numpy(T)

    def _overlap(self, d0, d1, K0, K1, T_1from0) -> float:
        """Fraction of view-0 pixels (on a grid) that view 1 sees, by a depth-consistency check."""
        st = self.conf["overlap_step"]
        h, w = d0.shape
        ys, xs = torch.meshgrid(
            torch.arange(st // 2, h, st), torch.arange(st // 2, w, st), indexing="ij"
        )
        z0 = d0[ys, xs].reshape(-1)
        p = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones_like(z0)], -1).to(d0.dtype)
        X = (p @ torch.linalg.inv(K0).T) * z0[:, None]
        X1 = X @ T_1from0[:3, :3].T + T_1from0[:3, 3]
        uv = X1 @ K1.T
        z1 = uv[:, 2]
        uv = uv[:, :2] / z1.clamp(min=1e-9)[:, None]
        ui, vi = uv[:, 0].round().long(), uv[:, 1].round().long()
        inside = (z0 > 0) & (z1 > 1e-6) & (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h)
        d1s = d1[vi.clamp(0, h - 1), ui.clamp(0, w - 1)]
        vis = inside & ((d1s - z1).abs() < 0.05 * z1)
        return float(vis.float().mean())

    # -- samples ------------------------------------------------------------------------------

    def sample(self, index: int, return_scene: bool = False) -> Dict[str, Any]:
        """Item ``index``; with ``return_scene`` also ``scene`` and ``T_cam_from_world{0,1}`` (float64)."""
        c = self.conf
        rng = self._rng(index)
        for _ in range(100):
            scene = self.sample_scene(rng)
            for _ in range(c["max_tries"]):
                views = self._sample_cameras(scene, rng)
                if views is not None:
                    break
            if views is not None:
                break
        else:
            raise RuntimeError(
                "SyntheticScenes: no camera pair with enough overlap in 100 scenes; "
                "lower min_overlap or the baseline."
            )
        (K0, T0, d0, q0), (K1, T1, d1, q1) = views
        images = [
            render_color(scene, scene["textures"], K, T, self.size, c["supersample"], q)
            for K, T, q in ((K0, T0, q0), (K1, T1, q1))
        ]
        if self._photometric is not None:
            images = [
                torch.from_numpy(self._photometric(im.permute(1, 2, 0).numpy(), rng)).permute(
                    2, 0, 1
                )
                for im in images
            ]
        T_1from0 = T1 @ torch.linalg.inv(T0)
        out = {
            "image0": images[0].float(),
            "image1": images[1].float(),
            "depth0": d0.float(),
            "depth1": d1.float(),
            "K0": K0.float(),
            "K1": K1.float(),
            "T_1from0": T_1from0.float(),
            "H_1from0": torch.eye(3),
            "is_homography": torch.tensor(False),
            "valid0": d0 > 0,
            "valid1": d1 > 0,
            "name": f"synthetic/{c['seed']}/{self.epoch if c['new_scenes_each_epoch'] else 0}/{index}",
        }
        if return_scene:
            out.update(
                scene=scene, T_cam_from_world0=T0, T_cam_from_world1=T1, T_1from0_64=T_1from0
            )
        return out

    def _sample_cameras(self, scene, rng):
        c = self.conf
        for _ in range(20):
            c0 = rng.uniform(-scene["half_room"].numpy(), scene["half_room"].numpy())
            if self._free(c0, scene):
                break
        else:
            return None
        target = scene["targets"][rng.integers(len(scene["targets"]))]
        dist = np.linalg.norm(target - c0)
        if dist < 0.5:
            return None
        dirn = rng.normal(size=3)
        c1 = c0 + dirn / np.linalg.norm(dirn) * rng.uniform(*c["baseline"]) * dist
        if not self._free(c1, scene):
            return None
        target1 = target + rng.normal(size=3) * c["look_jitter"] * dist
        K0, K1 = self._intrinsics(rng), self._intrinsics(rng)
        T0, T1 = self._look_at(c0, target, rng), self._look_at(c1, target1, rng)
        r0, r1 = render_depth(scene, K0, T0, self.size), render_depth(scene, K1, T1, self.size)
        d0, d1 = r0["depth"], r1["depth"]
        if d0.min() <= 0.05 or d1.min() <= 0.05:  # too close to a surface (or a hole)
            return None
        T_1from0 = T1 @ torch.linalg.inv(T0)
        if self._overlap(d0, d1, K0, K1, T_1from0) < c["min_overlap"]:
            return None
        return (K0, T0, d0, r0["quad"]), (K1, T1, d1, r1["quad"])

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return self.sample(index)


SyntheticDataset = SyntheticScenes  # the name tasp_hloc.data's registry uses
