"""Recall of a results file against known poses, at the benchmarks' thresholds.

    python -m pipelines.evaluate --benchmark aachen --results R.txt --gt GT.txt [--dataset D]
    python -m pipelines.evaluate --benchmark inloc  --results R.txt --gt GT.txt

Both files are `name qw qx qy qz tx ty tz` (cam_from_world). The ground truth may carry a ninth
column, the condition (day/night, DUC1/DUC2); otherwise, for Aachen, `--dataset` gives it from
which `queries/{day,night}_time_queries_with_intrinsics.txt` lists the image. Queries missing from
the results count as not localized, as on visuallocalization.net. Errors: camera-centre distance
and rotation angle.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from pipelines.poses import Pose, pose_error
from pipelines.results import read_results

THRESHOLDS = {
    "aachen": [(0.25, 2.0), (0.5, 5.0), (5.0, 10.0)],
    "inloc": [(0.25, 10.0), (0.5, 10.0), (1.0, 10.0)],
}
CONDITIONS = {"aachen": ["day", "night"], "inloc": ["DUC1", "DUC2"]}


def read_ground_truth(path: Path) -> Tuple[Dict[str, Pose], Dict[str, str]]:
    """Poses and per-name conditions (from an optional ninth column)."""
    poses = read_results(path)
    conditions = {}
    for line in Path(path).read_text().splitlines():
        cols = line.split()
        if len(cols) >= 9 and not line.startswith("#"):
            conditions[cols[0]] = cols[8]
    return poses, conditions


def aachen_conditions(dataset: Path) -> Dict[str, str]:
    """name (as in results files) -> day/night, from the dataset's query lists."""
    out = {}
    for cond in ("day", "night"):
        f = Path(dataset) / "queries" / f"{cond}_time_queries_with_intrinsics.txt"
        if not f.exists():
            raise FileNotFoundError(f"{f} is missing; it says which queries are {cond} ones.")
        for line in f.read_text().splitlines():
            if line.strip():
                out[line.split()[0].split("/")[-1]] = cond
    return out


def recall(
    results: Mapping[str, Pose],
    gt: Mapping[str, Pose],
    conditions: Mapping[str, str],
    thresholds: Sequence[Tuple[float, float]],
):
    """{condition: (n queries, [recall at each (m, deg) threshold], median (m, deg))}."""
    errs = defaultdict(list)
    for name, g in gt.items():
        e = pose_error(results[name], g) if name in results else (np.inf, np.inf)
        errs[conditions.get(name, "all")].append(e)
    out = {}
    for cond, e in sorted(errs.items()):
        e = np.array(e)
        rec = [float(np.mean((e[:, 0] <= t) & (e[:, 1] <= r))) for t, r in thresholds]
        out[cond] = (len(e), rec, tuple(np.median(e, 0)))
    return out


def format_table(stats, thresholds) -> str:
    head = " / ".join(f"({t}m, {r}°)" for t, r in thresholds)
    lines = [f"{'condition':<10} {'n':>4}  recall {head}   median (m, deg)"]
    for cond, (n, rec, med) in stats.items():
        r = " / ".join(f"{100 * x:.1f}" for x in rec)
        lines.append(f"{cond:<10} {n:>4}  {r}   ({med[0]:.3f}, {med[1]:.2f})")
    return "\n".join(lines)


def evaluate(benchmark: str, results: Path, gt: Path, dataset: Optional[Path] = None):
    est = read_results(results)
    gt_poses, conds = read_ground_truth(gt)
    if benchmark == "aachen" and not conds:
        if dataset is None:
            raise ValueError(
                "The ground truth has no condition column: pass --dataset so the "
                "day/night split comes from the query lists."
            )
        conds = aachen_conditions(dataset)
    extra = sorted(set(est) - set(gt_poses))
    if extra and len(extra) == len(est):
        raise ValueError(
            f"No name of {results} is in {gt} (e.g. {extra[:3]}): results files "
            "use image file names only; check both files."
        )
    stats = recall(est, gt_poses, conds, THRESHOLDS[benchmark])
    return stats


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--benchmark", choices=sorted(THRESHOLDS), required=True)
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--gt", type=Path, required=True, help="ground-truth poses, same format")
    p.add_argument("--dataset", type=Path, help="Aachen root (day/night split from its lists)")
    args = p.parse_args(argv)
    stats = evaluate(args.benchmark, args.results, args.gt, args.dataset)
    print(format_table(stats, THRESHOLDS[args.benchmark]))
    return stats


if __name__ == "__main__":
    from pipelines.common import run_cli

    run_cli(main)
