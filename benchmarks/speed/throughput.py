"""Extraction end to end: images per second of ``tasp_hloc.extract`` and of hloc's own
``extract_features.main`` with the same preset, on one folder, in one run.

    python -m benchmarks.speed throughput                 # 50 photos at 1024 px, this CPU
    python -m benchmarks.speed throughput --images DIR --n-images 50 --device cuda --batch-size 8

Both read JPEG/PNG files, resize (longer side ``--size``, cv2 INTER_AREA), run TaSP and write
an hloc feature file. ``tasp_hloc.extract`` overlaps the three stages (decoding worker
processes, the network in the main thread, a writer thread) and with ``--batch-size`` puts
several same-size images through the network per call; hloc decodes in one worker and writes
in the loop. The two alternate (``--repeats`` times each, the order swapped every round) so that
the load of other processes falls on both alike; the median is reported. The two feature files
are compared (the same images and keypoint counts, the largest keypoint difference).
Photos: the first ``--n-images`` of ``--images`` (recursively), by default of
``$TASP_DATA/eval/strecha_dev`` then ``$TASP_DATA/photos``; ``--synthetic`` makes textures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import h5py
import numpy as np

from ..datasets import IMAGE_SUFFIXES, default_data_root, require_data_root


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.speed throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--images",
        type=Path,
        nargs="+",
        default=None,
        help="photo folders (default: eval/strecha_dev and photos of --data)",
    )
    p.add_argument("--data", type=Path, default=None, help="default: $TASP_DATA or shared/data")
    p.add_argument("--synthetic", action="store_true", help="generated textures, runs anywhere")
    p.add_argument("--n-images", type=int, default=50)
    p.add_argument("--size", type=int, default=1024, help="longer side fed to the network")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=1, help="tasp_hloc.extract's batch_size")
    p.add_argument("--workers", type=int, default=2, help="tasp_hloc.extract's decoding processes")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--weights", default=None, help="released name or path (default: TaSP's)")
    p.add_argument("--amp", default="auto", help="TaSP's amp option")
    p.add_argument("--max-keypoints", type=int, default=4096)
    p.add_argument("--out", type=Path, default=None, help="save the results as JSON")
    return p.parse_args(argv)


def photo_folder(args, tmp: Path) -> Path:
    """A folder of ``--n-images`` photos (links to the originals, or generated textures)."""
    folder = tmp / "images"
    folder.mkdir()
    if args.synthetic:
        import cv2

        rng = np.random.default_rng(0)
        for k in range(args.n_images):
            texture = rng.uniform(0, 255, (24, 36, 3)).astype(np.uint8)
            cv2.imwrite(
                str(folder / f"{k:04d}.jpg"),
                cv2.resize(texture, (1200, 800), interpolation=cv2.INTER_CUBIC),
            )
        return folder
    if args.images is None:
        root = require_data_root(args.data or default_data_root())
        args.images = [root / "eval/strecha_dev", root / "photos"]
    files = sorted(
        p for d in args.images for p in Path(d).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
    )[: args.n_images]
    if len(files) < args.n_images:
        raise SystemExit(
            f"Found {len(files)} photos under {args.images}, need {args.n_images}: "
            "pass --images or --n-images, or --synthetic."
        )
    for k, path in enumerate(files):
        (folder / f"{k:04d}{path.suffix.lower()}").symlink_to(path.resolve())
    return folder


def preset(args) -> Dict:
    from tasp_hloc.hloc.confs import get_preset

    overrides = {"amp": args.amp, "max_keypoints": args.max_keypoints}
    if args.weights is not None:
        overrides["weights"] = args.weights
    conf = get_preset("tasp_aachen", **overrides)
    conf["preprocessing"]["resize_max"] = args.size
    return conf


def run_tasp_hloc(conf: Dict, folder: Path, out: Path, args) -> None:
    from tasp_hloc.extract import extract

    extract(
        conf,
        folder,
        out,
        device=args.device,
        num_workers=args.workers,
        batch_size=args.batch_size,
        overwrite=True,
    )


def run_hloc(conf: Dict, folder: Path, out: Path, args) -> None:
    from hloc import extract_features

    from tasp_hloc.hloc.plugin import register

    register()
    extract_features.main(
        {**conf, "output": "feats-tasp"}, folder, feature_path=out, overwrite=True
    )


def compare_files(a: Path, b: Path) -> Dict[str, float]:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names = sorted(fa)
        same_names = names == sorted(fb)
        counts = [
            (fa[n]["keypoints"].shape[0], fb[n]["keypoints"].shape[0]) for n in names if n in fb
        ]
        diff = max(
            (
                float(
                    np.abs(
                        fa[n]["keypoints"][()].astype(np.float32)
                        - fb[n]["keypoints"][()].astype(np.float32)
                    ).max()
                )
                for n in names
                if n in fb
                and fa[n]["keypoints"].shape == fb[n]["keypoints"].shape
                and len(fa[n]["keypoints"])
            ),
            default=0.0,
        )
    return {
        "same_images": same_names,
        "same_counts": all(x == y for x, y in counts),
        "max_keypoint_diff_px": diff,
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    runners = {"tasp_hloc.extract": run_tasp_hloc}
    try:
        import hloc.extract_features  # noqa: F401

        runners["hloc extract_features.main"] = run_hloc
    except ImportError:
        print("hloc is not installed: timing tasp_hloc.extract only.")
    conf = preset(args)
    times: Dict[str, List[float]] = {name: [] for name in runners}
    with tempfile.TemporaryDirectory(prefix="tasp-throughput-") as tmp:
        tmp = Path(tmp)
        folder = photo_folder(args, tmp)
        order = list(runners)
        for round_ in range(args.repeats):
            for name in order if round_ % 2 == 0 else order[::-1]:
                t0 = time.perf_counter()
                runners[name](conf, folder, tmp / f"{order.index(name)}-{round_}.h5", args)
                times[name].append(time.perf_counter() - t0)
        check = compare_files(tmp / "0-0.h5", tmp / "1-0.h5") if len(order) == 2 else None
    n = args.n_images
    report = {
        "images": n,
        "size": args.size,
        "device": args.device,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "seconds": times,
        "check": check,
    }
    print(
        f"\n## Extraction of {n} photos at {args.size} px on {args.device} "
        f"(median of {args.repeats}; batch_size {args.batch_size}, {args.workers} workers)\n"
    )
    print("| extractor | s per run | images/s | x hloc |")
    print("|---|---:|---:|---:|")
    medians = {name: statistics.median(t) for name, t in times.items()}
    base = medians.get("hloc extract_features.main")
    for name, seconds in medians.items():
        ratio = f"{base / seconds:.2f}" if base else ""
        print(f"| {name} | {seconds:.1f} | {n / seconds:.2f} | {ratio} |")
    if check:
        print(
            f"\nSame images: {check['same_images']}; same keypoint counts: "
            f"{check['same_counts']}; largest keypoint difference "
            f"{check['max_keypoint_diff_px']:.3g} px."
        )
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0
