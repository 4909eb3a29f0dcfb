"""Faults of ``python -m tasp_hloc extract/match``: orphaned workers, unusable --output."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from tasp_hloc import __main__ as cli


def _children(pid: int) -> set:
    """Pids whose parent is ``pid`` (Linux /proc)."""
    kids = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids.update(int(k) for k in task.read_text().split())
        except OSError:
            pass
    if kids:
        return kids
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            kids.add(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_sigkill_of_extract_takes_its_decoding_workers_along(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        cv2.imwrite(str(images / f"{i:02d}.png"), rng.integers(0, 256, (480, 640, 3), np.uint8))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tasp_hloc",
            "extract",
            "--images",
            str(images),
            "--output",
            str(tmp_path / "f.h5"),
            "--weights",
            "random",
            "--workers",
            "2",
            "--device",
            "cpu",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline, kids = time.monotonic() + 120, set()
        while time.monotonic() < deadline and proc.poll() is None:
            kids = {k for k in _children(proc.pid) if _alive(k)}
            if len(kids) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None and len(kids) >= 2, "the workers never started"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(k) for k in kids):
            time.sleep(0.1)
        left = [k for k in kids if _alive(k)]
        for k in left:  # clean up before failing
            os.kill(k, signal.SIGKILL)
        assert not left, f"workers {left} outlived their killed parent"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _one_line_error(capsys, argv, *needles):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if not line.startswith("INFO ")]
    assert len(err) == 1 and err[0].startswith("error: "), err
    for needle in needles:
        assert needle in err[0], err[0]
    assert "Traceback" not in err[0]
    return err[0]


@pytest.fixture(params=["extract", "match"])
def command(request, tmp_path):
    """The argv of one command before ``--output``."""
    if request.param == "extract":
        return ["extract", "--images", str(tmp_path), "--weights", "random"]
    return ["match", "--features", str(tmp_path / "feats.h5")]


def test_output_that_is_not_hdf5(tmp_path, capsys, command):
    out = tmp_path / "feats.h5"
    out.write_text("not hdf5\n")
    _one_line_error(
        capsys,
        [*command, "--output", str(out)],
        str(out),
        "not an HDF5 file",
        "delete it or choose another --output",
    )


def test_output_that_is_a_folder(tmp_path, capsys, command):
    out = tmp_path / "dir.h5"
    out.mkdir()
    _one_line_error(capsys, [*command, "--output", str(out)], str(out), "is a folder")


def test_output_in_an_unwritable_folder(tmp_path, capsys, command, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    out = folder / "sub" / "out.h5"
    monkeypatch.setattr(cli.os, "access", lambda p, mode: Path(p) != folder)  # root: chmod moot
    _one_line_error(
        capsys, [*command, "--output", str(out)], str(out), str(folder), "no permission"
    )


def test_no_space_left_is_one_line(tmp_path, capsys, monkeypatch):
    out = tmp_path / "feats.h5"

    def full(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cli, "_check_output", lambda path: None)
    monkeypatch.setattr("tasp_hloc.sharding.extract_sharded", lambda *a, **k: full(None))
    _one_line_error(
        capsys,
        ["extract", "--images", str(tmp_path), "--output", str(out)],
        f"no space left on device while writing {out}",
        "finished images are kept",
    )


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(exist_ok=True)
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_a_real_full_disk_during_extract_then_the_rerun_completes(tmp_path):
    """A 2 MiB tmpfs fills up after about two images of features (1 MiB each): the run ends
    in one line naming the file, the file keeps what was committed, and with room again the
    rerun completes with exactly an uninterrupted run's features."""
    small = tmp_path / "small"
    if not sys.platform.startswith("linux") or not _mount_tmpfs(small, "2m"):
        pytest.skip("mounting a tmpfs needs Linux and root (CAP_SYS_ADMIN)")
    try:
        images = tmp_path / "images"
        images.mkdir()
        rng = np.random.default_rng(0)
        for i in range(6):  # noise: every image gets the full 4096 keypoints
            cv2.imwrite(str(images / f"{i}.png"), rng.integers(0, 256, (480, 640, 3), np.uint8))

        def extract(output):
            cmd = [sys.executable, "-m", "tasp_hloc", "extract", "--images", str(images)]
            cmd += ["--output", str(output), "--device", "cpu", "--max-keypoints", "4096"]
            return subprocess.run(cmd, capture_output=True, text=True, timeout=300)

        full = extract(small / "f.h5")
        errors = [ln for ln in full.stderr.splitlines() if ln.startswith("error")]
        assert full.returncode == 2, full.stderr[-2000:]
        assert len(errors) == 1 and "no space left on device" in errors[0], full.stderr[-2000:]
        assert str(small / "f.h5") in errors[0] and "Traceback" not in full.stderr
        with h5py.File(small / "f.h5", "r") as f:  # opens, holding whole images only
            kept = set(f.keys())
            assert all(f[k]["keypoints"].shape == (4096, 2) for k in kept)
        assert len(kept) < 6

        subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)
        assert extract(small / "f.h5").returncode == 0
        assert extract(tmp_path / "reference.h5").returncode == 0
        with h5py.File(small / "f.h5", "r") as f, h5py.File(tmp_path / "reference.h5") as ref:
            assert sorted(f.keys()) == sorted(ref.keys()) == [f"{i}.png" for i in range(6)]
            for name in ref:
                for key in ref[name]:
                    np.testing.assert_array_equal(f[name][key][()], ref[name][key][()])
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)
