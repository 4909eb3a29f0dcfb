"""SIFT's difference-of-Gaussians keypoints (OpenCV), for ``TaSP(detector="dog")`` and labels.

DoG places points more precisely than TaSP's 1/8-resolution detector; TaSP's descriptors
sampled there match at RootSIFT's accuracy or better. No absolute contrast threshold: OpenCV's
default (0.04) leaves a few dozen keypoints on a dark photo, so the threshold is low and the
strongest ``max_keypoints`` by response are kept instead.
"""

from typing import Tuple

import cv2
import numpy as np
import torch

# OpenCV divides it by the 3 layers per octave; 0.004 keeps night photos detectable.
CONTRAST_THRESHOLD = 0.004
# Describe a DoG keypoint on the pyramid level where its size (OpenCV's diameter) is nearest
# this many pixels: the descriptor map's 4-px cells then see a comparable neighbourhood.
DESCRIBE_SIZE = 6.0


def detect_dog(
    image: torch.Tensor, max_keypoints: int, border: int = 0
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """DoG keypoints of a batch of images, one per position, strongest first.

    Args:
        image: :math:`(B, C, H, W)` float in [0, 1], C = 1 or 3 (averaged to gray).
        max_keypoints: at most this many per image, by DoG response; <= 0 keeps all.
        border: drop keypoints closer than this many pixels to the image edge.

    Returns:
        keypoints :math:`(B, N, 2)` x-y pixels (top-left pixel centre (0, 0), OpenCV's own
        convention), responses :math:`(B, N)`, sizes :math:`(B, N)` (OpenCV's keypoint
        diameter in pixels) and a mask :math:`(B, N)`; padded with zeros past each count.
    """
    if image.dim() != 4 or image.shape[1] not in (1, 3):
        raise ValueError(f"Expected an image of shape (B, 1 or 3, H, W), got {tuple(image.shape)}.")
    sift = cv2.SIFT_create(nfeatures=0, contrastThreshold=CONTRAST_THRESHOLD)
    gray = (image.detach().float().mean(1).clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    h, w = gray.shape[-2:]
    found = []
    for g in gray.numpy():
        kps = sift.detect(g, None)
        if kps:
            arr = np.array([(*k.pt, k.response, k.size) for k in kps], np.float32)
        else:
            arr = np.zeros((0, 4), np.float32)
        inside = (
            (arr[:, 0] >= border)
            & (arr[:, 0] <= w - 1 - border)
            & (arr[:, 1] >= border)
            & (arr[:, 1] <= h - 1 - border)
        )
        arr = arr[inside]
        arr = arr[np.argsort(-arr[:, 2], kind="stable")]
        # OpenCV repeats a point for each of its orientations: keep the first (strongest)
        _, first = np.unique(arr[:, :2], axis=0, return_index=True)
        arr = arr[np.sort(first)]
        if max_keypoints > 0:
            arr = arr[:max_keypoints]
        found.append(arr)
    n = max((len(a) for a in found), default=0)
    out = torch.zeros(len(found), n, 4)
    mask = torch.zeros(len(found), n, dtype=torch.bool)
    for i, a in enumerate(found):
        out[i, : len(a)] = torch.from_numpy(a)
        mask[i, : len(a)] = True
    out = out.to(image.device)
    return out[..., :2], out[..., 2], out[..., 3], mask.to(image.device)


def describe_levels(sizes: torch.Tensor, levels: Tuple[float, ...]) -> torch.Tensor:
    """The index into ``levels`` (image scales) that brings each DoG size nearest
    ``DESCRIBE_SIZE`` pixels, compared in log scale. Shape of ``sizes``: any."""
    levels_t = sizes.new_tensor(levels)
    scaled = sizes.clamp(min=1e-3)[..., None] * levels_t
    return (scaled.log() - np.log(DESCRIBE_SIZE)).abs().argmin(-1)
