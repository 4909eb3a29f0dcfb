"""Crash-safe resumption of hloc's HDF5 outputs.

hloc's extract/match steps write their files themselves (reopened per image or pair): a kill
loses the item in flight or, mid-flush, the file's structure; `repair_h5` resumes from either.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from pipelines.common import logger
from tasp_hloc.io.h5_journal import open_append, recover

# The datasets every complete group holds (a group lacking some was being written).
FEATURE_KEYS = ("keypoints", "descriptors", "image_size")
MATCH_KEYS = ("matches0", "matching_scores0")


def repair_h5(path: Path, required: Sequence[str]) -> None:
    """Make an .h5 left by a killed run usable again, so the step resumes instead of failing.

    First what `tasp_hloc` applies to its own files (undo an interrupted journaled write; clear
    the write flag that a killed hloc writer leaves on libver="latest" files), then deletes
    groups whose datasets are incomplete (the one hloc was writing); hloc recomputes exactly
    those. The deletions are journaled too. An unreadable file is moved aside.
    """
    import h5py

    path = Path(path)
    if not path.exists():
        return
    broken = []

    def visit(name, obj):
        if isinstance(obj, h5py.Group):
            keys = set(obj.keys())
            if (keys & set(required) and not set(required) <= keys) or (not keys and name):
                broken.append(name)

    try:
        recover(path)
        with h5py.File(str(path), "r") as fd:  # read-only: a healthy file is left untouched
            fd.visititems(visit)
        if broken:
            with open_append(path) as out:
                for name in broken:
                    del out.h5[name]
            logger.warning(
                "Removed %d incomplete entries from %s; they will be recomputed.", len(broken), path
            )
    except OSError as e:
        bad = path.with_name(path.name + ".corrupt")
        os.replace(path, bad)
        logger.warning("%s is unreadable (%s); moved to %s and recomputing it.", path, e, bad)
