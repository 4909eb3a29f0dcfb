"""What holds TaSP back at 1 px: where its keypoints are, or what its descriptors tell apart?

    python -m experiments.placement [--sift-size 12] [--pose-sets eval/strecha_dev,...]
        [--out placement.json]
        [compare's options: --data, --max-side, --max-keypoints, --tasp-weights, --tasp-conf, ...]

On ``benchmarks.compare``'s homography pairs (same images, same mutual-NN matcher, same MMA)
and, when ``--pose-sets`` names some, its pose sets (same RANSAC / LO-RANSAC AUC), detectors
and descriptors are crossed:

* TaSP keypoints + TaSP descriptors: what ships;
* SIFT keypoints + TaSP descriptors: TaSP's dense descriptor map sampled at SIFT's DoG positions
  (the top ``--max-keypoints`` by response, as compare's RootSIFT);
* TaSP keypoints + RootSIFT descriptors: OpenCV's SIFT descriptor computed at TaSP's points, all
  of one size (``--sift-size`` px, upright; TaSP has no scale or orientation);
* SIFT keypoints + RootSIFT descriptors: compare's RootSIFT.

If SIFT's keypoints lift TaSP's descriptors at 1 px, placement is what TaSP lacks; if TaSP's
keypoints keep RootSIFT low at 1 px while it holds at 3 px, the points themselves are off.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Dict, Optional, Sequence

import cv2
import numpy as np
import torch

from benchmarks import compare
from benchmarks.evaluation import evaluate_homographies, evaluate_poses
from benchmarks.features import RootSIFT, TaSPMethod, root_sift, to_tensor
from benchmarks.metrics import AUC_THRESHOLDS, MMA_THRESHOLDS
from benchmarks.report import markdown_table, pct
from tasp_hloc.io.files import write_text_atomic
from tasp_hloc.model.keypoints import sample_descriptors
from tasp_hloc.model.weights import weights_argument

COMBINATIONS = (("tasp", "tasp"), ("sift", "tasp"), ("tasp", "sift"), ("sift", "sift"))


def tasp_descriptors_at(model, image_rgb: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """(N, D) TaSP descriptors at (N, 2) x-y pixel keypoints of an H x W x 3 uint8 image."""
    with torch.inference_mode():
        dense = model.forward_dense(to_tensor(image_rgb, next(model.parameters()).device))
        kpts = torch.from_numpy(np.ascontiguousarray(keypoints, np.float32))[None]
        desc = sample_descriptors(dense["descriptors_dense"], kpts, model.stride_descriptor)
    return desc[0].float().cpu().numpy()


def root_sift_at(image_rgb: np.ndarray, keypoints: np.ndarray, size: float) -> Dict:
    """RootSIFT descriptors at (N, 2) keypoints, all of one ``size`` (px) and upright.

    OpenCV may drop keypoints it cannot describe; those are dropped from the keypoints too, so
    the returned ``keypoints`` and ``descriptors`` stay row-aligned.
    """
    gray = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
    kps = [
        cv2.KeyPoint(float(x), float(y), size, 0.0, 0.0, 0, i) for i, (x, y) in enumerate(keypoints)
    ]
    kps, desc = cv2.SIFT_create().compute(gray, kps)
    kept = np.array([k.class_id for k in kps], dtype=np.int64)
    if desc is None or not len(kept):
        return {"keypoints": np.zeros((0, 2), np.float32), "descriptors": np.zeros((0, 128))}
    return {"keypoints": keypoints[kept], "descriptors": root_sift(desc)}


def cross_features(tasp: TaSPMethod, sift: RootSIFT, image_rgb: np.ndarray, size: float) -> Dict:
    """{(detector, descriptor): {keypoints, descriptors}} for the four COMBINATIONS."""
    own = {"tasp": tasp.extract(image_rgb), "sift": sift.extract(image_rgb)}
    out = {}
    for det, desc in COMBINATIONS:
        kpts = own[det]["keypoints"]
        if det == desc:
            out[det, desc] = own[det]
        elif desc == "tasp":
            out[det, desc] = {
                "keypoints": kpts,
                "descriptors": tasp_descriptors_at(tasp.model, image_rgb, kpts),
            }
        else:
            out[det, desc] = root_sift_at(image_rgb, kpts, size)
    return out


def run(args: argparse.Namespace) -> Dict:
    pairs, source = compare.load_homography_pairs(args)
    if not pairs:
        raise SystemExit(f"No homography pairs: {source}")
    pose_sets, pose_source = compare.load_pose_sets(args) if args.pose_sets else ({}, "none")
    weights = weights_argument(args.tasp_weights)
    tasp = TaSPMethod(args.max_keypoints, weights=weights, **json.loads(args.tasp_conf))
    sift = RootSIFT(args.max_keypoints)
    with tempfile.TemporaryDirectory() as tmp:
        files, index = compare.collect_images({"h": pairs, **pose_sets}, Path(tmp))
        per_image = [cross_features(tasp, sift, np.load(f), args.sift_size) for f in files]
    report = {
        "homography_source": source,
        "pose_source": pose_source,
        "weights": tasp.weights_used,
        "results": {},
    }
    for combo in COMBINATIONS:
        feats = {i: f[combo] for i, f in enumerate(per_image)}
        res = evaluate_homographies(pairs, feats, index)
        res["pose"] = {
            name: evaluate_poses(set_pairs, feats, index, name, args.ransac_px)
            for name, set_pairs in pose_sets.items()
        }
        report["results"]["+".join(combo)] = res
    return report


def render(report: Dict) -> str:
    names = {"tasp": "TaSP", "sift": "SIFT"}
    first = report["results"]["+".join(COMBINATIONS[0])]
    sets = list(first["pose"])
    header = ["keypoints", "descriptors", *[f"MMA@{t}" for t in MMA_THRESHOLDS], "matches/pair"]
    header += [f"{name} LO AUC@{'/'.join(map(str, AUC_THRESHOLDS))}" for name in sets]
    rows = []
    for combo in COMBINATIONS:
        res = report["results"]["+".join(combo)]
        desc = "RootSIFT" if combo[1] == "sift" else names[combo[1]]
        poses = [res["pose"][name]["auc_lo"] or res["pose"][name]["auc"] for name in sets]
        rows.append(
            [names[combo[0]], desc]
            + [pct(res["all"]["mma"][t]) for t in MMA_THRESHOLDS]
            + [f"{res['all']['matches']:.0f}"]
            + [" / ".join(pct(auc[t]) for t in AUC_THRESHOLDS) for auc in poses]
        )
    return (
        f"Homography pairs: {report['homography_source']}; pose sets: {report['pose_source']}; "
        f"TaSP weights: {report['weights']}\n\n" + markdown_table(header, rows)
    )


def main(argv: Optional[Sequence[str]] = None) -> None:
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--sift-size", type=float, default=12.0)
    own.add_argument("--out", type=Path, default=None, help="also write the report as JSON")
    own.add_argument("--pose-sets", default="", help="compare's --pose-sets (default: none)")
    mine, rest = own.parse_known_args(argv)
    args = compare.parse_args(rest)
    args.sift_size, args.out, args.pose_sets = mine.sift_size, mine.out, mine.pose_sets
    report = run(args)
    print(render(report))
    if args.out is not None:
        write_text_atomic(args.out, json.dumps(compare.finite_or_none(report), indent=1))


if __name__ == "__main__":
    main()
