"""How long a resumed extract/match takes to start, and what crash safety costs per item.

    python -m experiments.resume_start [--groups 20000] [--items 300] [--workdir DIR]

1. Builds a feature file of ``--groups`` tiny groups (hloc's layout) and times what a resumed
   extraction of those images plus 100 new ones does before its first image: find which are
   stored (``stored_names``: a check for an interrupted run, one link look-up per name) and
   open the file for appending (lock, check, open). Nothing is copied. The previous design
   listed every dataset of the file (``list_h5_names``) and copied the whole file to
   ``<file>.tmp``: both are timed too, the copy scaled to an Aachen-size file (7,700 images x
   4,096 keypoints).
2. Writes ``--items`` feature groups (1,024 keypoints, float16) and 10 x ``--items`` match
   groups the old way (plain h5py, one flush at the end) and through the undo journal
   (``open_append``), committing every second (the default) and after every item.
"""

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from tasp_hloc.io.h5_journal import open_append
from tasp_hloc.io.hloc_format import (
    list_h5_names,
    stored_names,
    write_features,
    write_matches,
)

AACHEN_IMAGES, AACHEN_KEYPOINTS, DESCRIPTOR_DIM = 7700, 4096, 128


def feature_item(rng, n):
    return {
        "keypoints": rng.uniform(0, 1000, (n, 2)).astype(np.float16),
        "descriptors": rng.normal(size=(DESCRIPTOR_DIM, n)).astype(np.float16),
        "scores": rng.uniform(size=n).astype(np.float16),
        "image_size": np.array([1024, 768]),
    }


class Timing:
    """Median wall-clock and CPU seconds: on a shared machine the CPU time is what the code
    costs, the wall time what it took there."""

    def __init__(self, fn, repeat=3):
        wall, cpu = [], []
        for _ in range(repeat):
            w, c = time.perf_counter(), time.process_time()
            fn()
            wall.append(time.perf_counter() - w)
            cpu.append(time.process_time() - c)
        self.wall, self.cpu = statistics.median(wall), statistics.median(cpu)

    def __add__(self, other):
        out = Timing(lambda: None, 1)
        out.wall, out.cpu = self.wall + other.wall, self.cpu + other.cpu
        return out

    def __str__(self):
        return f"{self.wall:.3f} s ({self.cpu:.3f} s CPU)"


def resume_start(work: Path, groups: int) -> None:
    path = work / f"feats-{groups}.h5"
    candidates = [f"db/{i:05d}.jpg" for i in range(groups + 100)]
    if not path.exists() or len(stored_names(path, candidates)) != groups:  # else: reused
        path.unlink(missing_ok=True)
        rng = np.random.default_rng(0)
        build = time.perf_counter()
        with open_append(path, commit_every=3600) as out:  # one commit: a fast build
            for name in candidates[:groups]:
                with out.item(name) as fd:
                    write_features(fd, name, feature_item(rng, 4), 1.0)
        print(f"built {groups} groups in {time.perf_counter() - build:.1f} s")
    size = path.stat().st_size
    print(f"{path.name}: {groups} groups, {size / 2**20:.1f} MiB")

    lookup = Timing(lambda: stored_names(path, candidates))
    assert len(stored_names(path, candidates)) == groups

    def open_close():
        with open_append(path):
            pass

    opening = Timing(open_close)
    print(
        f"resumed start (new): find the {groups} stored of {len(candidates)} names {lookup} "
        f"+ open for append {opening} = {lookup + opening}"
    )

    listing = Timing(lambda: list_h5_names(path), repeat=1)
    tmp = work / "feats.h5.tmp"
    copy = Timing(lambda: shutil.copyfile(path, tmp))
    tmp.unlink()
    per_image = AACHEN_KEYPOINTS * (2 * 2 + DESCRIPTOR_DIM * 2 + 2) + 16
    aachen = AACHEN_IMAGES * per_image
    rate = size / copy.wall
    print(
        f"resumed start (old): list every dataset {listing} + copy to .tmp {copy} = "
        f"{listing + copy}; at {rate / 2**20:.0f} MiB/s (page cache warm) the copy of an "
        f"Aachen file ({aachen / 2**30:.1f} GiB) takes {aachen / rate:.0f} s per resume"
    )


def old_write(path: Path, items) -> None:
    with h5py.File(str(path), "a", libver="latest") as fd:  # the previous writer, minus its copy
        for name, write, args in items:
            write(fd, name, *args)


def new_write(path: Path, items, commit_every: float) -> None:
    with open_append(path, commit_every) as out:
        for name, write, args in items:
            with out.item(name) as fd:
                write(fd, name, *args)


def write_path(work: Path, n: int) -> None:
    rng = np.random.default_rng(1)
    features = [
        (f"db/{i:05d}.jpg", write_features, (feature_item(rng, 1024), 1.0)) for i in range(n)
    ]
    matches = [
        (
            f"q{i}.jpg/db{i}.jpg",
            write_matches,
            (rng.integers(-1, 1024, 1024), rng.uniform(size=1024)),
        )
        for i in range(10 * n)
    ]
    for what, items in (("features (1,024 kp)", features), ("matches (1,024)", matches)):
        results = {}
        for label, fn in (
            ("old: h5py, one flush at the end", lambda p: old_write(p, items)),
            ("new: journal, commit every 1 s", lambda p: new_write(p, items, 1.0)),
            ("new: journal, commit every item", lambda p: new_write(p, items, 0)),
        ):

            def run():
                path = work / "w.h5"
                path.unlink(missing_ok=True)
                fn(path)

            results[label] = Timing(run)
        base = results["old: h5py, one flush at the end"]
        for label, t in results.items():
            print(
                f"write {what:20s} {label:33s} {len(items) / t.wall:6.0f} items/s "
                f"({len(items) / t.cpu:6.0f} per CPU s)  "
                f"{1e3 * (t.cpu - base.cpu) / len(items):+.3f} CPU ms/item vs old"
            )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=20000)
    parser.add_argument("--items", type=int, default=300, help="0: skip the write-path part")
    parser.add_argument("--workdir", type=Path, help="default: a temporary folder, removed")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        resume_start(work, args.groups)
        if args.items:
            write_path(work, args.items)


if __name__ == "__main__":
    main()
