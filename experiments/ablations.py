"""Training experiments under one budget, compared with ``benchmarks.compare --methods tasp``.

Each arm trains the same number of steps (batch 4 pairs of 256x256, the same seed), is exported
to ``<root>/weights/<arm>.pth`` and evaluated on the held-out homography pairs (and, for the
``multiview`` group, the pose sets). Finished arms are skipped, so an interrupted run resumes::

    python -m experiments.ablations --steps 100                  # the homography group, ~1 h
    python -m experiments.ablations --arms reference base_loss   # a subset
    python -m experiments.ablations --group multiview --steps 120 --root runs/ablation_mv

``homography`` group: each arm varies one thing against ``reference`` (the ``local_v1`` recipe:
EfficientNet-Lite0 from ImageNet, homographic + RGB-D + rendered pairs, the full TaSP loss).
``multiview`` group (issue 20): from ``tasp_v2``, each arm adds one item to the one before it —
the SfM pairs of the multiview scenes (item 2), their views resized 1:2 (item 4), the trained
sub-pixel placement (item 3) — evaluated on the homography pairs, strecha_dev and the held-out
``opensfm_lund`` (per scale-ratio bin).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, NamedTuple, Optional, Sequence

from benchmarks import compare
from benchmarks.report import markdown_table, num, pct
from tasp_hloc.io.files import write_text_atomic


class Arm(NamedTuple):
    config: str
    overrides: list
    changes: str
    eval_conf: dict = {}  # TaSP inference settings on top of today's defaults
    trained_as: Optional[str] = None  # another arm's run, measured with other eval_conf
    pose: bool = True  # False: homography pairs only, whatever the group's pose sets


# The multiview arms continue tasp_v2 at the rounds' learning rate, on a seed of their own.
_MV = ["train.lr=3e-4", "seed=3", "data.seed=3"]
_SCALE = "data.sources.0.scale_range=[0.5,2.0]"
# L_kpt enters at 1e-3 x ~1.5; 1e-2 x ~0.2 px^2 gives the sub-pixel term the same order (a guess)
_SUBPX = "loss.lambda_subpixel=1e-2"

ARMS: Dict[str, Arm] = {
    "reference": Arm(
        "local_v1", [], "Lite0 ImageNet init, homographic + RGB-D + rendered, TaSP loss"
    ),
    "b0_random": Arm(
        "local_v1",
        [
            "model.backbone=efficientnet_b0",
            "model.pretrained_backbone=false",
            "train.freeze_blocks=0",
        ],
        "EfficientNet-B0 from random init",
    ),
    "base_loss": Arm(
        "local_v1",
        ["loss.task_aligned=false", "loss.importance_weighting=false", "loss.window=square"],
        "base loss: triplet + CE, square window",
    ),
    "homographic_only": Arm("ablation/homographic_only", [], "data: homographic pairs only"),
    "no_rgbd": Arm("ablation/no_rgbd", [], "data: homographic + rendered, no RGB-D"),
    "more_photos": Arm("local_v2", [], "data: + 26 public-domain/CC0/Apache photos (local_v2)"),
    "mv_no_sfm": Arm(
        "multiview_v1",
        [*_MV, "data.sources.0.weight=0"],
        "tasp_v2 + multiview_v1's mix without its SfM pairs",
    ),
    "mv_sfm": Arm("multiview_v1", _MV, "+ SfM pairs of 9 multiview scenes, 50 % (item 2)"),
    "mv_sfm_scale": Arm("multiview_v1", [*_MV, _SCALE], "+ their views resized 1:2 (item 4)"),
    "mv_sfm_scale_subpx": Arm(
        "multiview_v1",
        [*_MV, _SCALE, _SUBPX],
        "+ trained sub-pixel placement, soft-argmax (item 3)",
        {"subpixel": "centroid"},
    ),
}
# item 3's control: the scale arm's run, measured with the sub-pixel arm's refinement
ARMS["mv_sfm_scale_softargmax"] = ARMS["mv_sfm_scale"]._replace(
    changes="the same weights, soft-argmax refinement (control of item 3's placement)",
    eval_conf={"subpixel": "centroid"},
    trained_as="mv_sfm_scale",
    pose=False,
)

GROUPS = {
    "homography": [
        "reference",
        "b0_random",
        "base_loss",
        "homographic_only",
        "no_rgbd",
        "more_photos",
    ],
    "multiview": [
        "mv_no_sfm",
        "mv_sfm",
        "mv_sfm_scale",
        "mv_sfm_scale_subpx",
        "mv_sfm_scale_softargmax",
    ],
}
MULTIVIEW_ROOT = Path(
    os.environ.get("TASP_MULTIVIEW", Path("~/.cache/tasp_hloc/multiview").expanduser())
)
POSE_SETS = {"homography": "none", "multiview": f"eval/strecha_dev,{MULTIVIEW_ROOT}/opensfm_lund"}

EVAL_KEYS = ("detection_threshold", "nms_window", "remove_borders", "subpixel", "corner_radius")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m experiments.ablations",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--group", default="homography", choices=list(GROUPS))
    p.add_argument(
        "--arms", nargs="+", default=None, choices=list(ARMS), help="default: the group's"
    )
    p.add_argument("--steps", type=int, default=100, help="training steps of every arm")
    p.add_argument("--root", type=Path, default=Path("runs/ablation"))
    p.add_argument("--data", type=Path, default=compare.DEFAULT_DATA)
    p.add_argument("--max-side", type=int, default=1024)
    p.add_argument("--pose-sets", default=None, help="compare's --pose-sets (default: the group's)")
    args = p.parse_args(argv)
    args.arms = args.arms or GROUPS[args.group]
    args.pose_sets = args.pose_sets or POSE_SETS[args.group]
    return args


def run_name(arm: str) -> str:
    """The training run an arm is measured on (its own, or the one it shares)."""
    return ARMS[arm].trained_as or arm


def train(arm: str, steps: int, root: Path) -> Dict:
    """Train one arm (resuming) in a child process, once; returns its command and wall time."""
    arm = run_name(arm)
    config, overrides = ARMS[arm].config, ARMS[arm].overrides
    out = root / arm
    record = out / "train.json"
    if record.exists() and json.loads(record.read_text()).get("steps") == steps:
        return json.loads(record.read_text())
    cmd = [
        sys.executable,
        "-m",
        "tasp_hloc.train",
        config,
        *overrides,
        f"train.steps={steps}",
        f"name=ablation_{arm}",
        f"output_dir={out}",
        "train.checkpoint_every=50",
    ]
    t0 = time.time()
    with open(root / f"{arm}.log", "a") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    rec = {"train_wall_s": time.time() - t0, "command": " ".join(cmd[1:]), "steps": steps}
    record.write_text(json.dumps(rec, indent=1))
    return rec


def evaluate(
    arm: str, root: Path, args: argparse.Namespace, tasp_conf: Dict, pose_sets: str
) -> Dict:
    from tasp_hloc.train.export import export

    run = run_name(arm)
    weights = export(root / run, run, weights_dir=root / "weights")
    options = ["--tasp-conf", json.dumps(tasp_conf), "--data", str(args.data)]
    options += ["--pose-sets", pose_sets, "--max-side", str(args.max_side)]
    report = compare.tasp_report(weights, root / f"{arm}.bench.json", options)
    return report["methods"]["tasp"]


def _aucs(auc: Dict) -> str:
    return " / ".join(pct(auc[t]) for t in ("5", "10", "20"))


def table(results: Dict[str, Dict]) -> str:
    """One row per arm: homography MMA, then each pose set's LO-RANSAC AUC@5/10/20 and, where
    the set has scale ratios, its LO-RANSAC AUC@5 per scale-ratio bin."""
    pose_cols = []  # (set, bin or None), in the order the first arm that has them lists them
    for r in results.values():
        for name, res in (r["bench"].get("pose") or {}).items():
            for col in [(name, None)] + [(name, b) for b in res.get("by_scale") or {}]:
                if col not in pose_cols:
                    pose_cols.append(col)
    rows = []
    for arm, r in results.items():
        hom = r["bench"]["homography"]
        pose = r["bench"].get("pose") or {}
        cells = []
        for name, b in pose_cols:
            res = pose.get(name)
            if res is None or (b is not None and b not in (res.get("by_scale") or {})):
                cells.append("-")
            elif b is None:
                cells.append(_aucs(res["auc_lo"]))
            else:
                cells.append(pct(res["by_scale"][b]["auc_lo"]["5"]))
        rows.append(
            [
                arm,
                ARMS[arm].changes,
                *(pct(hom["all"]["mma"][t]) for t in ("1", "3", "5", "10")),
                pct(hom["illumination"]["mma"]["3"]),
                pct(hom["viewpoint"]["mma"]["3"]),
                num(hom["all"]["matches"]),
                *cells,
                f"{r['train_wall_s'] / 60:.0f}",
            ]
        )
    heads = [f"{n} LO AUC@5/10/20" if b is None else f"{n} {b}x AUC@5" for n, b in pose_cols]
    return markdown_table(
        [
            "arm",
            "changes",
            "MMA@1",
            "MMA@3",
            "MMA@5",
            "MMA@10",
            "MMA@3 illum.",
            "MMA@3 viewp.",
            "matches/pair",
            *heads,
            "train min",
        ],
        rows,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    args.root.mkdir(parents=True, exist_ok=True)
    from tasp_hloc.model.tasp import TaSP

    # every arm is evaluated with the same inference settings (today's defaults, written out)
    # but for what an arm changes at inference
    defaults = {k: TaSP.default_conf[k] for k in EVAL_KEYS}
    results: Dict[str, Dict] = {}
    for arm in args.arms:
        tasp_conf = {**defaults, **ARMS[arm].eval_conf}
        pose_sets = args.pose_sets if ARMS[arm].pose else "none"
        done = args.root / f"{arm}.json"
        if done.exists():
            rec = json.loads(done.read_text())
            if (
                rec.get("steps") == args.steps
                and rec.get("tasp_conf") == tasp_conf
                and rec.get("pose_sets") == pose_sets
            ):
                results[arm] = rec
                continue
        print(f"== {arm}: {ARMS[arm].changes} ({args.steps} steps)", file=sys.stderr, flush=True)
        rec = train(arm, args.steps, args.root)
        rec.update(tasp_conf=tasp_conf, pose_sets=pose_sets)
        rec["bench"] = compare.finite_or_none(evaluate(arm, args.root, args, tasp_conf, pose_sets))
        text = json.dumps(rec, indent=1, default=compare._json_default)
        write_text_atomic(done, text)
        results[arm] = json.loads(text)  # the same (string) keys as an arm read back from disk
        print(table(results), file=sys.stderr, flush=True)
    print(
        f"Training experiments ({args.group}), {args.steps} steps each (batch 4 x 256^2), TaSP at "
        f"{args.max_side} px, mutual NN; homography pairs (MMA in %) and pose sets "
        f"{args.pose_sets} (AUC in %)\n"
    )
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
