"""Results as text: the Markdown tables of ``benchmarks.compare`` and ``benchmarks.speed extract``.

Nothing here measures or scores; every function turns records that are already computed into
table cells and lines.

* ``markdown_table``, ``pct``, ``num``: the table and the cell formats every benchmark shares.
* ``render_comparison``: the report of ``benchmarks.compare`` (summary, homography pairs, pose
  pairs, extraction), from its result dict.
* ``render_speed``: what ``benchmarks.speed extract`` prints, from its records and the accuracy
  read from ``benchmarks.compare`` reports (``ACCURACY_KEYS``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .datasets import ICL_SET
from .metrics import AUC_THRESHOLDS, MMA_THRESHOLDS

# The accuracy columns of the speed table: (label, keys of the value in a compare report's
# "methods" -> "tasp" entry).
ACCURACY_KEYS = [
    ("MMA@1", ("homography", "all", "mma", "1")),
    ("MMA@3", ("homography", "all", "mma", "3")),
    ("strecha AUC@5", ("pose", "strecha_dev", "auc", "5")),
    ("AUC@10", ("pose", "strecha_dev", "auc", "10")),
    ("AUC@20", ("pose", "strecha_dev", "auc", "20")),
]
METHOD_LABELS = {
    "sift": "RootSIFT (OpenCV)",
    "orb": "ORB (OpenCV)",
    "aliked": "ALIKED-N16",
    "disk": "DISK",
    "xfeat": "XFeat",
}


# ----------------------------------------------------------------------------- cells and tables
def markdown_table(header: List[str], rows: List[List[str]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def num(x: Optional[float], fmt: str = "{:.0f}") -> str:
    return "-" if x is None else fmt.format(x)


def section(title: str, header: List[str], rows: List[List[str]]) -> List[str]:
    """The lines of one titled table, a blank line after it."""
    return [f"### {title}", "", markdown_table(header, rows), ""]


# ----------------------------------------------------------------------------- benchmarks.compare
def method_label(name: str, report: Dict) -> str:
    if name in ("tasp", "tasp_dog"):
        weights = report["methods"][name].get("speed", {}).get("weights")
        label = "TaSP" if name == "tasp" else "TaSP at DoG keypoints"
        return f"{label} ({Path(weights).name})" if weights else f"{label} (random init)"
    return METHOD_LABELS.get(name, name)


def render_comparison(report: Dict) -> str:
    """The Markdown report: a summary table, then homography, pose and speed details, then the
    methods that did not run."""
    labelled = [(method_label(name, report), res) for name, res in report["methods"].items()]
    ran = [(label, res) for label, res in labelled if "error" not in res]
    failed = [f"- {label}: not run ({res['error']})" for label, res in labelled if "error" in res]
    lines = comparison_heading(report) + summary_section(report, ran)
    lines += homography_section(ran) + pose_section(ran) + extraction_section(report, ran)
    return "\n".join(lines + failed)


def comparison_heading(report: Dict) -> List[str]:
    """Date, machine and load, image size and the sources of the pairs."""
    cfg, env = report["config"], report["environment"]
    return [
        f"## Local-feature benchmark ({time.strftime('%Y-%m-%d', time.localtime())})",
        "",
        f"- device: {env['device']} ({env['cpu']}, {env['cpu_count']} CPUs, "
        f"torch {env['torch']} with {env['torch_threads']} threads; load average at start "
        f"{env['load_average_at_start']}, at end {env.get('load_average_at_end')})",
        f"- images: longer side {cfg['max_side']} px, at most {cfg['max_keypoints']} "
        f"keypoints, mutual nearest neighbours (cosine) for every method",
        f"- homography pairs: {report['homography_source']}",
        f"- pose pairs: {report['pose_source']}",
        "",
    ]


def summary_section(report: Dict, ran: List[Tuple[str, Dict]]) -> List[str]:
    """One row per method; the pose columns are those of the first held-out pose set."""
    pose_set = next((k for k in report.get("pose_sets", []) if k != ICL_SET), "pose")
    header = [
        "method",
        "MMA@1 %",
        "MMA@3 %",
        "MMA@3 illum. %",
        "MMA@3 viewp. %",
        *(f"{pose_set} AUC@{t} %" for t in AUC_THRESHOLDS),
        *(f"AUC@{t} LO-RANSAC %" for t in AUC_THRESHOLDS),
        "matches/pair",
        "inliers/pair",
        "kpts/img",
        "ms/img",
        "peak RSS MiB",
    ]
    return section("Summary", header, [summary_row(label, res) for label, res in ran])


def summary_row(label: str, res: Dict) -> List[str]:
    speed, hom = res["speed"], res.get("homography") or {}
    # The summary shows the held-out set only, never the training-domain one.
    pose = next((v for k, v in res.get("pose", {}).items() if k != ICL_SET), None)
    return [
        label,
        *(pct(hom["all"]["mma"][t]) if "all" in hom else "-" for t in (1, 3)),
        pct(hom["illumination"]["mma"][3]) if "illumination" in hom else "-",
        pct(hom["viewpoint"]["mma"][3]) if "viewpoint" in hom else "-",
        *(pct(pose["auc"][t]) if pose else "-" for t in AUC_THRESHOLDS),
        *(pct(pose["auc_lo"][t]) if pose and pose.get("auc_lo") else "-" for t in AUC_THRESHOLDS),
        num(pose["matches"]) if pose else "-",
        num(pose["inliers"]) if pose else "-",
        num(speed["keypoints_mean"]),
        num(1000 * speed["time_median_s"]),
        num(speed["peak_rss_mib"]),
    ]


def homography_section(ran: List[Tuple[str, Dict]]) -> List[str]:
    """MMA per threshold, each subset of each method a row; nothing without homography pairs."""
    rows = []
    for label, res in ran:
        hom = res.get("homography") or {}
        for subset in ("all", "illumination", "viewpoint"):
            if subset in hom:
                h = hom[subset]
                rows.append(
                    [
                        label,
                        f"{subset} ({h['n_pairs']})",
                        *(pct(h["mma"][t]) for t in MMA_THRESHOLDS),
                        num(h["matches"]),
                        num(h["correct_3px"]),
                    ]
                )
    if not rows:
        return []
    header = ["method", "subset (pairs)", *(f"MMA@{t}px" for t in MMA_THRESHOLDS)]
    header += ["matches/pair", "correct@3px/pair"]
    return section("Homography pairs: mean matching accuracy (%)", header, rows)


def pose_section(ran: List[Tuple[str, Dict]]) -> List[str]:
    """Pose AUC by RANSAC and LO-RANSAC, each pose set of each method a row; nothing without."""
    rows = [
        pose_row(label, set_name, ps)
        for label, res in ran
        for set_name, ps in res.get("pose", {}).items()
    ]
    if not rows:
        return []
    header = [
        "method",
        "set (pairs)",
        *(f"AUC@{t}°" for t in AUC_THRESHOLDS),
        *(f"AUC@{t}° LO-RANSAC" for t in AUC_THRESHOLDS),
        "matches/pair",
        "RANSAC inliers/pair",
        "epipolar prec. %",
        "failed",
    ]
    lines = section("Pose pairs: relative-pose AUC (%), max(angle R, angle t)", header, rows)
    return lines + scale_section(ran)


def scale_section(ran: List[Tuple[str, Dict]]) -> List[str]:
    """LO-RANSAC (else RANSAC) AUC per scale-ratio bin of the pose sets that have them."""
    rows = []
    for label, res in ran:
        for set_name, ps in res.get("pose", {}).items():
            for bin_name, b in ps.get("by_scale", {}).items():
                auc = b.get("auc_lo") or b["auc"]
                cells = [pct(auc[t]) for t in AUC_THRESHOLDS] if auc else ["-"] * 3
                rows.append([label, set_name, f"{bin_name} ({b['n_pairs']})", *cells])
    if not rows:
        return []
    header = ["method", "set", "scale ratio (pairs)", *(f"AUC@{t}°" for t in AUC_THRESHOLDS)]
    return section(
        "Pose AUC (%) by the pairs' scale ratio (LO-RANSAC; RANSAC without pycolmap)", header, rows
    )


def pose_row(label: str, set_name: str, ps: Dict) -> List[str]:
    return [
        label,
        f"{set_name} ({ps['n_pairs']})",
        *(pct(ps["auc"][t]) for t in AUC_THRESHOLDS),
        *(pct(ps["auc_lo"][t]) if ps.get("auc_lo") else "-" for t in AUC_THRESHOLDS),
        num(ps["matches"]),
        num(ps["inliers"]),
        pct(ps["epipolar_precision"]),
        str(ps["failed"]),
    ]


def extraction_section(report: Dict, ran: List[Tuple[str, Dict]]) -> List[str]:
    """Keypoints, time and memory of each method's extraction subprocess."""
    header = [
        "method",
        "kpts/img",
        "dim",
        "median ms/img",
        "mean ms/img",
        "peak RSS MiB",
        "extract peak MiB",
        "CUDA peak MiB",
        "matching",
    ]
    rows = [extraction_row(label, res["speed"]) for label, res in ran]
    title = f"Extraction at {report['config']['max_side']} px ({report['environment']['device']})"
    return section(title, header, rows)


