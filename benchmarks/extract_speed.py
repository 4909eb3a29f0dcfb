"""Extraction speed and peak memory of TaSP, with OpenCV SIFT timed in the same run beside it.

    python -m benchmarks.extract_speed [--sizes 1024 1600] [--methods tasp sift]
        [--images DIR | --synthetic] [--n-images 8] [--tasp-weights auto] [--device auto]

Each (method, size) runs in its own subprocess (``benchmarks.runner``): images are decoded and
resized first (longer side = size, upsampled if smaller, so the pixel count is the same for every
method), one warm-up call, then every image is timed. Reported: images per second
(n / total time), median ms per image, peak RSS of the process and the part extraction adds
(plus peak CUDA memory on a GPU). See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from .compare import environment, markdown_table, num, resolve_device
from .datasets import IMAGE_SUFFIXES, default_data_root, read_rgb
from .features import METHODS, resize_max_side
from .runner import run_method

DEFAULT_IMAGES = default_data_root() / "eval/scannet_pairs/images"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.extract_speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 1600])
    p.add_argument("--methods", nargs="+", default=["tasp", "sift"], choices=list(METHODS))
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES,
                   help="folder of test images (default: $TASP_DATA/eval/scannet_pairs/images)")
    p.add_argument("--synthetic", action="store_true",
                   help="use generated 4:3 texture images instead of --images (runs anywhere)")
    p.add_argument("--n-images", type=int, default=8)
    p.add_argument("--max-keypoints", type=int, default=4096)
    p.add_argument("--tasp-weights", default="auto", help="as in benchmarks.compare")
    p.add_argument("--tasp-conf", default="{}", help="extra TaSP conf as JSON, e.g. "
                   "'{\"amp\": \"bf16\"}'")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", type=Path, default=None, help="also save the records as JSON")
    return p.parse_args(argv)


def source_images(args) -> List[np.ndarray]:
    """The test images as H x W x 3 uint8 RGB (before resizing)."""
    if args.synthetic:
        rng = np.random.default_rng(0)
        # Smooth noise + edges: enough structure for detectors to find their usual counts.
        import cv2
        out = []
        for _ in range(args.n_images):
            img = cv2.resize(rng.uniform(0, 255, (60, 80, 3)).astype(np.uint8), (1296, 972),
                             interpolation=cv2.INTER_CUBIC)
            out.append(img)
        return out
    if not args.images.is_dir():
        raise SystemExit(f"No image folder {args.images}: pass --images DIR or --synthetic.")
    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"No images in {args.images}: pass --images DIR or --synthetic.")
    return [read_rgb(p) for p in files[:args.n_images]]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    images = source_images(args)
    env = environment(device)
    records = []
    with tempfile.TemporaryDirectory(prefix="tasp-speed-") as tmp:
        for size in args.sizes:
            files = []
            for k, image in enumerate(images):
                path = Path(tmp) / f"{size}_{k:03d}.npy"
                np.save(path, resize_max_side(image, size)[0])
                files.append(path)
            for name in args.methods:
                options = {}
                if name == "tasp":
                    weights = None if args.tasp_weights.lower() == "none" else args.tasp_weights
                    options = {"weights": weights, **json.loads(args.tasp_conf)}
                rec = run_method(name, files, Path(tmp) / f"{name}_{size}", device,
                                 args.max_keypoints, options, save_features=False)
                rec["max_side"] = size
                records.append(rec)
                status = rec.get("error") or f"{1000 * rec['time_median_s']:.0f} ms/img"
                print(f"  {name} @ {size}: {status}", file=sys.stderr)
    rows, failed = [], []
    for rec in records:
        if "error" in rec:
            failed.append(f"- {rec['method']} @ {rec['max_side']}: not run ({rec['error']})")
            continue
        h, w = rec["image_sizes"][0]
        label = rec["method"] + (f" ({rec['weights'] or 'random init'})"
                                 if rec["method"] == "tasp" else "")
        rows.append([label, str(rec["max_side"]), f"{w}x{h}",
                     f"{rec['n_images'] / sum(rec['times_s']):.2f}",
                     num(1000 * rec["time_median_s"]), num(rec["keypoints_mean"]),
                     num(rec["peak_rss_mib"]), num(rec["extract_peak_mib"]),
                     num(rec["cuda_peak_allocated_mib"])])
    print(f"## Extraction speed on {env['device']} ({env['cpu_count']} CPUs, torch "
          f"{env['torch']}, {env['torch_threads']} threads, load average "
          f"{env['load_average_at_start']}), {len(images)} "
          f"{'synthetic' if args.synthetic else 'real'} images\n")
    print(markdown_table(["method", "max side", "image", "img/s", "median ms", "kpts/img",
                          "peak RSS MiB", "extract peak MiB", "CUDA peak MiB"], rows))
    print("\n".join(failed))
    if args.out:
        args.out.write_text(json.dumps({"environment": env, "records": records}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
