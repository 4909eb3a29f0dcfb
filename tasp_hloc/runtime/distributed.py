"""Joining the processes that ``torchrun`` starts (training, sharded extraction and matching).

``torchrun --nproc_per_node=N ...`` starts N processes with RANK, LOCAL_RANK and WORLD_SIZE in
their environment (several machines: ``--nnodes``, ``--rdzv-endpoint``); :func:`setup` joins
them: gloo on CPU, NCCL on CUDA, one GPU per process.
"""

import os
from typing import Tuple

import torch
import torch.distributed as dist


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: torch.device) -> Tuple[int, int, torch.device, bool]:
    """Join the process group described by torchrun's environment variables, if any.

    Returns ``(rank, world_size, device, created)``: on CUDA the device becomes this process's
    GPU, ``cuda:LOCAL_RANK`` (whatever index ``device`` names); ``created`` says whether this
    call initialised the group (and :func:`cleanup` should close it).
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), device, False
    world = world_size_from_env()
    if world <= 1:
        return 0, 1, device, False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed.")
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), device, True


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
