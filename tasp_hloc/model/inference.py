"""Fast CPU inference of the TaSP network: BatchNorm folded, oneDNN fused kernels, bf16, int8.

The eager network spends more time in BatchNorm, ReLU6 and residual adds (each a full pass
over feature maps of up to 1152 channels at stride 4) than in its convolutions. For inference:

* every BatchNorm is folded into the convolution before it (exact in float32 up to rounding);
* each convolution runs as one oneDNN call with its activation and, for the last 1x1 of an
  MBConv block, the residual add fused in (``torch.ops.mkldnn._convolution_pointwise``, the
  kernel that ``torch.compile`` emits on CPU), in channels-last layout;
* ``"bf16"``: the same, with bfloat16 weights and activations (float32 accumulation) when the
  CPU has native bf16 (AVX512-BF16 or AMX), else float32;
* ``"int8"``: per-channel int8 weights, per-tensor uint8 activations calibrated on the bundled,
  licence-clean demo photos (``tasp_hloc/assets/demo``), x86/fbgemm kernels.

Where oneDNN is missing, the folded convolutions run through ``F.conv2d`` (same numbers).
``tasp.TaSP`` builds these on first use in eval mode and rebuilds them when its weights change.
"""

import functools
import warnings
from pathlib import Path
from typing import Dict, FrozenSet, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..assets import DEMO_DIR
from .backbone import ConvBNAct, same_padding

PRECISIONS = ("fp32", "bf16", "int8")
# name: (oneDNN post-op, its scalars, the eager function used without oneDNN)
ACTIVATIONS = {
    nn.Identity: ("none", [], None),
    nn.ReLU: ("relu", [], F.relu_),
    nn.ReLU6: ("hardtanh", [0.0, 6.0], lambda x: x.clamp_(0.0, 6.0)),
    nn.SiLU: ("swish", [], F.silu),
}


@functools.lru_cache(maxsize=None)
def cpu_flags() -> FrozenSet[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read, e.g. macOS:
    then only fp32 runs)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_onednn() -> bool:
    """oneDNN (mkldnn) with the fused convolution kernels is available in this torch build."""
    return torch.backends.mkldnn.is_available() and hasattr(
        torch.ops.mkldnn, "_convolution_pointwise"
    )


def native_bf16() -> bool:
    """bf16 dot products in hardware (AVX512-BF16 or AMX): only then is bf16 faster than fp32."""
    return has_onednn() and bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def native_int8() -> bool:
    """int8 dot products in hardware (VNNI or AMX) and a quantized engine in this torch."""
    engines = torch.backends.quantized.supported_engines
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags()) and (
        "x86" in engines or "fbgemm" in engines
    )


