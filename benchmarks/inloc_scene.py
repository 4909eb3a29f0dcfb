"""Localization on the generated InLoc scene: TaSP beside hloc's SIFT, in one run (needs hloc).

The scene is the one the pipeline tests render (``tests/pipeline_scenes.make_inloc``): two floors,
textured rooms, cutouts with exact XYZ, queries near a cutout with exact ground truth. Every
method runs the whole of ``python -m pipelines.inloc`` on the same files (random NetVLAD with
top-k over all cutouts, so retrieval is no factor), and the table gives how many queries each
localizes within InLoc's thresholds.

    PYTHONPATH=path/to/hloc python -m benchmarks.inloc_scene --weights tasp_v2 [--queries-per-floor 5]
"""

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

from pipelines import evaluate, inloc, netvlad

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
import pipeline_scenes  # noqa: E402  (the scene generator lives with the tests that use it)


def make_scene(root: Path, queries_per_floor: int, seed: int) -> Path:
    """Render the scene under ``root/ds`` and its ground truth as ``root/gt.txt``."""
    queries = pipeline_scenes.make_inloc(
        root / "ds", seed=seed, n_queries_per_floor=queries_per_floor
    )
    pipeline_scenes.write_poses_txt(root / "gt.txt", queries)
    return root / "gt.txt"


def run_method(
    root: Path,
    features: str,
    weights: Optional[str],
    ckpt: Path,
    extra: List[str] = (),
    matcher: str = "NN-mutual",
) -> Dict:
    """Run the InLoc pipeline with one feature preset; its features are kept per preset,
    weights and ``extra`` flags, so another matcher reuses them."""
    name = features if weights is None else f"{features}-{Path(weights).stem}"
    out = root / "-".join(["out", name, *extra]).replace("--", "")
    argv = ["--dataset", str(root / "ds"), "--outputs", str(out), "--features", features]
    argv += ["--netvlad-weights", str(ckpt), "--query-focal", "scaled", "--matcher", matcher]
    argv += extra
    if weights is not None:
        argv += ["--weights", weights]
    try:
        results = inloc.main(argv)
    except inloc.PipelineError as err:  # nothing localized: every query counts as a failure
        print(f"{features} {weights or ''}: {err}", file=sys.stderr)
        return {}
    return evaluate.evaluate("inloc", results, root / "gt.txt")


def localized_counts(stats: Dict) -> List[int]:
    """Queries within each InLoc threshold, summed over the floors."""
    per_threshold = zip(*[[round(n * r) for r in rec] for n, rec, _ in stats.values()])
    return [sum(c) for c in per_threshold]


def main(argv=None) -> Dict[str, List[int]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--weights", nargs="+", default=["tasp_v2"], help="TaSP weights (names or paths)"
    )
    p.add_argument("--queries-per-floor", type=int, default=2, help="the tests use 2 (4 queries)")
    p.add_argument("--max-keypoints", type=int, help="override the TaSP preset's 4096")
    p.add_argument(
        "--scales",
        type=float,
        nargs="+",
        help="also run each TaSP weights at these image scales (e.g. 1 0.71 0.5)",
    )
    p.add_argument("--matcher", default="NN-mutual", help="hloc matcher preset for every method")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", type=Path, help="keep the scene and outputs here (default: temp)")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        make_scene(root, args.queries_per_floor, args.seed)
        n = 2 * args.queries_per_floor
        ckpt = netvlad.make_random_checkpoint(root / "netvlad.mat")
        keypoints = (
            [] if args.max_keypoints is None else ["--max-keypoints", str(args.max_keypoints)]
        )
        runs = {"sift": ("sift", None, [])}
        for w in args.weights:
            runs[f"tasp {w}"] = ("tasp_inloc", w, keypoints)
            if args.scales:
                scales = [f"{x:g}" for x in args.scales]
                runs[f"tasp {w} scales {' '.join(scales)}"] = (
                    "tasp_inloc",
                    w,
                    keypoints + ["--scales", *scales],
                )
        counts = {}
        for name, (features, weights, extra) in runs.items():
            stats = run_method(root, features, weights, ckpt, extra, args.matcher)
            counts[name] = localized_counts(stats) if stats else [0, 0, 0]
    head = " / ".join(f"({t} m, {r} deg)" for t, r in evaluate.THRESHOLDS["inloc"])
    print(f"\nGenerated InLoc scene, {n} queries, {args.matcher}: localized within {head}")
    for name, c in counts.items():
        print(f"  {name:<44} " + " / ".join(f"{x}/{n}" for x in c))
    return counts


if __name__ == "__main__":
    main()
