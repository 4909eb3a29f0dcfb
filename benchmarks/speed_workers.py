"""The entries of ``benchmarks.extract_speed`` and their timing, one worker each, taking turns.

An entry is a method, for TaSP with a mode (``ENTRIES``). Each runs in a ``benchmarks.runner``
worker loaded once per size, so its peak memory is its own (reset after the warm-up: the steady
state). ``time_entries`` runs every entry on the same images, the order rotating image by image,
so load from other processes falls on all of them alike.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from tasp_hloc.model.weights import weights_argument

from .features import METHODS
from .runner import Worker

# entry name: (method, options). TaSP modes are its "amp" conf values (see tasp_hloc.model.tasp).
ENTRIES = {
    "tasp:eager": ("tasp", {"amp": None, "fuse": False}),  # the plain modules, as before fusing
    "tasp:fp32": ("tasp", {"amp": None}),
    "tasp:bf16": ("tasp", {"amp": "bf16"}),
    "tasp:int8": ("tasp", {"amp": "int8"}),
    "tasp:default": ("tasp", {}),
    **{name: (name, {}) for name in METHODS if name != "tasp"},  # sift, orb, aliked, ...
    "tasp": ("tasp", {}),  # = tasp:default, for --methods
}


def tasp_weights(args) -> Optional[str]:
    """--tasp-weights as TaSP takes it: "auto" is TaSP's default, "none" a random network."""
    from tasp_hloc.model.tasp import TaSP

    name = args.tasp_weights
    return TaSP.default_conf["weights"] if name == "auto" else weights_argument(name)


def time_entries(args, size: int, files: List[Path], device: str) -> List[Dict]:
    """All entries at one size, interleaved; one record per entry."""
    workers = []
    allocators = ["glibc", "kept"] if args.allocator == "both" else [args.allocator]
    for name in args.entries:
        method, options = ENTRIES[name]
        if method == "tasp":
            options = {"weights": tasp_weights(args), **options}
        for allocator in allocators:
            config = {
                "method": method,
                "options": options,
                "device": device,
                "max_keypoints": args.max_keypoints,
                "warmup": str(files[0]),
                "allocator": allocator,
                "reset_peak": "after_warmup",
                "count_flops": True,
            }
            workers.append((name, allocator, Worker(config)))
    for turn, path in enumerate(path for _ in range(args.repeats) for path in files):
        live = [w for _, _, w in workers if "error" not in w.info]
        if not live:
            break
        for w in live[turn % len(live) :] + live[: turn % len(live)]:
            w.extract(path)
    records = []
    for name, allocator, w in workers:
        rec = {
            "entry": name,
            "allocator": allocator,
            "method": ENTRIES[name][0],
            "max_side": size,
            "image_size": list(np.load(files[0], mmap_mode="r").shape[:2]),
            **w.finish(),
        }
        records.append(rec)
        print(
            f"  {name} ({allocator} malloc) @ {size}: "
            + (rec.get("error") or f"{rec['time_median_s']:.2f} s/img"),
            file=sys.stderr,
        )
    return records
