"""The scores of one method's features on the pairs of ``benchmarks.compare``.

``feats`` maps an image's file index to its features ({keypoints, descriptors, ...}); ``index``
maps (set name, pair index, side 0/1) to that file index (``compare.collect_images``). Matching is
the mutual nearest neighbour of ``metrics.mutual_nn_match`` for every method, unless a matcher
of ``matchers.MATCHERS`` is passed.
"""

from __future__ import annotations

import importlib.util
from typing import Dict, List, Sequence

import numpy as np

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

# A match is correct when its symmetric epipolar distance (normalised coordinates) is below this.
EPIPOLAR_THRESHOLD = 5e-4
# Scale-ratio bins of the pose pairs that have one (built multiview scenes; issue 20 item 4).
SCALE_BINS = ((1.0, 1.25), (1.25, 1.6), (1.6, float("inf")))


def _mutual(f0: Dict, f1: Dict) -> np.ndarray:
    return mutual_nn_match(f0["descriptors"], f1["descriptors"])[0]


def evaluate_homographies(pairs, feats: Dict[int, Dict], index, match=_mutual) -> Dict:
    """MMA per subset plus match counts; per-pair details under "pairs". ``match(f0, f1)``
    gives (K, 2) indices (default: mutual nearest neighbours)."""
    rows = []
    for i, pair in enumerate(pairs):
        f0, f1 = feats[index[("h", i, 0)]], feats[index[("h", i, 1)]]
        matches = match(f0, f1)
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


def evaluate_poses(
    pairs, feats: Dict[int, Dict], index, set_name: str, ransac_px: float, match=_mutual
) -> Dict:
    """Pose AUC by RANSAC ("auc") and by LO-RANSAC ("auc_lo", None without pycolmap), match and
    inlier counts, epipolar precision; per-pair details under "pairs". ``match`` as in
    ``evaluate_homographies``."""
    estimators = {"": estimate_relative_pose}  # suffix of the keys -> estimator
    if importlib.util.find_spec("pycolmap") is not None:
        estimators["_lo"] = estimate_relative_pose_lo
    rows = []
    for i, pair in enumerate(pairs):
        f0, f1 = feats[index[(set_name, i, 0)]], feats[index[(set_name, i, 1)]]
        matches = match(f0, f1)
        k0, k1 = f0["keypoints"][matches[:, 0]], f1["keypoints"][matches[:, 1]]
        epi = symmetric_epipolar_distance(k0, k1, pair.K0, pair.K1, pair.T_0to1)
        row = {
            "name": pair.name,
            "scale_ratio": pair.scale_ratio,
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
    if any(r["scale_ratio"] is not None for r in rows):
        out["by_scale"] = auc_by_scale_ratio(rows, list(estimators))
    return out


def auc_by_scale_ratio(rows: List[Dict], suffixes: Sequence[str]) -> Dict[str, Dict]:
    """Pose AUC per bin of ``SCALE_BINS`` of the pairs' scale ratios, for each estimator's
    suffix (``""``: RANSAC, ``"_lo"``: LO-RANSAC): ``{"1-1.25": {"n_pairs", "auc", "auc_lo"}}``."""
    out = {}
    for low, high in SCALE_BINS:
        sel = [r for r in rows if r["scale_ratio"] is not None and low <= r["scale_ratio"] < high]
        label = f"{low:g}-{high:g}" if np.isfinite(high) else f">={low:g}"
        out[label] = {"n_pairs": len(sel)}
        for suffix in suffixes:
            errors = [r[f"error{suffix}"] for r in sel]
            out[label][f"auc{suffix}"] = pose_auc(errors, AUC_THRESHOLDS) if sel else None
    return out
