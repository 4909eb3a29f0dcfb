"""Turn two posed RGB-D views into one cropped pair sample that keeps overlap.

Shared by the RGB-D and MegaDepth datasets. The crop of image 0 is centred (with jitter) on a
random pixel whose depth + pose warp is valid in image 1, and the crop of image 1 on its
correspondence, the way D2-Net centres its crops on a shared 3D point. Intrinsics follow every
resize and crop with the pixel-centre convention.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..options import with_defaults
from .geometry import warp_depth_pose
from .photometric import PhotometricAugmentation
from .utils import crop_intrinsics, pack_sample, pixel_scale_matrix, resize_view


class ViewPairSampler:
    """Resize, choose overlapping crops, augment, and pack a posed pair.

    A view is a dict with ``image`` (H x W x 3 uint8 RGB), ``depth`` (H x W float32, 0 = unknown)
    and ``K`` (3 x 3) for exactly that image; optionally ``path`` (its file) and
    ``source_to_view`` (3 x 3, file pixels -> ``image`` pixels) so labels of the file can be used.
    """

    default_conf = {
        "size": [256, 256],  # (H, W) of the crops; None = keep the full (resized) images
        "resize_max": None,  # resize so that the longer side is at most this, before cropping
        "jitter": 0.125,  # crop centre jitter, fraction of the crop size
        "grid_step": 8,  # pixel step of the candidate centres in image 0
        "rel_tol": 0.05,  # depth consistency of the correspondences
        # [lo, hi]: view 1 is resized by a further factor drawn log-uniformly from it, so pairs
        # span scale ratios the photo collection lacks (most of the built scenes' pairs are
        # under 1.25x apart, docs/data.md); None keeps the views' own scales
        "scale_range": None,
        "photometric": dict(PhotometricAugmentation.default_conf, enable=False),
        "photometric_image0": False,
    }

    def __init__(self, conf: Optional[dict] = None):
        self.conf = with_defaults(self.default_conf, conf, "ViewPairSampler")
        if self.conf["scale_range"] is not None:
            lo, hi = self.conf["scale_range"]
            if not 0 < lo <= hi:
                raise ValueError(f"scale_range must be 0 < lo <= hi, got {[lo, hi]}.")
        self.photometric = PhotometricAugmentation(self.conf["photometric"])

    def _prepare(self, view: dict, zoom: float = 1.0) -> dict:
        image, depth, K = view["image"], view["depth"], np.asarray(view["K"], np.float64)
        h, w = image.shape[:2]
        if depth.shape != (h, w):
            raise ValueError(
                f"Depth {depth.shape} and image {(h, w)} sizes differ for {view.get('name')}."
            )
        s = 1.0
        if self.conf["resize_max"] is not None and max(h, w) > self.conf["resize_max"]:
            s = self.conf["resize_max"] / max(h, w)
        s *= zoom
        if self.conf["size"] is not None:  # the crop must fit
            ch, cw = self.conf["size"]
            s = max(s, ch / h, cw / w)
        to_view = np.asarray(view.get("source_to_view", np.eye(3)), np.float64)
        if s != 1.0:
            size = (round(w * s), round(h * s))
            image, depth, K = resize_view(image, depth, K, size)
            to_view = pixel_scale_matrix(size[0] / w, size[1] / h) @ to_view
        return {
            "image": image,
            "depth": depth.astype(np.float32),
            "K": K,
            "path": view.get("path"),
            "source_to_view": to_view,
        }

    @staticmethod
    def _crop_origin(center: np.ndarray, crop_wh, full_wh, jitter: float, rng) -> np.ndarray:
        cw, ch = crop_wh
        o = center - np.array([(cw - 1) / 2.0, (ch - 1) / 2.0])
        o = o + rng.uniform(-jitter, jitter, 2) * np.array([cw, ch])
        o = np.round(o).astype(int)
        return np.clip(o, 0, np.array(full_wh) - np.array([cw, ch]))

    def zoom(self, rng) -> float:
        """View 1's extra resize factor: log-uniform in ``scale_range`` (1 without one)."""
        if self.conf["scale_range"] is None:
            return 1.0  # no draw: samples stay as they were without the option
        lo, hi = self.conf["scale_range"]
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))

    def __call__(self, view0: dict, view1: dict, T_1from0: np.ndarray, rng, name: str) -> dict:
        v0, v1 = self._prepare(view0), self._prepare(view1, self.zoom(rng))
        T_1from0 = np.asarray(T_1from0, np.float64)
        if self.conf["size"] is not None:
            ch, cw = self.conf["size"]
            h0, w0 = v0["depth"].shape
            step = self.conf["grid_step"]
            ys, xs = np.mgrid[step // 2 : h0 : step, step // 2 : w0 : step]
            kp0 = torch.from_numpy(np.stack([xs.ravel(), ys.ravel()], -1)[None].astype(np.float64))
            kp1, valid, _, _ = warp_depth_pose(
                kp0,
                torch.from_numpy(v0["depth"]).double()[None],
                torch.from_numpy(v1["depth"]).double()[None],
                torch.from_numpy(v0["K"])[None],
                torch.from_numpy(v1["K"])[None],
                torch.from_numpy(T_1from0)[None],
                self.conf["rel_tol"],
            )
            idx = torch.nonzero(valid[0]).flatten().numpy()
            if idx.size > 0:
                i = int(rng.choice(idx))
                c0, c1 = kp0[0, i].numpy(), kp1[0, i].numpy()
            else:  # no overlap at all: centre crops (the sample will have no correspondences)
                c0 = np.array(v0["depth"].shape[::-1], float) / 2
                c1 = np.array(v1["depth"].shape[::-1], float) / 2
            crops = []
            for v, c in ((v0, c0), (v1, c1)):
                o = self._crop_origin(c, (cw, ch), v["depth"].shape[::-1], self.conf["jitter"], rng)
                x0, y0 = int(o[0]), int(o[1])
                shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)
                crops.append(
                    {
                        "image": v["image"][y0 : y0 + ch, x0 : x0 + cw],
                        "depth": v["depth"][y0 : y0 + ch, x0 : x0 + cw],
                        "K": crop_intrinsics(v["K"], x0, y0),
                        "path": v["path"],
                        "source_to_view": shift @ v["source_to_view"],
                    }
                )
            v0, v1 = crops
        image0, image1 = v0["image"], v1["image"]
        image1 = self.photometric(image1, rng)
        if self.conf["photometric_image0"]:
            image0 = self.photometric(image0, rng)
        return pack_sample(
            image0,
            image1,
            v0["depth"],
            v1["depth"],
            v0["K"],
            v1["K"],
            T_1from0,
            np.eye(3),
            False,
            np.ones(v0["depth"].shape, bool),
            np.ones(v1["depth"].shape, bool),
            name,
            source0=v0["path"],
            source0_to_image0=v0["source_to_view"] if v0["path"] else None,
        )
