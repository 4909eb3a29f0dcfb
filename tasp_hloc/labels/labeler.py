"""Label images and image files: resize, homographic adaptation, cache. What datasets call.

Keypoints are always returned in the pixels of the image as given (full resolution), whatever
size detection ran at, so datasets can crop and resize them with the image and then encode the
label map with :func:`tasp_hloc.labels.keypoints_to_label_map`.
"""

from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import cv2
import torch

from ..grid import rescale_keypoints
from ..io.images import load_image
from ..options import with_defaults
from .cache import LabelCache, Labels
from .detectors import get_detector
from .homographic_adaptation import HomographicAdaptation


class Labeler:
    """Pseudo-ground-truth keypoints for whole images, optionally cached on disk.

    Args:
        conf: overrides of ``default_conf``.
        cache_dir: where to cache labels; None = no cache.
        model: the network, needed when ``conf["detector"] == "model"``.
    """

    default_conf = {
        "detector": "shi_tomasi",  # "shi_tomasi", "harris", "aliked" or "model"
        "detector_conf": {},
        "adaptation": {},  # overrides of HomographicAdaptation.default_conf
        # Detect on a copy whose longer side is at most this (None: full size). Labels should be
        # made at about the scale training sees; 100 warps of a 640 px image take a few seconds.
        "resize_max": 640,
    }

    def __init__(
        self,
        conf: Optional[Dict[str, Any]] = None,
        cache_dir: Optional[Union[str, Path]] = None,
        model: Optional[Callable] = None,
    ):
        self.conf = with_defaults(self.default_conf, conf, "Labeler")
        detector = get_detector(self.conf["detector"], self.conf["detector_conf"], model)
        self.adaptation = HomographicAdaptation(detector, self.conf["adaptation"])
        self.cache = LabelCache(cache_dir, self.cache_key()) if cache_dir is not None else None

    def cache_key(self) -> Dict[str, Any]:
        # version 2: files are decoded like training images (EXIF orientation ignored); labels
        # of EXIF-rotated photos cached by version 1 are in another frame.
        return {**self.adaptation.cache_key(), "resize_max": self.conf["resize_max"], "version": 2}

    def compute(self, image: torch.Tensor) -> Labels:
        """Labels of a :math:`(C, H, W)` image in [0, 1]: keypoints (K, 2) x-y in its pixels,
        scores (K,), image_size (2,) = (W, H)."""
        if image.dim() != 3:
            raise ValueError(f"Expected one image (C, H, W), got {tuple(image.shape)}.")
        h, w = image.shape[-2:]
        scale, small = 1.0, image
        rmax = self.conf["resize_max"]
        if rmax and max(h, w) > rmax:
            scale = max(h, w) / rmax
            size = (max(1, round(w / scale)), max(1, round(h / scale)))
            # INTER_AREA: anti-aliased downsampling, so no aliasing corners appear.
            small = torch.from_numpy(
                cv2.resize(image.permute(1, 2, 0).cpu().numpy(), size, interpolation=cv2.INTER_AREA)
            )
            small = (
                (small[..., None] if small.dim() == 2 else small).permute(2, 0, 1).to(image.device)
            )
        out = self.adaptation(small)
        kpts = out["keypoints"]
        if small is not image:  # back to full-resolution pixels (pixel centres at integers)
            sx, sy = w / small.shape[-1], h / small.shape[-2]
            kpts = rescale_keypoints(kpts, kpts.new_tensor([sx, sy]))
        return {"keypoints": kpts, "scores": out["scores"], "image_size": torch.tensor([w, h])}

    def __call__(self, image: torch.Tensor, image_id: Optional[str] = None) -> Labels:
        """Labels of an image; cached under ``image_id`` when a cache is set and an id given."""
        if self.cache is None or image_id is None:
            return self.compute(image)
        return self.cache.get_or_compute(image_id, lambda: self.compute(image))

    def label_file(self, path: Union[str, Path], image_id: Optional[str] = None) -> Labels:
        """Labels of an image file; the file is only decoded when the cache misses."""
        image_id = str(path) if image_id is None else image_id
        if self.cache is None:
            return self.compute(load_image(path))
        return self.cache.get_or_compute(image_id, lambda: self.compute(load_image(path)))
