"""Issue 22: a write that fails (ENOSPC, EIO, EDQUOT, EFBIG, half of its bytes written) at any
point of extraction, matching or the shard merge leaves the output at its last commit, and the
rerun with room ends with exactly the file of an uninterrupted run."""

import shutil

import h5py
import numpy as np
import pytest

from tasp_hloc import extract as extract_module
from tasp_hloc.extract import extract
from tasp_hloc.io.h5_journal import journal_path
from tasp_hloc.match import match, write_pairs
from tasp_hloc.sharding import leftover_shards, merge_shards, shard_path

from conftest import assert_same_file
from write_faults import ERRNOS, every_failing_write


def _reset_to(path, saved):
    """``path`` back to the bytes in ``saved`` (or absent), without a journal."""
    journal_path(path).unlink(missing_ok=True)
    if saved is None:
        path.unlink(missing_ok=True)
    else:
        shutil.copyfile(saved, path)


def _features(path, sizes, seed=0):
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as fd:
        for name, n in sizes.items():
            d = rng.normal(size=(8, n)).astype(np.float32)
            g = fd.create_group(name)
            g.create_dataset("descriptors", data=(d / np.linalg.norm(d, axis=0)).astype(np.float16))
            g.create_dataset("keypoints", data=rng.uniform(0, 50, (n, 2)).astype(np.float32))
    return path


@pytest.mark.parametrize("err", ERRNOS)
def test_match_resumes_after_a_failed_write_anywhere(tmp_path, err):
    names = [f"db/{i}.jpg" for i in range(5)]
    feats = _features(tmp_path / "f.h5", {n: 20 + 3 * i for i, n in enumerate(names)})
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    first, everything = (
        write_pairs(pairs[:3], tmp_path / "p3.txt"),
        write_pairs(pairs, tmp_path / "p.txt"),
    )
    out, start, reference = tmp_path / "m.h5", tmp_path / "start.h5", tmp_path / "ref.h5"
    match(first, feats, start, device="cpu", commit_every=0)  # a run that resumes
    shutil.copyfile(start, reference)
    match(everything, feats, reference, device="cpu", commit_every=0)

    def run():
        match(everything, feats, out, device="cpu", batch_size=4, commit_every=0)

    def check(n):
        assert not journal_path(out).exists(), n
        assert_same_file(reference, out)

    assert every_failing_write(run, lambda: _reset_to(out, start), check, err) > 7


@pytest.mark.parametrize("err", ERRNOS)
def test_shard_merge_resumes_after_a_failed_write_anywhere(tmp_path, err):
    out, saved = tmp_path / "f.h5", tmp_path / "saved"
    saved.mkdir()
    _features(out, {"old/a.jpg": 10, "db/1.jpg": 5})  # groups already merged earlier
    for rank, sizes in ((0, {"db/1.jpg": 12, "db/2.jpg": 7}), (1, {"db/3.jpg": 9, "q/4.jpg": 0})):
        _features(shard_path(out, rank, 2), sizes, seed=rank + 1)
    for path in [out, *leftover_shards(out)]:
        shutil.copyfile(path, saved / path.name)

    def reset():
        for path in saved.iterdir():
            _reset_to(out.with_name(path.name), path)

    reference = tmp_path / "ref" / "f.h5"
    reference.parent.mkdir()
    reset()
    merge_shards(out, commit_every=0)
    shutil.copyfile(out, reference)

    def check(n):
        assert not leftover_shards(out) and not journal_path(out).exists(), n
        assert_same_file(reference, out)

    def run():
        merge_shards(out, commit_every=0)

    assert every_failing_write(run, reset, check, err) > 4


@pytest.mark.parametrize("err", ERRNOS)
def test_extract_resumes_after_a_failed_write_anywhere(image_dir, tiny_conf, tmp_path, err):
    out, start, reference = tmp_path / "f.h5", tmp_path / "start.h5", tmp_path / "ref.h5"
    model = extract_module.build_model(tiny_conf["model"], "cpu")  # one network for every run

    def run(path=out):
        extract(tiny_conf, image_dir, path, num_workers=0, model=model, commit_every=0)

    extract(tiny_conf, image_dir, start, names=["a.png"], num_workers=0, model=model)
    shutil.copyfile(start, reference)
    run(reference)

    def check(n):
        assert not journal_path(out).exists(), n
        assert_same_file(reference, out)

    # every 3rd write: a network forward per run keeps the full sweep slow
    assert every_failing_write(run, lambda: _reset_to(out, start), check, err, every=3) > 6
