"""Benchmark figures against training steps: the learning curve of one or more runs.

Each training checkpoint (``checkpoint_last.pth`` or a copy taken at some step) and each
released weights name is measured with ``benchmarks.compare --methods tasp`` on the same held-out
homography pairs and the first pose set (``eval/strecha_dev``); results are cached next to the
exported weights, so rerunning with more checkpoints only measures the new ones::

    python -m experiments.learning_curve runs/NAME/checkpoint_step*.pth --released tasp_v0 tasp_v1

(``train.keep_every=N`` keeps those checkpoints while training).

RootSIFT is not rerun here: the target it sets comes from one run of ``benchmarks.compare``.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from benchmarks import compare
from benchmarks.report import markdown_table, num, pct
from tasp_hloc.train.export import export

AUC_KEYS = ("5", "10", "20")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m experiments.learning_curve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoints", nargs="*", type=Path, help="training checkpoints (.pth)")
    p.add_argument("--released", nargs="*", default=[], help="released weights names to include")
    p.add_argument(
        "--root",
        type=Path,
        default=Path("runs/learning_curve"),
        help="exported weights and cached results",
    )
    p.add_argument("--data", type=Path, default=compare.DEFAULT_DATA)
    p.add_argument("--max-side", type=int, default=1024)
    p.add_argument("--quick", action="store_true", help="smoke run (compare --quick)")
    return p.parse_args(argv)


def export_checkpoint(checkpoint: Path, root: Path) -> tuple:
    """A training checkpoint -> (its weights file under ``root``, its step, its run name).

    The file is ``train.export``'s, with its entry in ``root/manifest.json``: what
    ``--tasp-weights PATH`` loads."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if "model" not in state:
        raise ValueError(
            f"{checkpoint} is not a training checkpoint (no 'model' entry); pass "
            f"released weights with --released NAME."
        )
    run = state.get("config", {}).get("name", checkpoint.parent.name)
    out = root / f"{run}_step{state['step']}.pth"
    if not out.exists():
        export(checkpoint, out.stem, weights_dir=root)
    return out, int(state["step"]), run


def measure(weights: str, out: Path, args: argparse.Namespace) -> Dict:
    """``benchmarks.compare`` for TaSP alone, in this process; cached in ``out``."""
    if out.exists():
        return json.loads(out.read_text())
    options = ["--data", str(args.data), "--max-side", str(args.max_side)]
    return compare.tasp_report(weights, out, options + (["--quick"] if args.quick else []))


def row(label: str, step: str, report: Dict) -> List[str]:
    res = report["methods"]["tasp"]
    hom = res["homography"]
    pose_name = next(iter(report["pose_sets"]))
    pose = res["pose"][pose_name]
    return [
        label,
        step,
        *(pct(hom["all"]["mma"][t]) for t in ("1", "3", "5", "10")),
        pct(hom["illumination"]["mma"]["3"]),
        pct(hom["viewpoint"]["mma"]["3"]),
        *(pct(pose["auc"][t]) for t in AUC_KEYS),
        *(pct(pose["auc_lo"][t]) if pose.get("auc_lo") else "-" for t in AUC_KEYS),
        num(pose["matches"]),
    ]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    rows = []
    for name in args.released:
        report = measure(name, args.root / f"{name}.json", args)
        rows.append((-1, row(name, "released", report)))
    for checkpoint in args.checkpoints:
        weights, step, run = export_checkpoint(checkpoint, args.root)
        report = measure(str(weights), weights.with_suffix(".json"), args)
        rows.append((step, row(run, str(step), report)))
        print(f"measured {checkpoint} (step {step})", file=sys.stderr)
    rows.sort(key=lambda r: r[0])
    header = [
        "weights",
        "step",
        "MMA@1",
        "MMA@3",
        "MMA@5",
        "MMA@10",
        "MMA@3 illum.",
        "MMA@3 viewp.",
        "AUC@5",
        "AUC@10",
        "AUC@20",
        "AUC@5 LO",
        "AUC@10 LO",
        "AUC@20 LO",
        "matches/pair",
    ]
    print(markdown_table(header, [r for _, r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
