"""Compare TaSP with its peers on the same images: one command, one run, one table.

    python -m benchmarks.compare [--data DATA] [--methods tasp sift ...]
        [--max-side 1024] [--tasp-weights NAME_OR_PATH] [--out results.json] [--quick]

Every method sees the same decoded, resized images (longer side = --max-side), keeps at most
--max-keypoints features and is matched with the same mutual-nearest-neighbour matcher
(``metrics.mutual_nn_match``). Reported (see benchmarks/README.md for the definitions):
* homography pairs: MMA at 1/3/5/10 px, illumination and viewpoint subsets apart;
* pose sets (the Strecha scenes of eval/strecha_dev, pairs below 60 degrees of rotation, and the
  ScanNet sample): relative-pose AUC at 5/10/20 degrees of max(angle R, angle t) from an essential
  matrix at 1 px by RANSAC (SuperGlue's protocol) and by LO-RANSAC (pycolmap, as hloc), matches
  and inliers;
* extraction time per image (median) and peak memory, each method in its own subprocess.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np

from tasp_hloc.io.files import write_text_atomic
from tasp_hloc.model.weights import weights_argument
from tasp_hloc.runtime.device import resolve_device

from . import datasets
from .datasets import ICL_SET
from .evaluation import evaluate_homographies, evaluate_poses
from .features import METHODS
from .hardware import environment, load_average
from .matchers import MATCHERS, matcher_table
from .report import render_comparison
from .runner import load_features, run_method

DEFAULT_DATA = datasets.default_data_root()
# Photos that training does not use (training takes photos/tum and rgbd/icl_nuim_livingroom).
DEFAULT_HOMOGRAPHY_SOURCE = ("photos/piazza_san_marco", "photos/st_pauls_cathedral")
# The first pose set is the one of the summary table.
DEFAULT_POSE_SETS = ("eval/strecha_dev", "eval/scannet_pairs")
DEFAULT_ICL = "rgbd/icl_nuim_livingroom"
ALL_METHODS = ("tasp", "tasp_dog", "sift", "orb", "aliked", "disk", "xfeat")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="root of the offline data (default: $TASP_DATA, else the shared/data "
        "folder beside the checkout)",
    )
    p.add_argument("--methods", nargs="+", default=list(ALL_METHODS), choices=list(METHODS))
    p.add_argument("--max-side", type=int, default=1024, help="longer image side in pixels")
    p.add_argument("--max-keypoints", type=int, default=4096)
    p.add_argument(
        "--tasp-weights",
        default="auto",
        help="TaSP weights: a released name, a checkpoint path, 'none' (random init) "
        "or 'auto' (the default released weights if any, else random init; "
        "the table says which)",
    )
    p.add_argument(
        "--tasp-conf",
        default="{}",
        help="extra TaSP conf as JSON, e.g. '{\"detection_threshold\": 0.005}'",
    )
    p.add_argument("--out", type=Path, default=Path("results.json"), help="JSON report path")
    p.add_argument(
        "--hpatches",
        type=Path,
        default=None,
        help="HPatches root (<seq>/{1..6}.ppm, H_1_k); replaces the generated pairs",
    )
    p.add_argument(
        "--hpatches-sequences",
        type=int,
        default=None,
        help="use only the first N HPatches sequences",
    )
    p.add_argument(
        "--homography-source",
        default=",".join(DEFAULT_HOMOGRAPHY_SOURCE),
        help="comma-separated photo folders (relative to --data or absolute) for the "
        "generated homography pairs; keep them out of training "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--homography-images",
        type=int,
        default=5,
        help="photos used for generated pairs, 2 viewpoint + 2 illumination each",
    )
    p.add_argument(
        "--pose-sets",
        "--pose-pairs",
        default=",".join(DEFAULT_POSE_SETS),
        help="comma-separated folders (relative to --data or absolute), each either "
        "images/ + a SuperGlue *_with_gt.txt pair file, or <scene>/cameras.json "
        "+ <scene>/images/ (the first set is the summary's; default: %(default)s)",
    )
    p.add_argument(
        "--max-rotation",
        type=float,
        default=60.0,
        help="pairs of multi-view scenes: relative rotation below this, in degrees",
    )
    p.add_argument(
        "--pose-limit", type=int, default=None, help="use only the first N pairs of each pose set"
    )
    p.add_argument(
        "--icl-pairs",
        type=int,
        default=0,
        help="also N pose pairs of ICL-NUIM; TRAINING DOMAIN (training uses these "
        "frames), reported apart and labelled so (default 0 = off)",
    )
    p.add_argument(
        "--icl-root", default=DEFAULT_ICL, help="ICL-NUIM folder (relative to --data or absolute)"
    )
    p.add_argument(
        "--ransac-px",
        type=float,
        default=1.0,
        help="essential-matrix RANSAC threshold in pixels (at --max-side)",
    )
    p.add_argument(
        "--matchers",
        nargs="+",
        default=[],
        choices=list(MATCHERS),
        help="also score every method with these hloc matcher presets (a table of its own; "
        "the main tables stay mutual NN)",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0, help="seed of the generated homography pairs")
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 2 photos x 2 homographies, 3 pose pairs"
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep images and features here (default: a temporary folder)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.homography_images = min(args.homography_images, 2)
        args.hpatches_sequences = args.hpatches_sequences or 2
        args.pose_limit = min(args.pose_limit or 3, 3)
    return args


def resolve(data: Path, path: str) -> Path:
    """A folder given relative to the data root, or absolute."""
    p = Path(path)
    return p if p.is_absolute() else data / p


# ----------------------------------------------------------------------------- data
def load_homography_pairs(args) -> tuple:
    """(pairs, description) or ([], reason) when the data is missing."""
    per_photo = 1 if args.quick else 2
    if args.hpatches is not None:
        pairs = datasets.load_hpatches(args.hpatches, args.max_side, args.hpatches_sequences)
        return pairs, f"HPatches at {args.hpatches} ({len(pairs)} pairs)"
    folders = [resolve(args.data, f) for f in args.homography_source.split(",") if f]
    if not folders or args.homography_images < 1:
        return [], "skipped: no homography photos asked for (--homography-source/-images)"
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        return (
            [],
            f"skipped: photo folder(s) {', '.join(missing)} not found (set --data or "
            f"--homography-source, or give --hpatches)",
        )
    pairs = datasets.make_homography_pairs(
        folders, args.max_side, args.homography_images, per_photo, per_photo, seed=args.seed
    )
    return pairs, (
        f"generated from {args.homography_images} photos of "
        f"{', '.join(f.name for f in folders)} (seed {args.seed}, {len(pairs)} pairs)"
    )


def load_pose_sets(args) -> tuple:
    """({set name: pairs}, description): the held-out pose sets, plus ICL-NUIM when asked."""
    sets, notes = {}, []
    for folder in (f for f in args.pose_sets.split(",") if f):
        root = resolve(args.data, folder)
        files = sorted(root.glob("*_with_gt.txt")) if root.is_dir() else []
        if files:
            sets[root.name] = datasets.load_pose_pairs(
                root, args.max_side, files[0].name, args.pose_limit
            )
            notes.append(f"{root.name}/{files[0].name} ({len(sets[root.name])} pairs)")
        elif root.is_dir() and (
            (root / "cameras.json").is_file() or any(root.glob("*/cameras.json"))
        ):
            sets[root.name] = datasets.load_multiview_pairs(
                root, args.max_side, args.max_rotation, args.pose_limit
            )
            notes.append(
                f"{root.name} ({len(sets[root.name])} pairs below "
                f"{args.max_rotation:g} deg of rotation)"
            )
        else:
            notes.append(
                f"skipped: {root} has neither a *_with_gt.txt pair file nor "
                f"cameras.json nor <scene>/cameras.json (set --data or --pose-sets)"
            )
    if args.icl_pairs:
        icl = resolve(args.data, args.icl_root)
        if (icl / "trajectory.log").exists():
            sets[ICL_SET] = datasets.load_rgbd_sequence_pairs(icl, args.max_side, args.icl_pairs)
            notes.append(
                f"{ICL_SET}: {len(sets[ICL_SET])} pairs of {icl.name}, gaps 10/20/30 frames"
            )
        else:
            notes.append(f"ICL-NUIM skipped: no trajectory.log in {icl}")
    return sets, "; ".join(notes)


def collect_images(sets: Dict[str, list], folder: Path) -> tuple:
    """Save every distinct image once as .npy; returns (files, {(set, pair, side): file index})."""
    files, ids, index = [], {}, {}
    for kind, pairs in sets.items():
        for i, pair in enumerate(pairs):
            for side, image in ((0, pair.image0), (1, pair.image1)):
                if id(image) not in ids:  # image0 is shared by all pairs of one photo
                    ids[id(image)] = len(files)
                    path = folder / f"{len(files):04d}.npy"
                    np.save(path, image)
                    files.append(path)
                index[(kind, i, side)] = ids[id(image)]
    return files, index


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(type(o))


def finite_or_none(obj):
    """Replace inf/nan (failed pose pairs) by None so that the JSON stays standard."""
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def run(args: argparse.Namespace) -> Dict:
    device = resolve_device(args.device)
    if args.hpatches is None:
        datasets.require_data_root(args.data)
    hpairs, hsource = load_homography_pairs(args)
    psets, psource = load_pose_sets(args)
    if not hpairs and not psets:
        raise SystemExit(f"No evaluation data found.\n  homography: {hsource}\n  pose: {psource}")
    report = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": environment(device),
        "homography_source": hsource,
        "pose_source": psource,
        "pose_sets": list(psets),
        "methods": {},
    }
    with tempfile.TemporaryDirectory(prefix="tasp-bench-") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        (work / "images").mkdir(parents=True, exist_ok=True)
        files, index = collect_images({"h": hpairs, **psets}, work / "images")
        n_pose = sum(map(len, psets.values()))
        print(
            f"{len(files)} images ({len(hpairs)} homography + {n_pose} pose pairs), "
            f"device {device}",
            file=sys.stderr,
        )
        for name in args.methods:
            t0 = time.time()
            options = {}
            if name in ("tasp", "tasp_dog"):
                weights = weights_argument(args.tasp_weights)
                options = {"weights": weights, **json.loads(args.tasp_conf)}
            rec = run_method(name, files, work / name, device, args.max_keypoints, options)
            if "error" in rec:
                print(f"  {name}: not run: {rec['error']}", file=sys.stderr)
                report["methods"][name] = {"error": rec["error"]}
                continue
            feats = {k: load_features(work / name, k) for k in range(len(files))}
            res = {"speed": rec}
            if hpairs:
                res["homography"] = evaluate_homographies(hpairs, feats, index)
            res["pose"] = {
                name: evaluate_poses(pairs, feats, index, name, args.ransac_px)
                for name, pairs in psets.items()
            }
            res["matchers"] = {
                m: {
                    "homography": evaluate_homographies(hpairs, feats, index, MATCHERS[m])
                    if hpairs
                    else {},
                    "pose": {
                        n: evaluate_poses(pairs, feats, index, n, args.ransac_px, MATCHERS[m])
                        for n, pairs in psets.items()
                    },
                }
                for m in args.matchers
            }
            report["methods"][name] = res
            print(
                f"  {name}: {rec['time_median_s'] * 1000:.0f} ms/img, "
                f"{time.time() - t0:.0f} s in all",
                file=sys.stderr,
            )
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    report = run(args)
    report["environment"]["load_average_at_end"] = load_average()
    text = "\n".join([render_comparison(report), *matcher_table(report)])
    print(text)
    report["markdown"] = text
    save_report(report, args.out)
    print(f"\nsaved {args.out}", file=sys.stderr)
    return 0


def save_report(report: Dict, path: Path) -> None:
    """The report as JSON (NaN as null), written atomically: a cache never holds half a run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(finite_or_none(report), indent=1, default=_json_default)
    write_text_atomic(path, text)


def tasp_report(weights: Union[str, Path], out: Path, options: Sequence[str] = ()) -> Dict:
    """``compare --methods tasp`` for ``weights`` in this process (more ``options`` of the
    command line), saved to ``out``; what the training benchmarks measure a candidate with."""
    args = parse_args(
        ["--methods", "tasp", "--tasp-weights", str(weights), "--out", str(out), *options]
    )
    report = run(args)
    save_report(report, out)
    return report


if __name__ == "__main__":
    sys.exit(main())
