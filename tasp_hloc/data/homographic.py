"""Homographic training pairs from any folder of photos.

image0 is a random crop of a (randomly rescaled) photo; image1 is the photo seen through a random
homography that keeps overlap with image0, so that image1 shows real content beyond the crop
wherever the photo extends, and black (``valid1 = False``) only outside it. A random photometric
change (including a strong day-to-night one) is applied to image1.

``H_1from0`` maps image-0 pixels to image-1 pixels, pixel centres at integer coordinates (the
convention of ``cv2.warpPerspective``), so ``image1(H p) ~ image0(p)``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from torch.utils.data import Dataset

from ..io.images import read_image
from ..options import with_defaults
from .photometric import PhotometricAugmentation
from .utils import (
    image_files,
    make_rng,
    nominal_intrinsics,
    pack_sample,
    pixel_scale_matrix,
)


def _translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]], dtype=np.float64)


def overlap_fraction(H: np.ndarray, size: tuple, step: int = 8) -> float:
    """Fraction of a grid of image 0 (size (h, w)) that ``H`` maps inside an image of the same size."""
    h, w = size
    ys, xs = np.mgrid[0:h:step, 0:w:step]
    p = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)], 0).astype(np.float64)
    q = H @ p
    z = q[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        x, y = q[0] / z, q[1] / z
    ok = (z > 0) & (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    return float(ok.mean())


def sample_homography(size: tuple, conf: dict, rng: np.random.Generator) -> np.ndarray:
    """Random homography of an (h, w) image, mapping image-0 pixels to image-1 pixels.

    Corners are jittered (perspective), then scaled, rotated about the centre and translated.
    Draws whose overlap (both ways) is below ``min_overlap`` are redrawn with shrinking
    magnitude; after ``max_tries`` the identity is returned.
    """
    h, w = size
    c = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    src = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64)
    for k in range(conf["max_tries"]):
        m = 1.0 - k / conf["max_tries"]  # shrink the magnitude after failures
        dst = src + rng.uniform(-1, 1, (4, 2)) * conf["perspective"] * m * np.array([w, h])
        s = math.exp(rng.uniform(math.log(conf["scale"][0]), math.log(conf["scale"][1])) * m)
        a = math.radians(rng.uniform(-conf["max_angle"], conf["max_angle"]) * m)
        R = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        dst = (dst - c) @ (s * R).T + c
        dst = dst + rng.uniform(-1, 1, 2) * conf["translation"] * m * np.array([w, h])
        H = cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32))
        H = H.astype(np.float64)
        if (
            overlap_fraction(H, size) >= conf["min_overlap"]
            and overlap_fraction(np.linalg.inv(H), size) >= conf["min_overlap"]
        ):
            return H / H[2, 2]
    return np.eye(3)


class HomographicDataset(Dataset):
    """Pairs (photo crop, homographically warped photo) in the project's pair-sample format.

    Args:
        conf: see ``default_conf``. ``image_dirs``: a folder or list of folders (searched
            recursively). ``size``: (H, W) of both images. ``short_side``: range of the photo's
            shorter side after a random rescale, before cropping (larger = the crop sees less
            of the photo). ``seed``: per-index deterministic samples (with :meth:`set_epoch`).
    """

    default_conf = {
        "image_dirs": [],
        "size": [256, 256],
        "short_side": [256, 480],
        "epoch_size": None,  # number of pairs per epoch (default: one per photo)
        "seed": None,
        "homography": {
            "max_angle": 25.0,  # degrees
            "scale": [0.7, 1.4],
            "perspective": 0.12,  # corner jitter, fraction of the size
            "translation": 0.15,  # fraction of the size
            "min_overlap": 0.35,
            "max_tries": 20,
        },
        "photometric": dict(PhotometricAugmentation.default_conf),
        "photometric_image0": False,  # also augment image0 (independent draw)
    }

    def __init__(self, conf: dict | None = None):
        self.conf = with_defaults(self.default_conf, conf, "HomographicDataset")
        dirs = self.conf["image_dirs"]
        dirs = [dirs] if isinstance(dirs, str) else list(dirs)
        if not dirs:
            raise ValueError(
                "HomographicDataset: set 'image_dirs' to one or more folders of photos."
            )
        self.files = image_files(dirs)
        if not self.files:
            raise FileNotFoundError(
                f"HomographicDataset: no image files (.jpg, .png, ...) under {dirs}; "
                "point 'image_dirs' to folders of photos."
            )
        self.photometric = PhotometricAugmentation(self.conf["photometric"])
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the random draws of the next epoch (deterministic when a seed is set)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = self.conf["epoch_size"]
        return int(n) if n is not None else len(self.files)

    def __getitem__(self, index: int) -> dict:
        rng = make_rng(self.conf["seed"], self.epoch, index)
        path = self.files[index % len(self.files)]
        photo = read_image(path)
        h, w = int(self.conf["size"][0]), int(self.conf["size"][1])

        # rescale the photo so that a (h, w) crop fits and sees a random part of it
        ph, pw = photo.shape[:2]
        lo, hi = self.conf["short_side"]
        short = max(rng.uniform(lo, hi), h * min(pw, ph) / ph, w * min(pw, ph) / pw)
        s = short / min(ph, pw)
        nw, nh = max(w, int(round(pw * s))), max(h, int(round(ph * s)))
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        photo = cv2.resize(photo, (nw, nh), interpolation=interp)

        x0 = int(rng.integers(0, nw - w + 1))
        y0 = int(rng.integers(0, nh - h + 1))
        image0 = photo[y0 : y0 + h, x0 : x0 + w]
        H = sample_homography((h, w), self.conf["homography"], rng)
        # image1 = photo seen through H after moving photo pixels into image-0 coordinates
        H_1fromphoto = H @ _translation(-x0, -y0)
        image1 = cv2.warpPerspective(
            photo,
            H_1fromphoto,
            (w, h),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        inside = cv2.warpPerspective(
            np.ones((nh, nw), np.float32),
            H_1fromphoto,
            (w, h),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        valid1 = inside > 0.999  # excludes pixels blended with the black border

        image1 = self.photometric(image1, rng) * valid1[..., None]
        if self.conf["photometric_image0"]:
            image0 = self.photometric(image0, rng)
        K = nominal_intrinsics(h, w)
        plane = np.ones((h, w), np.float32)
        return pack_sample(
            image0,
            image1,
            plane,
            plane,
            K,
            K,
            np.eye(4),
            H,
            True,
            np.ones((h, w), bool),
            valid1,
            name=f"homographic/{path.name}/{index}",
            source0=path,
            source0_to_image0=_translation(-x0, -y0) @ pixel_scale_matrix(nw / pw, nh / ph),
        )