def extraction_row(label: str, speed: Dict) -> List[str]:
    return [
        label,
        num(speed["keypoints_mean"]),
        str(speed["descriptor_dim"]),
        num(1000 * speed["time_median_s"]),
        num(1000 * speed["time_mean_s"]),
        num(speed["peak_rss_mib"]),
        num(speed["extract_peak_mib"]),
        num(speed["cuda_peak_allocated_mib"]),
        speed["descriptor_note"],
    ]


# ----------------------------------------------------------------------------- speed extract
def render_speed(
    args,
    env: Dict,
    records: List[Dict],
    accuracy: Dict[str, Dict[str, float]],
    n_images: int,
    first_size: Sequence[int],
) -> str:
    """The machine and its load, the table of entries and, with accuracy, how to read it.
    ``first_size``: (height, width) of the first image at the first size."""
    h, w = first_size
    lines = [
        f"## Extraction on {env['device']} ({env['cpu_count']} CPUs, torch {env['torch']}, "
        f"{env['torch_threads']} threads), {n_images} "
        f"{'synthetic' if args.synthetic else 'real'} images (first: {w}x{h} at "
        f"{args.sizes[0]} px) x {args.repeats} interleaved passes; load average "
        f"{env['load_average_at_start']} at start, {env['load_average_at_end']} at end",
        "",
        f"CPU: {env['cpu_model']['model']}, units: "
        f"{', '.join(env['cpu_model']['units']) or 'none of AVX2/AVX-512/AMX'}; GFLOP/s = "
        f"the network's FLOPs (torch.utils.flop_counter, plain modules) / median s/img",
        "",
        speed_table(records, accuracy, args.accuracy_reference),
    ]
    if accuracy:
        lines += [
            "",
            f"Accuracy (benchmarks.compare, 1024 px): the {args.accuracy_reference} row in "
            f"points (%), the other TaSP rows as differences from it, each from the report "
            f"of its mode (else of the precision it ran as); the same at every size.",
        ]
    return "\n".join(lines)


