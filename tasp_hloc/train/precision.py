"""Training precision on CPU: bfloat16 autocast with the depthwise convolutions in float32.

oneDNN's bf16 backward of depthwise convolutions is slower than float32's, while the rest of a
step gains from bf16, so the depthwise convolutions stay in float32; ``torch.compile`` adds
nothing there. Equal-budget runs of each gave the same loss curve and benchmark figures, so
``"auto"`` (the default) takes it on CPUs with native bf16. Measured (``python -m
experiments.train_step --compile --allocator both``): docs/results.md "Training speed".
"""

import torch

from ..model.inference import native_bf16

CPU_PRECISIONS = ("auto", None, "bf16", "bf16-dw-fp32")


def resolve_cpu_precision(precision):
    """``"auto"`` -> ``"bf16-dw-fp32"`` where the CPU has native bf16, else ``None`` (float32);
    any other value as given."""
    if precision == "auto":
        return "bf16-dw-fp32" if native_bf16() else None
    return precision


def keep_depthwise_fp32(model: torch.nn.Module) -> None:
    """Run every depthwise convolution of ``model`` in float32 under CPU autocast; the other
    layers keep autocast's precision. Patches the instances' ``forward`` (no state_dict change)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels:
            forward = m.forward

            def fp32_forward(x, forward=forward):
                with torch.autocast("cpu", enabled=False):
                    return forward(x.float())

            m.forward = fp32_forward
