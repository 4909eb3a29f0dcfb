"""The PNG of a run's training curves, drawn from its metrics CSV."""

import csv
import math
from pathlib import Path
from typing import Optional

from ..io.files import atomic_write


def plot_curves(csv_path: Path, png_path: Path) -> Optional[Path]:
    """Loss terms and weight statistics against steps, one panel each."""
    if not Path(csv_path).exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    keys = [
        k
        for k in ["total", "desc", "kpt", "triplet", "d_pos", "d_neg", "w", "s", "delta", "active"]
        if rows[0].get(k) not in (None, "")
    ]
    steps = [int(r["step"]) for r in rows]
    cols = 5
    fig, axes = plt.subplots(
        math.ceil(len(keys) / cols),
        cols,
        figsize=(3.2 * cols, 2.6 * math.ceil(len(keys) / cols)),
        squeeze=False,
    )
    for ax, key in zip(axes.flat, keys):
        ax.plot(steps, [float(r[key]) for r in rows])
        ax.set_title(key)
        ax.set_xlabel("step")
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    atomic_write(png_path, lambda f: fig.savefig(f, dpi=80, format="png"))
    plt.close(fig)
    return png_path
