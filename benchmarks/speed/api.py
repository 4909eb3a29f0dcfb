"""Seconds per image as users run it: TaSP's Python API in a plain process, the command line,
and the peers as their packages ship; one run, the entries taking turns.

    python -m benchmarks.speed api [--images DIR | --synthetic] [--n-images 4] [--size 1024]
        [--entries api cli sift xfeat] [--repeats 2] [--out api.json]

* ``api``: a fresh ``python`` process runs the README's example, ``TaSP({"max_keypoints": K})
  .eval().extract(load_image(path), resize=SIZE)``, with nothing else set; the first image is
  warm-up, the median of the others is reported.
* ``cli``: ``python -m tasp_hloc extract`` over the N images and over the first one alone; per
  image = (wall(N) - wall(1)) / (N - 1), so start-up, model loading and the first image's
  warm-up cancel out. Decoding and writing the feature file are included (they overlap the
  network in the command).
* ``sift``, ``xfeat``, ``aliked``: ``benchmarks.features``' wrappers in a plain process, the
  first image warm-up, as in ``benchmarks.compare``.

Every entry sees the same images, resized beforehand to ``--size`` on the longer side, so no
entry pays for a resize the others skip.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import cv2

from ..features import resize_max_side
from ..hardware import cpu_description
from ..report import markdown_table, num
from .extract import add_image_arguments, source_images

ENTRY_LABELS = {
    "api": "TaSP().extract, plain Python process",
    "cli": "python -m tasp_hloc extract",
    "sift": "OpenCV SIFT (benchmarks.features)",
    "xfeat": "XFeat (benchmarks.features)",
    "aliked": "ALIKED-N16 (benchmarks.features)",
}

# A plain process per entry: the image paths as argv, per-image seconds as JSON on stdout.
API_CODE = """
import json, sys, time
from tasp_hloc import TaSP, load_image
size, k = int(sys.argv[1]), int(sys.argv[2])
model = TaSP({"max_keypoints": k}).eval()
times = []
for path in sys.argv[3:]:
    image = load_image(path)
    t = time.perf_counter()
    model.extract(image, resize=size)
    times.append(time.perf_counter() - t)
print(json.dumps(times))
"""
PEER_CODE = """
import json, sys, time
from benchmarks.datasets import read_rgb
from benchmarks.features import load_method
method = load_method(sys.argv[1], int(sys.argv[2]))
times = []
for path in sys.argv[3:]:
    image = read_rgb(path)
    t = time.perf_counter()
    method.extract(image)
    times.append(time.perf_counter() - t)
print(json.dumps(times))
"""


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.speed api",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_image_arguments(p)
    p.add_argument("--size", type=int, default=1024, help="longer side of every image")
    p.add_argument("--max-keypoints", type=int, default=4096)
    p.add_argument("--entries", nargs="+", default=["api", "cli", "sift", "xfeat"])
    p.add_argument("--repeats", type=int, default=2, help="rounds; entries take turns")
    p.add_argument("--out", type=Path, default=None, help="save the results as JSON")
    args = p.parse_args(argv)
    unknown = set(args.entries) - set(ENTRY_LABELS)
    if unknown:
        p.error(f"unknown entries {sorted(unknown)}; choose from {list(ENTRY_LABELS)}")
    if args.n_images < 2:
        p.error("--n-images must be at least 2 (the first image is warm-up)")
    return args


def prepare_images(args, folder: Path) -> List[Path]:
    """``extract``'s test images, resized to --size and written as PNG into ``folder``."""
    paths = []
    for i, image in enumerate(source_images(args)):
        paths.append(folder / f"{i:03d}.png")
        cv2.imwrite(str(paths[-1]), resize_max_side(image, args.size)[0][:, :, ::-1])
    return paths


def _python(code: str, *argv) -> List[float]:
    r = subprocess.run(
        [sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True
    )
    if r.returncode:
        raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _cli_wall(folder: Path, paths: List[Path], out: Path, args) -> float:
    listing = out.with_suffix(".txt")
    listing.write_text("".join(p.name + "\n" for p in paths))
    cmd = [sys.executable, "-m", "tasp_hloc", "extract", "--images", str(folder)]
    cmd += ["--image-list", str(listing), "--output", str(out), "--overwrite", "--device", "cpu"]
    cmd += ["--max-keypoints", str(args.max_keypoints), "--resize-max", str(args.size)]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode:
        raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed")
    return wall


def run_entry(entry: str, paths: List[Path], tmp: Path, args) -> List[float]:
    """Per-image seconds of one round of ``entry`` (warm-up excluded)."""
    if entry == "api":
        return _python(API_CODE, args.size, args.max_keypoints, *paths)[1:]
    if entry == "cli":
        many = _cli_wall(paths[0].parent, paths, tmp / "cli_n.h5", args)
        one = _cli_wall(paths[0].parent, paths[:1], tmp / "cli_1.h5", args)
        return [(many - one) / (len(paths) - 1)]
    return _python(PEER_CODE, entry, args.max_keypoints, *paths)[1:]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    times: Dict[str, List[float]] = {e: [] for e in args.entries}
    errors: Dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="tasp-api-speed-") as tmp:
        (Path(tmp) / "images").mkdir()
        paths = prepare_images(args, Path(tmp) / "images")
        for round_ in range(args.repeats):
            order = (
                args.entries[round_ % len(args.entries) :]
                + args.entries[: round_ % len(args.entries)]
            )
            for entry in order:
                if entry in errors:
                    continue
                try:
                    times[entry] += run_entry(entry, paths, Path(tmp), args)
                except (RuntimeError, ValueError) as err:
                    errors[entry] = str(err)
    records = []
    for entry in args.entries:
        median = statistics.median(times[entry]) if times[entry] else None
        records.append({"entry": entry, "s_per_image": median, "error": errors.get(entry)})
    base = next((r["s_per_image"] for r in records if r["entry"] == "sift"), None)
    rows = [
        [
            ENTRY_LABELS[r["entry"]],
            num(r["s_per_image"], "{:.3f}") if r["error"] is None else "not run: " + r["error"],
            num(1 / r["s_per_image"], "{:.2f}") if (r["s_per_image"] or 0) > 0 else "",
            num(r["s_per_image"] / base, "{:.1f}x") if base and (r["s_per_image"] or 0) > 0 else "",
        ]
        for r in records
    ]
    cpu = cpu_description()
    print(
        f"{args.n_images} {'synthetic' if args.synthetic else 'real'} images at {args.size} px, "
        f"{args.repeats} rounds, at most {args.max_keypoints} keypoints\n"
        f"CPU: {cpu['model']}, units: {', '.join(cpu['units']) or 'none of AVX2/AVX-512/AMX'}\n"
    )
    print(markdown_table(["entry", "s/img (median)", "img/s", "vs SIFT"], rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"cpu": cpu, "records": records, "times": times}, indent=1))
    return 0
