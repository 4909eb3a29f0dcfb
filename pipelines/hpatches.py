"""HPatches sequences: mean matching accuracy (MMA) at 1..10 px, as in D2-Net and the TaSP paper.

    python -m pipelines.hpatches --dataset hpatches-sequences-release --outputs outputs/hpatches

Each sequence folder (i_* illumination, v_* viewpoint) holds 1.ppm..6.ppm and H_1_2..H_1_6. Image 1
is matched to images 2..6 with mutual nearest neighbours; a match is correct when image 1's
keypoint mapped by the homography lands within the threshold of its match. MMA is the mean over
pairs of the fraction of correct matches (0 for a pair without matches). Illumination, viewpoint
and overall curves are reported apart and plotted. Features and matches go through hloc (skipped
when already in the files, so reruns resume).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from pipelines.common import cli_parser, logger, require_hloc
from pipelines.hloc_steps import (
    add_feature_args,
    check_features,
    extract,
    feature_conf_from_args,
    match,
    matcher_conf,
)
from pipelines.match_metrics import homography_match_errors, mean_matching_accuracy
from tasp_hloc.io.files import write_text_atomic
from tasp_hloc.io.hloc_format import write_pairs

# The D2-Net protocol drops these 8 sequences (their images are much larger than the rest).
D2NET_EXCLUDED = [
    "i_contruction",
    "i_crownnight",
    "i_dc",
    "i_pencils",
    "i_whitebuilding",
    "v_artisans",
    "v_astronautis",
    "v_talent",
]
THRESHOLDS = list(range(1, 11))


def list_sequences(root: Path, exclude: Sequence[str] = ()) -> List[str]:
    root = Path(root)
    seqs = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name[:2] in ("i_", "v_"))
    if not seqs:
        raise FileNotFoundError(
            f"No i_*/v_* sequence folders in {root}: expected the "
            "hpatches-sequences-release layout."
        )
    for s in seqs:
        need = [root / s / f"{k}.ppm" for k in range(1, 7)] + [
            root / s / f"H_1_{k}" for k in range(2, 7)
        ]
        missing = [str(p) for p in need if not p.exists()]
        if missing:
            raise FileNotFoundError(f"Sequence {s} is incomplete; missing {missing[:3]}.")
    return [s for s in seqs if s not in set(exclude)]


def correct_fraction(
    kp0: np.ndarray,
    kp1: np.ndarray,
    matches: np.ndarray,
    H: np.ndarray,
    thresholds: Sequence[float] = THRESHOLDS,
) -> np.ndarray:
    """Fraction of matches (M, 2 indices) whose kp0 mapped by H is within each threshold."""
    errors = homography_match_errors(kp0, kp1, matches, H)
    return np.array(list(mean_matching_accuracy(errors, thresholds).values()))


def summarize(per_pair: Dict[str, np.ndarray]) -> Dict[str, List[float]]:
    """{'overall'|'illumination'|'viewpoint': MMA per threshold} from {seq/k: fractions}."""
    groups = {"overall": [], "illumination": [], "viewpoint": []}
    for key, frac in per_pair.items():
        groups["overall"].append(frac)
        groups["illumination" if key.startswith("i_") else "viewpoint"].append(frac)
    return {
        g: (np.mean(v, 0).tolist() if v else [float("nan")] * len(THRESHOLDS))
        for g, v in groups.items()
    }


def plot(mma: Dict[str, List[float]], path: Path, label: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True)
    for ax, g in zip(axes, ["overall", "illumination", "viewpoint"]):
        ax.plot(THRESHOLDS, mma[g], "o-", label=label)
        ax.set_title(g.capitalize())
        ax.set_xlabel("threshold [px]")
        ax.set_xlim(1, 10)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("MMA")
    axes[0].legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args):
    require_hloc()
    import h5py
    from hloc.utils.io import get_matches

    root, outputs = Path(args.dataset), Path(args.outputs)
    seqs = list_sequences(root, args.exclude)
    outputs.mkdir(parents=True, exist_ok=True)
    fconf = feature_conf_from_args(args)
    mconf = matcher_conf(args.matcher)
    names = [f"{s}/{k}.ppm" for s in seqs for k in range(1, 7)]
    features = extract(fconf, root, outputs, names)
    check_features(features, names)
    pairs = outputs / "pairs-hpatches.txt"
    write_pairs([(f"{s}/1.ppm", f"{s}/{k}.ppm") for s in seqs for k in range(2, 7)], pairs)
    matches = match(mconf, pairs, fconf, outputs)

    per_pair, n_feats, n_matches = {}, [], []
    with h5py.File(str(features), "r") as fd:
        kps = {n: fd[n]["keypoints"][()].astype(np.float64) for n in names}
    for s in seqs:
        n_feats += [len(kps[f"{s}/{k}.ppm"]) for k in range(1, 7)]
        for k in range(2, 7):
            H = np.loadtxt(root / s / f"H_1_{k}")
            m, _ = get_matches(matches, f"{s}/1.ppm", f"{s}/{k}.ppm")
            n_matches.append(len(m))
            per_pair[f"{s}/{k}"] = correct_fraction(kps[f"{s}/1.ppm"], kps[f"{s}/{k}.ppm"], m, H)
    mma = summarize(per_pair)
    report = {
        "features": fconf["output"],
        "matcher": mconf["output"],
        "sequences": len(seqs),
        "thresholds_px": THRESHOLDS,
        "mma": mma,
        "mean_features": float(np.mean(n_feats)),
        "mean_matches": float(np.mean(n_matches)),
    }
    tag = f"{fconf['output']}_{mconf['output']}"
    write_text_atomic(outputs / f"hpatches_mma_{tag}.json", json.dumps(report, indent=1))
    plot(mma, outputs / f"hpatches_mma_{tag}.png", fconf["output"])
    print(
        f"{len(seqs)} sequences, {report['mean_features']:.0f} features/image, "
        f"{report['mean_matches']:.0f} matches/pair"
    )
    for g in ("overall", "illumination", "viewpoint"):
        print(f"MMA {g:<12} " + " ".join(f"{x:.3f}" for x in mma[g]) + "  (1..10 px)")
    logger.info("Wrote %s and the plot next to it.", outputs / f"hpatches_mma_{tag}.json")
    return report


def main(argv=None):
    p = cli_parser(__doc__, "hpatches-sequences-release root")
    add_feature_args(p, "tasp")
    p.add_argument("--matcher", default="NN-mutual")
    p.add_argument(
        "--exclude",
        nargs="*",
        default=D2NET_EXCLUDED,
        help="sequences left out (default: the 8 of the D2-Net protocol)",
    )
    return run(p.parse_args(argv))


if __name__ == "__main__":
    from pipelines.common import run_cli

    run_cli(main)
