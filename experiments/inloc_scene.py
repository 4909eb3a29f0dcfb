"""Localization on the generated InLoc scene: TaSP beside hloc's SIFT, in one run (needs hloc).

The scene is the one the pipeline tests render (``tests/pipeline_scenes.make_inloc``): two floors,
textured rooms, cutouts with exact XYZ, queries near a cutout with exact ground truth. Every
method runs the whole of ``python -m pipelines.inloc`` on the same files (random NetVLAD with
top-k over all cutouts, so retrieval is no factor), and the table gives how many queries each
localizes within InLoc's thresholds.

    PYTHONPATH=path/to/hloc python -m experiments.inloc_scene --weights tasp_v2 [--queries-per-floor 5]
        [--presets tasp_inloc tasp_dog]
        [--query-width 4032 --cutout-width 1280] [--keypoints-storage float64 float16]

``--query-width 4032`` renders the queries at the iPhone 7's 4032x3024 (the tests use 640x480),
where the storage of keypoints matters: ``--keypoints-storage float16`` also runs each TaSP
weights with the keypoints hloc's ``as_half`` made float16 before this project handed it
float64 (float16 steps by 2 px from 2048 px on).
"""

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import cv2

from pipelines import evaluate, inloc, netvlad

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
import pipeline_scenes  # noqa: E402  (the scene generator lives with the tests that use it)

# The renderer's remap takes under 32767 rows of 1024 samples: wider queries are rendered at
# this width and upsampled (the same pinhole camera, as pixel corners scale with the image).
MAX_RENDER_WIDTH = 2016


def make_scene(
    root: Path, queries_per_floor: int, seed: int, query_width: int = 640, cutout_width: int = 320
) -> Path:
    """Render the scene under ``root/ds`` (queries ``query_width`` px wide, 4:3, InLoc's lens;
    cutouts ``cutout_width`` px wide, the tests' lens scaled) and its ground truth as
    ``root/gt.txt``."""
    factor = -(-query_width // MAX_RENDER_WIDTH)
    width = query_width // factor
    queries = pipeline_scenes.make_inloc(
        root / "ds",
        seed=seed,
        n_queries_per_floor=queries_per_floor,
        size=(cutout_width, cutout_width * 3 // 4),
        f=180.0 * cutout_width / 320,
        qsize=(width, width * 3 // 4),
        qf=pipeline_scenes.INLOC_FOCAL / 4032 * width,
    )
    if factor > 1:
        for path in (root / "ds/query").rglob("*.JPG"):
            image = cv2.imread(str(path))
            cv2.imwrite(str(path), cv2.resize(image, None, fx=factor, fy=factor))
    pipeline_scenes.write_poses_txt(root / "gt.txt", queries)
    return root / "gt.txt"


@contextlib.contextmanager
def keypoints_stored_as(storage: str):
    """With "float16", TaSP hands hloc float32 keypoints, which hloc's ``as_half`` stores as
    float16 (the project's behaviour before it handed float64)."""
    if storage == "float64":
        yield
        return
    from hloc.extractors import tasp

    cls = next(v for v in vars(tasp).values() if isinstance(v, type) and hasattr(v, "_forward"))
    forward = cls._forward

    def float32_keypoints(self, data):
        pred = forward(self, data)
        pred["keypoints"] = pred["keypoints"].float()
        return pred

    cls._forward = float32_keypoints
    try:
        yield
    finally:
        cls._forward = forward


def run_method(
    root: Path,
    features: str,
    weights: Optional[str],
    ckpt: Path,
    extra: List[str] = (),
    matcher: str = "NN-mutual",
    storage: str = "float64",
) -> Dict:
    """Run the InLoc pipeline with one feature preset; its features are kept per preset,
    weights, ``extra`` flags and keypoint storage, so another matcher reuses them."""
    name = features if weights is None else f"{features}-{Path(weights).stem}"
    tags = [] if storage == "float64" else [storage]
    out = root / "-".join(["out", name, *extra, *tags]).replace("--", "")
    argv = ["--dataset", str(root / "ds"), "--outputs", str(out), "--features", features]
    argv += ["--netvlad-weights", str(ckpt), "--query-focal", "scaled", "--matcher", matcher]
    argv += extra
    if weights is not None:
        argv += ["--weights", weights]
    try:
        with keypoints_stored_as(storage):
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
        help="also run each TaSP preset at these image scales (e.g. 1 0.71 0.5)",
    )
    p.add_argument("--matcher", default="NN-mutual", help="hloc matcher preset for every method")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--query-width", type=int, default=640, help="InLoc's queries: 4032")
    p.add_argument(
        "--cutout-width",
        type=int,
        default=320,
        help="InLoc's cutouts: 1600; with 4032-px queries, 1280 keeps the scale gap near 1.7x",
    )
    p.add_argument(
        "--keypoints-storage",
        nargs="+",
        default=["float64"],
        choices=["float64", "float16"],
        help="how TaSP's keypoints reach the file (float16: hloc's as_half, as before)",
    )
    p.add_argument(
        "--presets",
        nargs="+",
        default=["tasp_inloc"],
        help="TaSP presets to run with each weights (e.g. tasp_inloc tasp_dog)",
    )
    p.add_argument("--workdir", type=Path, help="keep the scene and outputs here (default: temp)")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        make_scene(root, args.queries_per_floor, args.seed, args.query_width, args.cutout_width)
        n = 2 * args.queries_per_floor
        ckpt = netvlad.make_random_checkpoint(root / "netvlad.mat")
        keypoints = (
            [] if args.max_keypoints is None else ["--max-keypoints", str(args.max_keypoints)]
        )
        runs = {"sift": ("sift", None, [], "float64")}
        for w in args.weights:
            for preset in args.presets:
                name = "tasp" if preset == "tasp_inloc" else preset
                for storage in args.keypoints_storage:
                    label = "" if storage == "float64" else " keypoints float16"
                    runs[f"{name} {w}{label}"] = (preset, w, keypoints, storage)
                if args.scales:
                    scales = [f"{x:g}" for x in args.scales]
                    runs[f"{name} {w} scales {' '.join(scales)}"] = (
                        preset,
                        w,
                        keypoints + ["--scales", *scales],
                        "float64",
                    )
        counts = {}
        for name, (features, weights, extra, storage) in runs.items():
            stats = run_method(root, features, weights, ckpt, extra, args.matcher, storage)
            counts[name] = localized_counts(stats) if stats else [0, 0, 0]
    head = " / ".join(f"({t} m, {r} deg)" for t, r in evaluate.THRESHOLDS["inloc"])
    print(f"\nGenerated InLoc scene, {n} queries, {args.matcher}: localized within {head}")
    for name, c in counts.items():
        print(f"  {name:<44} " + " / ".join(f"{x}/{n}" for x in c))
    return counts


if __name__ == "__main__":
    main()
