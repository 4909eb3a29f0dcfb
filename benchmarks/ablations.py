"""Training experiments under one budget, compared on the benchmark's homography pairs.

Each arm trains the same number of steps (batch 4 pairs of 256x256, the same seed), is exported
to ``<root>/weights/<arm>.pth`` and evaluated with ``benchmarks.compare --methods tasp`` on the
held-out homography pairs. Finished arms are skipped, so an interrupted run resumes::

    python -m benchmarks.ablations --steps 100                  # all arms, ~1 h on 2 CPU cores
    python -m benchmarks.ablations --arms reference base_loss   # a subset

The arms vary one thing each against ``reference`` (the ``local_v1`` recipe: EfficientNet-Lite0
from ImageNet, homographic + RGB-D + rendered pairs, the full TaSP loss).
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

from . import compare
from .report import markdown_table, num, pct

ARMS: Dict[str, tuple] = {
    # name: (config, overrides, what it changes)
    "reference": ("local_v1", [], "Lite0 ImageNet init, homographic + RGB-D + rendered, TaSP loss"),
    "b0_random": (
        "local_v1",
        [
            "model.backbone=efficientnet_b0",
            "model.pretrained_backbone=false",
            "train.freeze_blocks=0",
        ],
        "EfficientNet-B0 from random init",
    ),
    "base_loss": (
        "local_v1",
        ["loss.task_aligned=false", "loss.importance_weighting=false", "loss.window=square"],
        "base loss: triplet + CE, square window",
    ),
    "homographic_only": ("ablation/homographic_only", [], "data: homographic pairs only"),
    "no_rgbd": ("ablation/no_rgbd", [], "data: homographic + rendered, no RGB-D"),
    "more_photos": ("local_v2", [], "data: + 26 public-domain/CC0/Apache photos (local_v2)"),
}


EVAL_KEYS = ("detection_threshold", "nms_window", "remove_borders", "subpixel", "corner_radius")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.ablations",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--steps", type=int, default=100, help="training steps of every arm")
    p.add_argument("--root", type=Path, default=Path("runs/ablation"))
    p.add_argument("--data", type=Path, default=compare.DEFAULT_DATA)
    p.add_argument("--max-side", type=int, default=1024)
    return p.parse_args(argv)


def train(arm: str, steps: int, root: Path) -> Dict:
    """Train one arm (resuming) in a child process, once; returns its command and wall time."""
    config, overrides, _ = ARMS[arm]
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


def evaluate(arm: str, root: Path, data: Path, max_side: int, tasp_conf: Dict) -> Dict:
    from tasp_hloc.train.export import export

    weights = export(root / arm, arm, weights_dir=root / "weights")
    options = ["--tasp-conf", json.dumps(tasp_conf), "--data", str(data), "--pose-pairs", "none"]
    report = compare.tasp_report(
        weights, root / f"{arm}.bench.json", options + ["--max-side", str(max_side)]
    )
    return report["methods"]["tasp"]


def table(results: Dict[str, Dict]) -> str:
    rows = []
    for arm, r in results.items():
        hom = r["bench"]["homography"]
        rows.append(
            [
                arm,
                ARMS[arm][2],
                *(pct(hom["all"]["mma"][t]) for t in ("1", "3", "5", "10")),
                pct(hom["illumination"]["mma"]["3"]),
                pct(hom["viewpoint"]["mma"]["3"]),
                num(hom["all"]["matches"]),
                f"{r['train_wall_s'] / 60:.0f}",
            ]
        )
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
            "train min",
        ],
        rows,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    args.root.mkdir(parents=True, exist_ok=True)
    from tasp_hloc.model.tasp import TaSP

    # every arm is evaluated with the same inference settings (today's defaults, written out)
    tasp_conf = {k: TaSP.default_conf[k] for k in EVAL_KEYS}
    results: Dict[str, Dict] = {}
    for arm in args.arms:
        done = args.root / f"{arm}.json"
        if done.exists():
            rec = json.loads(done.read_text())
            if rec.get("steps") == args.steps and rec.get("tasp_conf") == tasp_conf:
                results[arm] = rec
                continue
        print(f"== {arm}: {ARMS[arm][2]} ({args.steps} steps)", file=sys.stderr, flush=True)
        rec = train(arm, args.steps, args.root)
        rec["tasp_conf"] = tasp_conf
        rec["bench"] = compare.finite_or_none(
            evaluate(arm, args.root, args.data, args.max_side, tasp_conf)
        )
        text = json.dumps(rec, indent=1, default=compare._json_default)
        done.write_text(text)
        results[arm] = json.loads(text)  # the same (string) keys as an arm read back from disk
        print(table(results), file=sys.stderr, flush=True)
    print(
        f"Training experiments, {args.steps} steps each (batch 4 x 256^2), TaSP on the held-out "
        f"homography pairs at {args.max_side} px, mutual NN; MMA in %\n"
    )
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
