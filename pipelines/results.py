"""Results files in the format of visuallocalization.net: `name qw qx qy qz tx ty tz`."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from pipelines.poses import Pose
from tasp_hloc.io.files import read_rows, write_text_atomic


def results_name(name: str, prepend_camera_name: bool = False) -> str:
    """The name the benchmarks expect: the file name, optionally with its camera folder."""
    parts = name.split("/")
    return "/".join(parts[-2:]) if prepend_camera_name else parts[-1]


def format_pose(name: str, q, t) -> str:
    """One results line as visuallocalization.net takes it: `name qw qx qy qz tx ty tz`, the
    quaternion unit-norm with qw >= 0, every number in fixed-point with 10 decimals (no
    exponent), fields separated by one space."""
    q = np.asarray(q, float).reshape(4)
    t = np.asarray(t, float).reshape(3)
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(t))) or np.linalg.norm(q) == 0:
        raise ValueError(f"Pose of {name} is not finite: q={q}, t={t}")
    q = q / np.linalg.norm(q)
    q = -q if q[0] < 0 else q
    numbers = (f"{x:.10f}" for x in (*q, *t))
    return " ".join([name, *(n if n.strip("-0.") else n.lstrip("-") for n in numbers)])


def write_results(
    poses: Mapping[str, Pose],
    path: Path,
    prepend_camera_name: bool = False,
    order: Optional[Sequence[str]] = None,
):
    """Write `name qw qx qy qz tx ty tz` lines (cam_from_world), atomically: the submission file
    of visuallocalization.net for Aachen v1.1 and InLoc (see :func:`format_pose`).

    `poses` maps image names (any path prefix) to (qvec wxyz, tvec); the file names only (as
    hloc writes them, or camera/file with `prepend_camera_name`) are written, in the order of
    `order` (e.g. the query list) if given, else in the order of `poses`.
    """
    names = list(order) if order is not None else list(poses)
    missing = [n for n in names if n not in poses]
    if missing:
        raise ValueError(
            f"No pose for {len(missing)} queries, e.g. {missing[:3]}; fill them in "
            "first (complete_results)."
        )
    names += [n for n in poses if n not in set(names)]
    lines, seen = [], set()
    for name in names:
        out = results_name(name, prepend_camera_name)
        if out in seen:
            raise ValueError(
                f"Two queries map to the same results name {out!r}; "
                "use prepend_camera_name to disambiguate."
            )
        seen.add(out)
        lines.append(format_pose(out, *poses[name]))
    write_text_atomic(Path(path), "\n".join(lines) + ("\n" if lines else ""))


def read_results(path: Path) -> Dict[str, Pose]:
    """Parse a results file back; raises ValueError naming the file and line on bad input."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Results file {path} does not exist.")
    poses = {}
    for i, cols in read_rows(path, 8, "`name qw qx qy qz tx ty tz`"):
        line = " ".join(cols)
        try:
            vals = np.array(cols[1:8], float)
        except ValueError:
            raise ValueError(f"{path}:{i}: non-numeric pose in {line!r}") from None
        if not np.all(np.isfinite(vals)):
            raise ValueError(f"{path}:{i}: non-finite pose in {line!r}")
        if abs(np.linalg.norm(vals[:4]) - 1) > 1e-3:
            raise ValueError(f"{path}:{i}: quaternion is not unit-norm in {line!r}")
        if cols[0] in poses:
            raise ValueError(f"{path}:{i}: duplicate entry for {cols[0]}")
        poses[cols[0]] = (vals[:4], vals[4:7])
    return poses


def complete_results(
    poses: Dict[str, Pose],
    query_names: Sequence[str],
    fallback: Optional[Mapping[str, Pose]] = None,
) -> List[str]:
    """Give every query a line: missing ones get `fallback[name]` or the identity pose.

    Returns the names that were filled in (not localized).
    """
    missing = [q for q in query_names if q not in poses]
    for q in missing:
        poses[q] = (fallback or {}).get(q, (np.array([1.0, 0, 0, 0]), np.zeros(3)))
    return missing
