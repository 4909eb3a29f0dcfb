"""Photometric augmentation of one image, including a strong day-to-night change.

Localization queries at night are darker (gamma, low gain), tinted by artificial light (sodium
lamps: orange), noisier (high ISO) and blurrier (long exposure). ``night`` reproduces those
four effects together; the other effects are the usual mild ones.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..options import with_defaults


class PhotometricAugmentation:
    """Random photometric changes of an H x W x 3 image in [0, 1] (float32 or uint8 in).

    Every op draws from the ``rng`` given at call time, so a seeded rng reproduces the result.
    """

    default_conf = {
        "enable": True,
        "p_night": 0.3,  # probability of the strong day-to-night change
        "night_gamma": [1.5, 3.0],  # I^gamma darkens mid-tones much more than highlights
        "night_gain": [0.15, 0.5],
        "night_tint": 0.3,  # how far towards the orange of sodium lamps (0 = none)
        "brightness": 0.2,  # additive, +/-
        "contrast": [0.7, 1.3],
        "gamma": [0.7, 1.4],
        "saturation": [0.6, 1.4],
        "colour_shift": 0.08,  # per-channel gain +/-
        "p_grayscale": 0.05,
        "noise_std": [0.0, 0.03],  # Gaussian read noise
        "night_noise_std": [0.02, 0.06],
        "p_blur": 0.3,
        "blur_sigma": [0.3, 1.5],
        "p_motion_blur": 0.1,
        "motion_blur_max": 7,
    }

    def __init__(self, conf: dict | None = None):

        self.conf = with_defaults(self.default_conf, conf, "PhotometricAugmentation")

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Args: image H x W x 3 (uint8 or float in [0, 1]). Returns H x W x 3 float32 in [0, 1]."""
        c = self.conf
        img = (
            image.astype(np.float32) / 255.0
            if image.dtype == np.uint8
            else image.astype(np.float32)
        )
        if not c["enable"]:
            return img
        u = lambda r: float(rng.uniform(r[0], r[1]))  # noqa: E731

        # mild colour / tone changes
        img = img * (1.0 + rng.uniform(-c["colour_shift"], c["colour_shift"], 3)).astype(np.float32)
        gray = img.mean(-1, keepdims=True)
        img = gray + (img - gray) * u(c["saturation"])
        img = (img - 0.5) * u(c["contrast"]) + 0.5 + rng.uniform(-c["brightness"], c["brightness"])
        img = np.clip(img, 0.0, 1.0) ** u(c["gamma"])
        if rng.random() < c["p_grayscale"]:
            img = np.repeat(img.mean(-1, keepdims=True), 3, -1)

        night = rng.random() < c["p_night"]
        if night:
            img = np.clip(img, 0.0, 1.0) ** u(c["night_gamma"]) * u(c["night_gain"])
            a = rng.uniform(0.0, c["night_tint"])
            tint = (1.0 - a) + a * np.array([1.0, 0.75, 0.4], np.float32)  # towards orange
            img = img * tint.astype(np.float32)

        if rng.random() < c["p_blur"]:
            img = cv2.GaussianBlur(img, (0, 0), u(c["blur_sigma"]))
        if rng.random() < c["p_motion_blur"]:
            k = int(rng.integers(3, max(4, c["motion_blur_max"] + 1)))
            kernel = np.zeros((k, k), np.float32)
            kernel[k // 2, :] = 1.0 / k
            angle = rng.uniform(0, 180)
            rot = cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), angle, 1.0)
            kernel = cv2.warpAffine(kernel, rot, (k, k))
            kernel /= max(kernel.sum(), 1e-6)
            img = cv2.filter2D(img, -1, kernel)
        std = u(c["night_noise_std"] if night else c["noise_std"])
        if std > 0:
            img = img + rng.normal(0.0, std, img.shape).astype(np.float32)
        return np.clip(img, 0.0, 1.0).astype(np.float32)
