"""Training precision on CPU: bfloat16 autocast with the depthwise convolutions in float32.

Measured with ``python -m benchmarks.train_step --compile`` on 2 idle cores (release recipe:
Lite0, channels-last, stem + 3 blocks frozen, 4 pairs of 256x256): a step takes 6.2 s in
float32, 4.9 s under bf16 autocast, 5.1 s with the depthwise convolutions kept in float32 and
4.3 s with that network compiled by ``torch.compile``. bf16 halves the memory-bound batch norm
and ReLU6 passes, but oneDNN's bf16 backward of depthwise convolutions is slower than float32's
(convolution_backward 2.8 s vs 1.8 s per step); compiling fuses the casts that keeping them in
float32 adds.
"""

import torch

CPU_PRECISIONS = (None, "bf16", "bf16-dw-fp32")


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