def resolve_precision(requested: str) -> str:
    """The precision that will run on this CPU: ``requested``, or "fp32" (with a warning) where
    the hardware lacks it (oneDNN has no bf16 convolution without AVX-512 or AVX-NE-CONVERT;
    int8 without VNNI gains too little for its calibration and its accuracy cost:
    docs/results.md "Speed")."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}.")
    available = {"fp32": True, "bf16": native_bf16(), "int8": native_int8()}[requested]
    if not available:
        warnings.warn(
            f"This CPU has no native {requested} support (flags: avx512_bf16/amx_bf16 "
            f"for bf16, avx512_vnni/avx_vnni/amx_int8 for int8): TaSP runs in fp32."
        )
        return "fp32"
    return requested


def fold_batchnorm(conv: nn.Conv2d, bn: Optional[nn.BatchNorm2d]):
    """Weight and bias of ``bn(conv(x))`` as one convolution (float32).

    Returns:
        weight :math:`(C_{out}, C_{in}/g, k, k)` and bias :math:`(C_{out})`.
    """
    weight = conv.weight.detach().float()
    bias = (
        conv.bias.detach().float()
        if conv.bias is not None
        else torch.zeros(weight.shape[0], device=weight.device)
    )
    if bn is None:
        return weight, bias
    scale = bn.weight.detach().float() / torch.sqrt(bn.running_var.float() + bn.eps)
    return (
        weight * scale.view(-1, 1, 1, 1),
        (bias - bn.running_mean.float()) * scale + bn.bias.detach().float(),
    )


class FusedConv:
    """A convolution with its BatchNorm folded in and its activation / residual add fused.

    Args:
        weight, bias: folded float32 parameters (see ``fold_batchnorm``).
        stride, groups: as in ``nn.Conv2d``; padding is TensorFlow "SAME", as in the trunk.
        act: the class of the activation, a key of ``ACTIVATIONS``.
        dtype: float32 or bfloat16.
        onednn: run through oneDNN's fused kernel, else ``F.conv2d`` and eager ops.
        memory_format: of the weights (the layout of the input decides oneDNN's).
    """

    def __init__(
        self,
        weight,
        bias,
        stride: int,
        groups: int,
        act: type,
        dtype: torch.dtype,
        onednn: bool,
        memory_format=torch.channels_last,
    ):
        self.attr, self.scalars, self.eager_act = ACTIVATIONS[act]
        self.weight = weight.to(dtype).contiguous(memory_format=memory_format)
        self.bias = bias.to(dtype)
        self.stride, self.groups, self.kernel = stride, groups, weight.shape[-1]
        self.onednn = onednn
        self.observer = None

    @classmethod
    def from_module(
        cls, module: nn.Module, dtype: torch.dtype, onednn: bool, memory_format=torch.channels_last
    ) -> "FusedConv":
        if isinstance(module, ConvBNAct):
            conv, bn, act = module.conv, module.bn, type(module.act)
        else:
            conv, bn, act = module, None, nn.Identity
        weight, bias = fold_batchnorm(conv, bn)
        return cls(weight, bias, conv.stride[0], conv.groups, act, dtype, onednn, memory_format)

    def pad(self, x: torch.Tensor):
        """Apply the asymmetric part of "SAME" padding; return x and the symmetric rest."""
        if self.stride == 1:
            return x, self.kernel // 2
        (top, bottom), (left, right) = (
            same_padding(s, self.kernel, self.stride) for s in x.shape[-2:]
        )
        return F.pad(x, (left, right, top, bottom)), 0

    def __call__(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        x, p = self.pad(x)
        args = ([p, p], [self.stride] * 2, [1, 1], self.groups)
        if self.onednn and residual is None:
            y = torch.ops.mkldnn._convolution_pointwise(
                x, self.weight, self.bias, *args, self.attr, self.scalars, ""
            )
        elif self.onednn and self.attr == "none":
            y = torch.ops.mkldnn._convolution_pointwise.binary(
                x, residual, self.weight, self.bias, *args, "add", None, None, [], None
            )
        else:
            y = F.conv2d(x, self.weight, self.bias, self.stride, p, 1, self.groups)
            y = y if self.eager_act is None else self.eager_act(y)
            y = y if residual is None else y.add_(residual)
        if self.observer is not None:  # int8 calibration
            self.observer(self, y, residual)
        return y


class FusedTaSPNet:
    """The dense part of a ``TaSP`` (trunk + heads) for inference, folded and fused.

    Args:
        model: an eval-mode ``tasp.TaSP``; its weights are copied (later changes need a rebuild).
        precision: "fp32" or "bf16" (the caller checks the hardware, see ``resolve_precision``).
        channels_last: NHWC activations (oneDNN's fastest layout here), else NCHW.

    Call: image :math:`(B, 3, H, W)` in [0, 1], H and W multiples of 8 -> ``logits``
    :math:`(B, 65, H/8, W/8)` and ``descriptors_dense`` :math:`(B, D, H/4, W/4)`, both float32,
    descriptors unnormalised (as the heads output them).
    """

    def __init__(self, model: nn.Module, precision: str = "fp32", channels_last: bool = True):
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"FusedTaSPNet runs fp32 or bf16, got {precision!r}.")
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        onednn = has_onednn() and next(model.parameters()).device.type == "cpu"
        trunk = model.backbone
        self.mean, self.std = trunk.mean.float(), trunk.std.float()

        def fuse(module):
            return FusedConv.from_module(module, self.dtype, onednn, self.memory_format)

        self.stem = fuse(trunk.stem)
        self.blocks = [
            (
                fuse(b.expand) if b.expand is not None else None,
                fuse(b.depthwise),
                b.se,
                fuse(b.project),
                b.residual,
            )
            for b in trunk.blocks
        ]
        self.detector = fuse(model.detector_head)
        self.descriptor = [fuse(m) for m in model.descriptor_head if not isinstance(m, nn.ReLU)]

    def trunk(self, image: torch.Tensor) -> List[torch.Tensor]:
        """Outputs of the last two kept blocks (inputs of the detector and descriptor heads)."""
        x = ((image - self.mean) / self.std).to(self.dtype)
        x = self.stem(x.contiguous(memory_format=self.memory_format))
        previous = x
        for expand, depthwise, se, project, residual in self.blocks:
            y = depthwise(x if expand is None else expand(x))
            if se is not None:  # squeeze-excite (B0 only): on pooled vectors, in float32
                y = y * torch.sigmoid(
                    se.expand(se.act(se.reduce(y.float().mean((2, 3), keepdim=True))))
                ).to(y.dtype)
            previous, x = x, project(y, x if residual else None)
        return [previous, x]

    def describe(self, last: torch.Tensor) -> torch.Tensor:
        """The descriptor head on the trunk's last output: float32, unnormalised."""
        for conv in self.descriptor:
            last = conv(last)
        return last.float()

    def __call__(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        before_last, last = self.trunk(image)
        return {
            "logits": self.detector(before_last).float(),
            "descriptors_dense": self.describe(last),
        }


def calibration_images(size: int = 480) -> List[torch.Tensor]:
    """Licence-clean photos for int8 calibration: the bundled demo images (OpenCV samples,
    Apache-2.0/BSD-3, see ``assets/demo/ATTRIBUTION.md``), gray and with two fixed colour casts,
    longer side ``size``. Returns :math:`(1, 3, H, W)` tensors in [0, 1], H, W multiples of 8."""
    import cv2

    out = []
    for name in ("box.png", "box_in_scene.png"):
        gray = cv2.imread(str(DEMO_DIR / name), cv2.IMREAD_GRAYSCALE)
        scale = size / max(gray.shape)
        h, w = (round(s * scale) // 8 * 8 for s in gray.shape)
        gray = torch.from_numpy(cv2.resize(gray, (w, h), interpolation=cv2.INTER_LINEAR))
        gray = gray.float().div(255)[None, None].expand(-1, 3, -1, -1)
        for cast in ((1.0, 1.0, 1.0), (1.15, 1.0, 0.8), (0.8, 0.95, 1.2)):
            out.append((gray * torch.tensor(cast).view(1, 3, 1, 1)).clamp(0, 1))
    return out


class QuantizedTaSPNet:
    """The dense network with int8 convolutions (post-training quantization, x86 kernels).

    Weights: symmetric per-output-channel int8. Activations: per-tensor affine uint8 with the
    min / max seen on ``images`` by the float32 ``FusedTaSPNet``; ReLU6 outputs use the fixed
    range [0, 6], so the requantization saturates exactly where ReLU6 clamps. EfficientNet-Lite0
    trunks only (B0's squeeze-excite is not quantized here).

    Args:
        model: an eval-mode ``tasp.TaSP`` on CPU.
        images: calibration images (default ``calibration_images()``).
    """

    def __init__(self, model: nn.Module, images: Optional[Sequence[torch.Tensor]] = None):
        if any(b.se is not None for b in model.backbone.blocks):
            raise NotImplementedError("int8 is implemented for efficientnet_lite0 trunks only.")
        self.float_net = net = FusedTaSPNet(model, "fp32")
        self.convs = [
            net.stem,
            *[c for b in net.blocks for c in (b[0], b[1], b[3]) if c],
            net.detector,
            *net.descriptor,
        ]
        # per convolution: the range of its output and, with a residual, of the sum
        ranges = {id(c): [[0.0, 0.0], [0.0, 0.0]] for c in self.convs}

        def record(conv, y, residual):
            for r, v in zip(ranges[id(conv)], (y if residual is None else y - residual, y)):
                r[0], r[1] = min(r[0], float(v.min())), max(r[1], float(v.max()))

        with torch.inference_mode():
            for conv in self.convs:
                conv.observer = record
            try:
                for image in images if images is not None else calibration_images():
                    net(image)
            finally:
                for conv in self.convs:
                    conv.observer = None
        engine = "x86" if "x86" in torch.backends.quantized.supported_engines else "fbgemm"
        previous, torch.backends.quantized.engine = torch.backends.quantized.engine, engine
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # quantized tensors' deprecation
                self.packed = {id(c): self._pack(c, ranges[id(c)]) for c in self.convs}
        finally:
            torch.backends.quantized.engine = previous
        self.ranges = ranges
        # the input's exact range: Lite0's (p - 127) / 128 for p in 0..255 maps to p itself
        low, high = float((-net.mean / net.std).min()), float(((1 - net.mean) / net.std).max())
        self.input_qparams = ((high - low) / 255, int(round(-low * 255 / (high - low))))

    @staticmethod
    def _qparams(conv: FusedConv, value_range):
        """uint8 step and zero point for a range; ReLU6 outputs within [0, 6] (saturation is
        the clamp)."""
        low, high = value_range
        if conv.attr == "hardtanh":
            low, high = 0.0, min(max(high, 1e-3), 6.0)
        step = max(high - low, 1e-6) / 255
        return step, int(min(max(round(-low / step), 0), 255))

    @classmethod
    def _pack(cls, conv: FusedConv, value_ranges):
        weight = conv.weight.float().contiguous()
        scale = weight.abs().amax((1, 2, 3)).clamp(min=1e-8) / 127
        qweight = torch.quantize_per_channel(
            weight, scale.double(), torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8
        )
        pad = conv.kernel // 2 if conv.stride == 1 else 0
        packed = torch.ops.quantized.conv2d_prepack(
            qweight, conv.bias.float(), [conv.stride] * 2, [pad, pad], [1, 1], conv.groups
        )
        return (packed, *cls._qparams(conv, value_ranges[0]), *cls._qparams(conv, value_ranges[1]))

    def _conv(self, conv: FusedConv, x, residual=None):
        packed, step, zero, sum_step, sum_zero = self.packed[id(conv)]
        x, _ = conv.pad(x)
        y = torch.ops.quantized.conv2d(x, packed, step, zero)
        if residual is None:
            return y
        return torch.ops.quantized.add(y, residual, sum_step, sum_zero)

    def __call__(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        net = self.float_net
        x = ((image - net.mean) / net.std).contiguous(memory_format=torch.channels_last)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            x = torch.quantize_per_tensor(x, *self.input_qparams, torch.quint8)
        x = self._conv(net.stem, x)
        previous = x
        for expand, depthwise, _, project, residual in net.blocks:
            y = self._conv(depthwise, x if expand is None else self._conv(expand, x))
            previous, x = x, self._conv(project, y, x if residual else None)
        descriptors = x
        for conv in net.descriptor:
            descriptors = self._conv(conv, descriptors)
        return {
            "logits": self._conv(net.detector, previous).dequantize(),
            "descriptors_dense": descriptors.dequantize(),
        }
