"""Where TaSP's time goes, on the first test image at one size:

    python -m benchmarks.speed variants [--compile] [--repeats 2] [--size 1024]
        [--images DIR | --synthetic] [--tasp-weights auto]
    python -m benchmarks.speed profile [ENTRY] [--size 1024] [--images DIR | --synthetic]
        [--tasp-weights auto] [--max-keypoints 4096]

* ``variants`` (``time_variants``): the network alone in every variant of ``VARIANTS``
  (precision, fusion, memory format, threads; ``--compile`` adds torch.compile with inductor and
  frozen weights), in one process, interleaved pass by pass.
* ``profile`` (``profile_stages``): torch.profiler over whole extractions of one TaSP entry of
  ``extract``'s (default ``tasp:default``): TaSP's labelled stages (network, each
  post-processing step), then the top operators.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Optional, Sequence

import numpy as np

from ..features import resize_max_side, to_tensor
from ..report import markdown_table
from .extract import ENTRIES, add_image_arguments, source_images, tasp_weights

TASP_ENTRIES = [e for e, (method, _) in ENTRIES.items() if method == "tasp"]

# variants: name -> (TaSP conf, torch threads or None for the default)
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
    x = to_tensor(image, "cpu")
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
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from ..features import load_method

    weights = tasp_weights(args)
    method = load_method(
        "tasp",
        max_keypoints=args.max_keypoints,
        device="cpu",
        weights=weights,
        **ENTRIES[args.entry][1],
    )
    method.extract(image)  # warm-up
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
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
        f"### torch.profiler: {args.entry} ({method.model.cpu_precision()}) on one "
        f"{w}x{h} image, mean of {passes}, {os.getloadavg()[0]:.1f} load\n\n"
        + markdown_table(["stage", "ms/img", "%"], rows)
        + "\n\n"
        + averages.table(sort_by="self_cpu_time_total", row_limit=15)
    )


def parse_args(command: str, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The options of ``variants`` or ``profile`` (``command``)."""
    p = argparse.ArgumentParser(
        prog=f"python -m benchmarks.speed {command}",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if command == "profile":
        p.add_argument(
            "entry",
            nargs="?",
            default="tasp:default",
            choices=TASP_ENTRIES,
            help="the TaSP entry profiled (default tasp:default)",
        )
        p.add_argument("--max-keypoints", type=int, default=4096)
    else:
        p.add_argument("--repeats", type=int, default=2, help="interleaved passes")
        p.add_argument(
            "--compile", action="store_true", help="add torch.compile (inductor, frozen weights)"
        )
    p.add_argument("--size", type=int, default=1024, help="longer side of the image")
    add_image_arguments(p, n_images=False)
    p.add_argument("--tasp-weights", default="auto", help="as in benchmarks.compare")
    return p.parse_args(argv)


def run(command: str, argv: Optional[Sequence[str]] = None) -> int:
    """``variants`` or ``profile`` on the first test image at ``--size``."""
    args = parse_args(command, argv)
    image = resize_max_side(source_images(args, n=1)[0], args.size)[0]
    print(profile_stages(args, image) if command == "profile" else time_variants(args, image))
    return 0


def variants(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m benchmarks.speed variants``."""
    return run("variants", argv)


def profile(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m benchmarks.speed profile``."""
    return run("profile", argv)
