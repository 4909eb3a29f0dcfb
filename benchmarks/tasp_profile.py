"""Where TaSP's time goes, for ``benchmarks.extract_speed --variants`` and ``--profile``.

* ``time_variants``: the network alone in every variant of ``VARIANTS`` (precision, fusion,
  memory format, threads), in one process, interleaved pass by pass.
* ``profile_stages``: torch.profiler over whole extractions: TaSP's labelled stages (network,
  each post-processing step), then the top operators.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

from .report import markdown_table
from .speed_workers import ENTRIES, tasp_weights

# --variants: name -> (TaSP conf, torch threads or None for the default)
VARIANTS = {
    "eager fp32 (reference)": ({"amp": None, "fuse": False}, None),
    "eager fp32 NCHW": ({"amp": None, "fuse": False, "channels_last": False}, None),
    "eager bf16 autocast": ({"amp": "bf16", "fuse": False}, None),
    "fused fp32": ({"amp": None}, None),
    "fused fp32 NCHW": ({"amp": None, "channels_last": False}, None),
    "fused bf16": ({"amp": "bf16"}, None),
    "int8": ({"amp": "int8"}, None),
    "fused fp32, 1 thread": ({"amp": None}, 1),
    "fused bf16, 1 thread": ({"amp": "bf16"}, 1),
}


def time_variants(args, image: np.ndarray) -> str:
    """Network-only seconds per image of every variant, interleaved in one process."""
    import torch
    from tasp_hloc.model.tasp import TaSP

    weights = tasp_weights(args)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255)
    x = torch.nn.functional.pad(x, (0, -x.shape[-1] % 8, 0, -x.shape[-2] % 8))
    threads = torch.get_num_threads()
    calls, notes = {}, {}
    for name, (conf, _) in VARIANTS.items():
        model = TaSP({"weights": weights, **conf}).eval()
        notes[name] = model.cpu_precision() if model.conf["fuse"] else "eager"
        calls[name] = model.forward_dense
    if args.compile:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        model = TaSP({"weights": weights, "amp": None, "fuse": False}).eval()
        calls["compiled fp32 (inductor, frozen)"] = torch.compile(model.forward_dense)
    times = {name: [] for name in calls}
    with torch.inference_mode():
        for name, call in calls.items():  # warm-up: fused networks, compilation
            t0 = time.perf_counter()
            call(x)
            notes.setdefault(name, f"first call {time.perf_counter() - t0:.0f} s")
        for r in range(args.repeats):
            names = list(calls)[r % len(calls) :] + list(calls)[: r % len(calls)]
            for name in names:
                torch.set_num_threads(VARIANTS.get(name, (None, None))[1] or threads)
                t0 = time.perf_counter()
                calls[name](x)
                times[name].append(time.perf_counter() - t0)
                torch.set_num_threads(threads)
    ref = statistics.median(times["eager fp32 (reference)"])
    fused = statistics.median(times["fused fp32"])
    rows = [
        [
            name,
            notes[name],
            f"{statistics.median(t):.2f}",
            f"{ref / statistics.median(t):.2f}",
            f"{fused / statistics.median(t):.2f}",
        ]
        for name, t in times.items()
    ]
    h, w = image.shape[:2]
    return (
        f"### The network alone, {w}x{h}, median of {args.repeats} interleaved passes, "
        f"{threads} threads unless said (load average {os.getloadavg()[0]:.1f})\n\n"
        + markdown_table(["variant", "runs as", "s/img", "x eager fp32", "x fused fp32"], rows)
    )


def profile_stages(args, image: np.ndarray, passes: int = 3) -> str:
    """torch.profiler over ``passes`` extractions: TaSP's labelled stages, then the top ops."""
    from torch.profiler import ProfilerActivity, profile
    from .features import load_method

    weights = tasp_weights(args)
    method = load_method(
        "tasp",
        max_keypoints=args.max_keypoints,
        device="cpu",
        weights=weights,
        **ENTRIES[args.profile][1],
    )
    method.extract(image)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(passes):
            method.extract(image)
    averages = prof.key_averages()
    stages = [e for e in averages if e.key.startswith("tasp: ")]
    total = sum(e.cpu_time_total for e in stages)
    rows = [
        [
            e.key[6:],
            f"{e.cpu_time_total / passes / 1000:.1f}",
            f"{100 * e.cpu_time_total / total:.1f}",
        ]
        for e in stages
    ]
    h, w = image.shape[:2]
    return (
        f"### torch.profiler: {args.profile} ({method.model.cpu_precision()}) on one "
        f"{w}x{h} image, mean of {passes}, {os.getloadavg()[0]:.1f} load\n\n"
        + markdown_table(["stage", "ms/img", "%"], rows)
        + "\n\n"
        + averages.table(sort_by="self_cpu_time_total", row_limit=15)
    )
