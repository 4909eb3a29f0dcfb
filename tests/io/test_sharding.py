"""Extraction and matching under torchrun: 2 CPU processes (gloo) write shards that rank 0
merges into exactly the file of one process; a failing rank reports its images and loses
nobody's work; the next run resumes from the shards."""

import os
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch.distributed as dist

from tasp_hloc.io.hloc_format import list_h5_names
from tasp_hloc.sharding import leftover_shards, merge_shards, shard_path

from conftest import assert_same_file, h5_contents, render_scene

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="needs torch.distributed with gloo",
)
# Released weights (every process must hold the same network), small images for speed.
MODEL_ARGS = ["--weights", "tasp_v2", "--max-keypoints", "128", "--resize-max", "96"]


def cli(*args, nproc=1, check=True):
    """``python -m tasp_hloc ...``, or under torchrun with ``nproc`` processes, 1 thread each."""
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        if nproc > 1
        else [sys.executable]
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TASP_HLOC_AUTOREGISTER": "0"}
    env.pop("WORLD_SIZE", None)
    run = subprocess.run(
        [*launcher, "-m", "tasp_hloc", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    return run


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharding") / "images"
    (root / "sub").mkdir(parents=True)
    for k in range(5):
        cv2.imwrite(str(root / f"im{k}.png"), render_scene(90 + 6 * k, 120, k))
    cv2.imwrite(str(root / "sub" / "deep.jpg"), render_scene(100, 80, 9))
    return root


@pytest.fixture(scope="module")
def single(images, tmp_path_factory):
    """One process: the reference feature and match files."""
    out = tmp_path_factory.mktemp("single")
    cli("extract", "--images", str(images), "--output", str(out / "f.h5"), *MODEL_ARGS)
    cli("match", "--features", str(out / "f.h5"), "--output", str(out / "m.h5"))
    return out


def test_two_processes_write_the_file_of_one(images, single, tmp_path):
    run = cli(
        "extract", "--images", str(images), "--output", str(tmp_path / "f.h5"), *MODEL_ARGS, nproc=2
    )
    assert "Merged 6 groups from 2 shard files" in run.stderr
    assert not leftover_shards(tmp_path / "f.h5")
    assert_same_file(single / "f.h5", tmp_path / "f.h5")
    # Matching splits the pairs the same way (pairs file written once, by rank 0).
    run = cli(
        "match", "--features", str(tmp_path / "f.h5"), "--output", str(tmp_path / "m.h5"), nproc=2
    )
    assert "Merged 15 groups" in run.stderr
    assert_same_file(single / "m.h5", tmp_path / "m.h5")


def test_failing_rank_reports_its_images_and_the_rerun_completes(images, single, tmp_path):
    broken = tmp_path / "images"
    broken.mkdir()
    for path in images.rglob("*.*"):
        target = broken / path.relative_to(images)
        target.parent.mkdir(exist_ok=True)
        target.symlink_to(path)
    # 7 names: rank 0 takes im0, im2, im4 and this one (its last); rank 1 im1, im3, sub/deep
    (broken / "zz_truncated.png").write_bytes(b"truncated")
    out = tmp_path / "f.h5"
    run = cli(
        "extract",
        "--images",
        str(broken),
        "--output",
        str(out),
        *MODEL_ARGS,
        "--fail-fast",
        nproc=2,
        check=False,
    )
    assert run.returncode != 0
    assert "Rank 0 of 2 stopped (ImageReadError" in run.stderr
    assert "1 of its 4 items not done: zz_truncated.png" in run.stderr
    # The failing rank kept what it finished; rank 1 kept what it finished before torchrun
    # stopped it (all of its 3 images, unless it was slower than rank 0).
    assert list_h5_names(shard_path(out, 0, 2)) == {"im0.png", "im2.png", "im4.png"}
    kept = list_h5_names(shard_path(out, 1, 2)) if shard_path(out, 1, 2).exists() else set()
    assert kept <= {"im1.png", "im3.png", "sub/deep.jpg"}
    assert not out.exists()
    (broken / "zz_truncated.png").unlink()
    run = cli("extract", "--images", str(broken), "--output", str(out), *MODEL_ARGS)  # 1 process
    assert f"Merged {3 + len(kept)} groups from 2 shard files" in run.stderr
    assert f"Extracting {3 - len(kept)} images" in run.stderr or len(kept) == 3
    assert_same_file(single / "f.h5", out)


def test_merge_puts_listed_names_first_and_deletes_shards(tmp_path):
    out = tmp_path / "f.h5"
    for rank, names in ((0, ["b", "d/e"]), (1, ["a"])):
        with h5py.File(shard_path(out, rank, 2), "w") as fd:
            for name in names:
                fd.create_group(name).create_dataset("x", data=np.arange(3) + len(name))
    assert merge_shards(out, order=["d/e", "a"]) == 3
    assert not leftover_shards(out)
    contents = h5_contents(out)
    assert sorted(contents) == ["a/x", "b/x", "d/e/x"]
    assert np.array_equal(contents["d/e/x"][0], np.arange(3) + 3)
    assert merge_shards(out) == 0