def speed_table(
    records: List[Dict], accuracy: Dict[str, Dict[str, float]], reference_mode: str = "fp32"
) -> str:
    """One row per record: time, memory, keypoints, GFLOP/s and the accuracy of its TaSP mode."""
    headers = [
        "entry (runs as)",
        "max side",
        "image",
        "s/img",
        "img/s",
        "peak RSS MiB",
        "extract peak MiB",
        "kpts/img",
        "GFLOP/s",
    ] + [f"{k} (Δ)" for k, _ in ACCURACY_KEYS]
    reference = accuracy.get(reference_mode, {})
    rows = [speed_row(rec, accuracy, reference) for rec in records]
    return markdown_table(headers, rows)


def speed_row(rec: Dict, accuracy: Dict[str, Dict[str, float]], reference: Dict) -> List[str]:
    label = rec["entry"] + (f" ({rec['precision']})" if "precision" in rec else "")
    if rec.get("allocator", "shipped") != "shipped":  # as each package ships: no note
        label += f", {rec['allocator']} malloc"
    h, w = rec["image_size"]
    if "error" in rec or "time_median_s" not in rec:
        blanks = [""] * (6 + len(ACCURACY_KEYS))
        return [
            label,
            str(rec["max_side"]),
            f"{w}x{h}",
            "not run: " + rec.get("error", "?"),
            *blanks,
        ]
    acc = {}
    if rec["entry"].startswith("tasp"):  # the mode's own report, else that of what it ran as
        mode = rec["entry"].split(":")[-1]
        acc = accuracy.get(mode) or accuracy.get(rec.get("precision", ""), {})
    return [
        label,
        str(rec["max_side"]),
        f"{w}x{h}",
        f"{rec['time_median_s']:.2f}",
        f"{1 / rec['time_median_s']:.2f}",
        num(rec["peak_rss_mib"]),
        num(rec["extract_peak_mib"]),
        num(rec["keypoints_mean"]),
        num(rec["gflop"] / rec["time_median_s"]) if rec.get("gflop") else "",
        *accuracy_cells(acc, reference),
    ]


def accuracy_cells(acc: Dict[str, float], reference: Dict[str, float]) -> List[str]:
    """The reference mode's values in points, those of another mode as differences from them."""
    cells = []
    for label, _ in ACCURACY_KEYS:
        a, r = acc.get(label), reference.get(label)
        if a is None or r is None:
            cells.append("")
        else:
            cells.append(f"{a:.1f}" if acc is reference else f"{a - r:+.2f}")
    return cells
