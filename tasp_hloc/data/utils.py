"""Small shared helpers of the pair datasets: config merging, seeding, depth I/O, intrinsics.

Images are read with :func:`tasp_hloc.io.images.read_image`, the reader of extraction.

Pixel-centre convention everywhere: the top-left pixel centre is (0, 0), so scaling an image
by s maps a coordinate c to ``(c + 0.5) * s - 0.5`` and cropping at (x0, y0) maps c to c - x0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from ..io.images import IMAGE_EXTENSIONS, extension_globs, list_images


def make_rng(seed: Optional[int], *keys: int) -> np.random.Generator:
    """Per-item generator: deterministic in (seed, keys) when a seed is given, fresh otherwise."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng([int(seed)] + [int(k) for k in keys])


def image_files(sources: Sequence[str]) -> list:
    """Sorted image files under the given folders (recursive), plus any image files named directly."""
    files = []
    for source in sources:
        p = Path(source)
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            files.append(p)
            continue
        if not p.is_dir():
            raise FileNotFoundError(
                f"Image folder or file {p} does not exist; set 'image_dirs' to folders of photos "
                "or image files."
            )
        files += [p / n for n in list_images(p, extension_globs(), allow_empty=True)]
    return sorted(set(files))


def read_depth_png(path, scale: float = 1000.0, invalid: Sequence[int] = (0,)) -> np.ndarray:
    """H x W float32 depth from a 16-bit PNG (value / scale), 0 where unknown."""
    d = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH)
    if d is None:
        raise IOError(f"Could not read depth map {path}: missing or not a 16-bit PNG.")
    if d.ndim != 2:
        raise ValueError(f"Depth map {path} has {d.shape[2]} channels; expected one.")
    bad = np.isin(d, np.asarray(invalid))
    out = d.astype(np.float32) / scale
    out[bad] = 0.0
    return out


def scale_intrinsics(K: np.ndarray, scale: Tuple[float, float]) -> np.ndarray:
    """K of an image resized by ``scale`` = (sx, sy), pixel-centre convention:
    c' = (c + 0.5) s - 0.5."""
    sx, sy = scale
    K = np.array(K, dtype=np.float64, copy=True)
    K[0, 0] *= sx
    K[1, 1] *= sy
    K[0, 1] *= sx
    K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return K


def crop_intrinsics(K: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """K of the crop whose top-left pixel is (x0, y0) of the original image."""
    K = np.array(K, dtype=np.float64, copy=True)
    K[0, 2] -= x0
    K[1, 2] -= y0
    return K


def resize_view(
    image: np.ndarray, depth: Optional[np.ndarray], K: np.ndarray, size_wh: Tuple[int, int]
) -> Tuple[np.ndarray, Optional[np.ndarray], np.ndarray]:
    """Resize an image (area / linear) and its depth (nearest, centre-aligned) to (W, H).

    Depth is resized with nearest-exact sampling so that no value is an average across a depth
    edge; OpenCV's plain INTER_NEAREST is not centre-aligned and would shift it by up to a pixel.
    """
    h, w = image.shape[:2]
    nw, nh = int(size_wh[0]), int(size_wh[1])
    if (nw, nh) == (w, h):
        return image, depth, np.asarray(K, dtype=np.float64)
    interp = cv2.INTER_AREA if nw * nh < w * h else cv2.INTER_LINEAR
    image = cv2.resize(image, (nw, nh), interpolation=interp)
    if depth is not None:
        depth = cv2.resize(depth, (nw, nh), interpolation=cv2.INTER_NEAREST_EXACT)
    return image, depth, scale_intrinsics(K, (nw / w, nh / h))


def nominal_intrinsics(h: int, w: int) -> np.ndarray:
    """Nominal pinhole of homographic pairs: f = max(H, W), principal point at the centre."""
    f = float(max(h, w))
    return np.array([[f, 0, (w - 1) / 2.0], [0, f, (h - 1) / 2.0], [0, 0, 1]], dtype=np.float64)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 or float [0, 1] array -> 3 x H x W float32 tensor in [0, 1]."""
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / 255.0
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)
    return t.clamp(0.0, 1.0).contiguous()


def pack_sample(
    image0,
    image1,
    depth0,
    depth1,
    K0,
    K1,
    T_1from0,
    H_1from0,
    is_homography,
    valid0,
    valid1,
    name: str,
    source0: Optional[str] = None,
    source0_to_image0: Optional[np.ndarray] = None,
) -> dict:
    """Build the project-wide pair-sample dict (see tasp_hloc/data/__init__.py).

    ``source0`` (the file image 0 was cut from) and ``source0_to_image0`` (3 x 3, file pixels
    -> image-0 pixels) let keypoint labels be computed once per file and moved into each crop.
    """
    f32 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
    extra = (
        {}
        if source0 is None
        else {"source0": str(source0), "source0_to_image0": f32(source0_to_image0)}
    )
    return {
        **extra,
        "image0": image_to_tensor(image0),
        "image1": image_to_tensor(image1),
        "depth0": f32(depth0),
        "depth1": f32(depth1),
        "K0": f32(K0),
        "K1": f32(K1),
        "T_1from0": f32(T_1from0),
        "H_1from0": f32(H_1from0),
        "is_homography": torch.tensor(bool(is_homography)),
        "valid0": torch.as_tensor(np.asarray(valid0, dtype=bool)),
        "valid1": torch.as_tensor(np.asarray(valid1, dtype=bool)),
        "name": str(name),
    }


def pixel_scale_matrix(sx: float, sy: float) -> np.ndarray:
    """3 x 3 map of pixel coordinates under a resize by (sx, sy), pixel centres kept aligned."""
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]], np.float64)
