"""Attach pseudo-ground-truth keypoint labels of image 0 to pair samples (in data workers)."""

import hashlib
from typing import Dict, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from ..labels import Labeler, keypoints_to_label_map


def transform_keypoints(kpts: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Apply a 3x3 projective map to (K, 2) pixel coordinates."""
    h = torch.cat([kpts, torch.ones_like(kpts[:, :1])], 1) @ A.T.to(kpts)
    return h[:, :2] / h[:, 2:].clamp(min=1e-12)


class LabeledPairs(Dataset):
    """Adds ``labels0`` (H/8 x W/8 int64, 64 = no keypoint) to every sample of ``pairs``.

    Labels come from homographic adaptation (``tasp_hloc.labels.Labeler``) and are cached on
    disk. When a sample names its source photo (``source0``, with ``source0_to_image0`` the 3x3
    map from source pixels to image-0 pixels), the whole photo is labelled once and its
    keypoints are moved into each crop: this is what makes labels cheap across epochs.
    Otherwise image 0 itself is labelled, cached under a hash of its pixels, so a dataset that
    draws the same crops every epoch (seeded) pays once.
    """

    def __init__(self, pairs: Dataset, labeler_conf: Dict, cache_dir: Optional[str]):
        self.pairs = pairs
        self.labeler_conf = labeler_conf
        self.cache_dir = cache_dir
        self._labeler = None  # built lazily: one per worker process

    @property
    def labeler(self) -> Labeler:
        if self._labeler is None:
            self._labeler = Labeler(self.labeler_conf, cache_dir=self.cache_dir)
        return self._labeler

    def __len__(self):
        return len(self.pairs)

    def set_epoch(self, epoch: int):
        if hasattr(self.pairs, "set_epoch"):
            self.pairs.set_epoch(epoch)

    def __getitem__(self, index: int) -> Dict:
        sample = self.pairs[index]
        image0 = sample["image0"]
        h, w = image0.shape[-2:]
        if sample.get("source0"):
            labels = self.labeler.label_file(sample["source0"])
            kpts = transform_keypoints(labels["keypoints"], sample["source0_to_image0"])
        else:
            pixels = (image0 * 255).round().to(torch.uint8).numpy()
            key = "crop-" + hashlib.sha1(np.ascontiguousarray(pixels).tobytes()).hexdigest()
            labels = self.labeler(image0, image_id=key)
            kpts = labels["keypoints"]
        keep = (
            (kpts[:, 0] > -0.5)
            & (kpts[:, 0] < w - 0.5)
            & (kpts[:, 1] > -0.5)
            & (kpts[:, 1] < h - 0.5)
        )
        kpts, scores = kpts[keep], labels["scores"][keep]
        xy = kpts.round().long()
        on_content = sample["valid0"][xy[:, 1], xy[:, 0]]
        sample["labels0"] = keypoints_to_label_map(kpts[on_content], (h, w), scores[on_content])
        return {k: v for k, v in sample.items() if k not in ("source0", "source0_to_image0")}
