"""Textures of the synthetic scenes (:mod:`tasp_hloc.data.synthetic`): procedural ones
(:func:`procedural_textures`, layered random shapes on value noise, so tests need no files) and
random square crops of the photos in a folder (``_PhotoTextures``, decoded once and kept
downscaled in memory), both as :math:`(n, 3, S, S)` float tensors in [0, 1]."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ...io.images import IMAGE_EXTENSIONS, extension_globs, list_images, read_image


def procedural_textures(
    n: int, size: int, rng: np.random.Generator, chunk: int = 4
) -> torch.Tensor:
    """``n`` random textures :math:`(n, 3, size, size)`: layered random shapes on value noise.

    Shapes (rotated rectangles, ellipses, stripes and checker patches) give the corners,
    junctions and edges of man-made surfaces; the multi-octave noise gives fine texture.
    """
    g = torch.Generator().manual_seed(int(rng.integers(2**62)))
    # a few at a time: the per-shape masks are n x shapes x size^2
    return torch.cat([_procedural(min(chunk, n - i), size, g) for i in range(0, n, chunk)])


def _procedural(n: int, S: int, g: torch.Generator) -> torch.Tensor:
    def rand(*shape):
        return torch.rand(*shape, generator=g)

    # value noise: random grids at 4 octaves, bilinearly upsampled
    noise = sum(
        F.interpolate(rand(n, 3, k, k), size=(S, S), mode="bilinear", align_corners=False) * a
        for k, a in ((4, 0.5), (8, 0.25), (32, 0.15), (S // 2, 0.1))
    )
    base = rand(n, 3, 1, 1) * 0.6 + 0.2
    tex = base + (noise - noise.mean((2, 3), keepdim=True)) * rand(n, 1, 1, 1) * 1.2
    m = 14  # shapes per texture, painted in order
    y, x = torch.meshgrid(torch.arange(S) / S, torch.arange(S) / S, indexing="ij")
    c = rand(n, m, 2, 1, 1)
    ang = rand(n, m, 1, 1) * math.pi
    dx, dy = x - c[:, :, 0], y - c[:, :, 1]
    u = dx * ang.cos() + dy * ang.sin()
    v = -dx * ang.sin() + dy * ang.cos()
    a = rand(n, m, 1, 1) * 0.25 + 0.03
    b = rand(n, m, 1, 1) * 0.25 + 0.03
    kind = torch.randint(0, 4, (n, m, 1, 1), generator=g)
    period = rand(n, m, 1, 1) * 0.05 + 0.02
    rect = (u.abs() < a) & (v.abs() < b)
    ellipse = (u / a) ** 2 + (v / b) ** 2 < 1
    stripes = rect & (torch.floor(u / period) % 2 == 0)
    checker = rect & ((torch.floor(u / period) + torch.floor(v / period)) % 2 == 0)
    mask = torch.where(
        kind == 0, rect, torch.where(kind == 1, ellipse, torch.where(kind == 2, stripes, checker))
    )
    # painter's algorithm without a loop: the last shape covering a pixel wins
    order = torch.arange(1, m + 1).view(1, m, 1, 1)
    top = (mask * order).amax(1)  # n x S x S, 0 = none
    colors = rand(n, m + 1, 3)
    colors[:, 0] = 0  # unused
    painted = (
        colors.gather(1, top.view(n, -1, 1).expand(-1, -1, 3)).view(n, S, S, 3).permute(0, 3, 1, 2)
    )
    tex = torch.where(top[:, None] > 0, painted * 0.85 + 0.15 * noise / 1.0, tex)
    return tex.clamp(0, 1)


class _PhotoTextures:
    """Random square crops of the photos in a folder, decoded once and kept (downscaled) in memory."""

    def __init__(self, folder: str, max_side: int, max_images: int):
        root = Path(folder)
        if not root.is_dir():
            raise FileNotFoundError(
                f"texture_dir {root} is not a folder; set it to a folder of photos "
                f"or to None for procedural textures."
            )
        names = list_images(root, extension_globs(), allow_empty=True)
        self.paths = [root / n for n in names][:max_images]
        if not self.paths:
            raise FileNotFoundError(
                f"No images ({', '.join(IMAGE_EXTENSIONS)}) in texture_dir {root}."
            )
        self.max_side = max_side
        self.images: Dict[int, np.ndarray] = {}

    def _image(self, i: int) -> np.ndarray:
        if i not in self.images:
            im = read_image(self.paths[i])
            s = self.max_side / max(im.shape[:2])
            if s < 1:
                im = cv2.resize(im, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
            self.images[i] = im
        return self.images[i]

    def sample(self, n: int, size: int, rng: np.random.Generator) -> torch.Tensor:
        out = []
        for _ in range(n):  # a handful of crops per sample (one per texture), not per pixel
            im = self._image(int(rng.integers(len(self.paths))))
            h, w = im.shape[:2]
            side = int(rng.uniform(0.3, 1.0) * min(h, w))
            y0, x0 = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
            crop = cv2.resize(
                im[y0 : y0 + side, x0 : x0 + side], (size, size), interpolation=cv2.INTER_AREA
            )
            out.append(crop)
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0
