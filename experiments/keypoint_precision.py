"""What storing keypoints as float16 costs in poses, at the photos' original resolution.

    python -m experiments.keypoint_precision [--original-side 3072] [--methods tasp sift]
        [compare's options: --data, --pose-sets, --max-side, --tasp-weights, ...]

Features are extracted once per method by ``benchmarks.compare``'s harness (same images, same
mutual-NN matcher, same RANSAC and LO-RANSAC at ``--ransac-px``). Their keypoints are then taken
to the original photo's pixels (Strecha's are 3072 px on the long side; the copies here are
smaller), stored as float32 or rounded to float16 the way a feature file would hold them, and
brought back: the pose AUC of the two differs only by the storage. float16 steps by 1 px from
1024 and by 2 px from 2048, so at 3072 px the rounding is up to 1 px of the original photo.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from benchmarks.compare import collect_images, load_pose_sets, parse_args
from benchmarks.evaluation import evaluate_poses
from benchmarks.metrics import AUC_THRESHOLDS
from benchmarks.report import markdown_table, pct
from benchmarks.runner import load_features, run_method
from tasp_hloc.grid import rescale_keypoints
from tasp_hloc.model.weights import weights_argument

STORAGE = {"float32": np.float32, "float16": np.float16}


def stored(keypoints: np.ndarray, scale: float, dtype) -> np.ndarray:
    """(N, 2) keypoints as read back after storing them `scale` times larger in `dtype`."""
    big = rescale_keypoints(keypoints, scale).astype(dtype)
    return rescale_keypoints(big.astype(np.float64), 1.0 / scale)


def storage_report(psets: Dict, feats: Dict[int, Dict], index, original_side: int, ransac_px):
    """{storage: {set: evaluate_poses(...)}} with each image's keypoints stored at its own
    original scale (original_side over its longer side)."""
    sides = {}
    for kind, pairs in psets.items():
        for i, pair in enumerate(pairs):
            for side, image in ((0, pair.image0), (1, pair.image1)):
                sides[index[(kind, i, side)]] = max(image.shape[:2])
    out = {}
    for name, dtype in STORAGE.items():
        rounded = {
            k: {**f, "keypoints": stored(f["keypoints"], original_side / sides[k], dtype)}
            for k, f in feats.items()
            if k in sides
        }
        out[name] = {
            s: evaluate_poses(pairs, rounded, index, s, ransac_px) for s, pairs in psets.items()
        }
    return out


def render(results: Dict, original_side: int) -> str:
    rows = []
    for method, by_storage in results.items():
        for storage, by_set in by_storage.items():
            for s, r in by_set.items():
                lo = r.get("auc_lo")
                rows.append(
                    [method, storage, s]
                    + [pct(r["auc"][t]) for t in AUC_THRESHOLDS]
                    + [pct(lo[t]) if lo else "-" for t in AUC_THRESHOLDS]
                )
    header = ["method", "keypoints stored as", "pose set"]
    header += [f"RANSAC AUC@{t}" for t in AUC_THRESHOLDS]
    header += [f"LO AUC@{t}" for t in AUC_THRESHOLDS]
    return f"Keypoints stored at {original_side} px on the long side\n\n" + markdown_table(
        header, rows
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    original_side = 3072
    if "--original-side" in argv:
        i = argv.index("--original-side")
        original_side = int(argv[i + 1])
        del argv[i : i + 2]
    args = parse_args(argv)
    psets, source = load_pose_sets(args)
    if not psets:
        raise SystemExit(f"No pose set found: {source}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="tasp-kp-precision-") as tmp:
        (Path(tmp) / "images").mkdir()
        files, index = collect_images(psets, Path(tmp) / "images")
        for method in args.methods:
            options = {}
            if method == "tasp":
                weights = weights_argument(args.tasp_weights)
                options = {"weights": weights, **json.loads(args.tasp_conf)}
            rec = run_method(method, files, Path(tmp) / method, "cpu", args.max_keypoints, options)
            if "error" in rec:
                print(f"{method}: not run: {rec['error']}", file=sys.stderr)
                continue
            feats = {k: load_features(Path(tmp) / method, k) for k in range(len(files))}
            results[method] = storage_report(psets, feats, index, original_side, args.ransac_px)
    text = render(results, original_side)
    print(f"{source}\n\n{text}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"source": source, "results": results, "markdown": text}, indent=1, default=str)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
