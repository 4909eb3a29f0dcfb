"""Extraction speed and peak memory of TaSP in each CPU mode, OpenCV SIFT and ALIKED: one run,
one table, the modes interleaved image by image.

    python -m benchmarks.speed extract [--sizes 1024 1600] [--entries tasp:fp32 tasp:bf16 ...]
        [--images DIR | --synthetic] [--n-images 4] [--repeats 2]
        [--allocator shipped|glibc|kept|both]
        [--accuracy fp32=FP32.json bf16=BF16.json ...] [--device auto] [--out speed.json]

An entry is a method, for TaSP with a mode (``ENTRIES``). Every entry is a ``benchmarks.runner``
worker process of its own, loaded once per size, so its peak memory is its own. The workers take
turns: for each repeat and each image, every worker extracts that image in turn (the order
rotates), so load from other processes falls on all of them alike; only one worker runs at a
time. Reported per entry and size: median seconds per image, images per second (1 / median),
peak RSS (the process' high-water mark, reset after loading and warm-up: the steady state) and
the part extraction adds, CUDA peak memory on a GPU, mean keypoints.
``--accuracy MODE=REPORT.json`` adds the accuracy deltas of each TaSP mode against ``fp32``
from ``benchmarks.compare`` reports of the same harness (MMA@1/3 px, strecha_dev AUC@5/10/20).
See docs/results.md "Speed".
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from tasp_hloc.model.weights import weights_argument
from tasp_hloc.runtime.device import resolve_device

from ..datasets import IMAGE_SUFFIXES, default_data_root, read_rgb
from ..features import METHODS, resize_max_side
from ..hardware import cpu_description, environment, load_average
from ..report import ACCURACY_KEYS, render_speed
from ..runner import Worker

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

DEFAULT_IMAGES = default_data_root() / "eval/strecha_dev"
DEFAULT_ENTRIES = [
    "tasp:eager",
    "tasp:fp32",
    "tasp:bf16",
    "tasp:int8",
    "tasp:default",
    "sift",
    "aliked",
]


def add_image_arguments(p: argparse.ArgumentParser, n_images: bool = True) -> None:
    """The test images' options, shared by the subcommands (``source_images`` reads them)."""
    p.add_argument(
        "--images",
        type=Path,
        default=DEFAULT_IMAGES,
        help="folder of test images, searched recursively (default: "
        "$TASP_DATA/eval/strecha_dev, the first image of each scene first)",
    )
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="use generated 4:3 texture images instead of --images (runs anywhere)",
    )
    if n_images:
        p.add_argument("--n-images", type=int, default=4)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.speed extract",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 1600])
    p.add_argument(
        "--entries", "--methods", nargs="+", default=DEFAULT_ENTRIES, choices=list(ENTRIES)
    )
    add_image_arguments(p)
    p.add_argument("--repeats", type=int, default=2, help="passes over the images")
    p.add_argument("--max-keypoints", type=int, default=4096)
    p.add_argument("--tasp-weights", default="auto", help="as in benchmarks.compare")
    p.add_argument(
        "--allocator",
        choices=["shipped", "glibc", "kept", "both"],
        default="shipped",
        help="shipped (default): nothing set, each as its package ships (TaSP keeps freed "
        "memory from its first CPU forward, tasp_hloc.runtime.allocator; the peers run with the C "
        "library's default); "
        "glibc / kept: every entry so; both: each entry twice, interleaved",
    )
    p.add_argument(
        "--accuracy",
        nargs="*",
        default=[],
        metavar="MODE=REPORT.json",
        help="benchmarks.compare reports of TaSP per mode, e.g. fp32=a.json bf16=b.json",
    )
    p.add_argument(
        "--accuracy-reference",
        default="fp32",
        metavar="MODE",
        help="the --accuracy mode the others are compared with (default fp32)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", type=Path, default=None, help="also save the records as JSON")
    return p.parse_args(argv)


def source_images(args, n: Optional[int] = None) -> List[np.ndarray]:
    """The first ``n`` (default ``--n-images``) test images as H x W x 3 uint8 RGB (before
    resizing)."""
    n = args.n_images if n is None else n
    if args.synthetic:
        import cv2

        rng = np.random.default_rng(0)
        return [
            cv2.resize(
                rng.uniform(0, 255, (60, 80, 3)).astype(np.uint8),
                (1296, 972),
                interpolation=cv2.INTER_CUBIC,
            )
            for _ in range(n)
        ]
    if not args.images.is_dir():
        raise SystemExit(f"No image folder {args.images}: pass --images DIR or --synthetic.")
    files = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"No images in {args.images}: pass --images DIR or --synthetic.")
    by_folder: Dict[Path, List[Path]] = {}
    for f in files:
        by_folder.setdefault(f.parent, []).append(f)
    # folders interleaved: the first image of every scene, then the second, ...
    order = [f for group in zip(*[iter(v) for v in by_folder.values()]) for f in group]
    order += [f for f in files if f not in order]
    return [read_rgb(p) for p in order[:n]]


def accuracy_deltas(specs: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """{mode: {metric: value in points}} from ``MODE=compare_report.json`` specs."""
    out = {}
    for spec in specs:
        mode, _, path = spec.partition("=")
        tasp = json.loads(Path(path).read_text())["methods"]["tasp"]
        values = {}
        for label, keys in ACCURACY_KEYS:
            value = tasp
            for key in keys:
                value = value.get(key, {}) if isinstance(value, dict) else {}
            values[label] = 100 * value if isinstance(value, (int, float)) else None
        out[mode] = values
    return out


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    images = source_images(args)
    env = environment(device)
    env["cpu_model"] = cpu_description()
    accuracy = accuracy_deltas(args.accuracy)
    records = []
    with tempfile.TemporaryDirectory(prefix="tasp-speed-") as tmp:
        for size in args.sizes:
            files = []
            for k, image in enumerate(images):
                files.append(Path(tmp) / f"{size}_{k:03d}.npy")
                np.save(files[-1], resize_max_side(image, size)[0])
            records += time_entries(args, size, files, device)
    env["load_average_at_end"] = load_average()
    first_size = resize_max_side(images[0], args.sizes[0])[0].shape[:2]
    print(render_speed(args, env, records, accuracy, len(images), first_size))
    if args.out:
        args.out.write_text(
            json.dumps({"environment": env, "records": records, "accuracy": accuracy}, indent=1)
        )
    return 0
