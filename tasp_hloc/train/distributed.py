"""Training with several processes (``torchrun``): process-group set-up and a CPU SyncBatchNorm.

``torchrun --nproc_per_node=N -m tasp_hloc.train <config>`` starts N processes with RANK,
LOCAL_RANK and WORLD_SIZE in their environment; :func:`setup` joins them (gloo on CPU, NCCL on
CUDA). The trainer then wraps the network in DistributedDataParallel, gives each process its
share of every global batch and keeps the DIW histogram identical on all processes.

Batch norm: one process with the global batch normalises with the statistics of all its
images, so the processes must share theirs. ``torch.nn.SyncBatchNorm`` does that on GPUs only
(it refuses CPU tensors), hence :class:`CPUSyncBatchNorm`, which sums the statistics over the
processes with differentiable all-reduces (two per layer and pass: the mean, then the
variance around it).
"""

from typing import Optional

import torch
import torch.distributed as dist
from torch import nn

from ..runtime.distributed import cleanup, setup, world_size_from_env  # noqa: F401 (the trainer's)


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over the processes: the gradient of every process's copy of the sum
    is summed back (torch.distributed.nn.functional.all_reduce, which is deprecated)."""

    @staticmethod
    def forward(ctx, tensor, group):
        ctx.group = group
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def all_reduce_sum(tensor: torch.Tensor, group=None) -> torch.Tensor:
    return _AllReduceSum.apply(tensor, group)


class CPUSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the images of all processes.

    Same parameters, buffers and state-dict keys as ``nn.BatchNorm2d``; in eval mode, or with
    no ``process_group``, it is exactly ``nn.BatchNorm2d``. Running statistics are updated with
    the global mean and unbiased variance, as one process with the global batch would.
    """

    process_group = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.process_group is None:
            return super().forward(x)
        c = x.shape[1]
        dims = [0, 2, 3]
        count = x.new_full((1,), x.numel() // c)
        stats = all_reduce_sum(torch.cat([x.sum(dims), count]), self.process_group)
        n = stats[c]
        mean = stats[:c] / n
        centred = x - mean.view(1, c, 1, 1)
        var = all_reduce_sum((centred * centred).sum(dims), self.process_group) / n
        y = centred * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                unbiased = var * (n / (n - 1).clamp(min=1))
                self.running_mean.mul_(1 - f).add_(f * mean)
                self.running_var.mul_(1 - f).add_(f * unbiased)
        return y


def convert_sync_batchnorm(
    module: nn.Module, device: torch.device, group: Optional["dist.ProcessGroup"] = None
) -> nn.Module:
    """Batch norm layers synchronised over ``group``: torch's SyncBatchNorm on CUDA,
    :class:`CPUSyncBatchNorm` on CPU. The parameters and buffers are the same tensors."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module, group)
    return _convert_cpu(module, group)


def _convert_cpu(module: nn.Module, group) -> nn.Module:
    out = module
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, CPUSyncBatchNorm):
        out = CPUSyncBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    if isinstance(out, CPUSyncBatchNorm):
        out.process_group = group if group is not None else dist.group.WORLD
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu(child, group))
    return out
