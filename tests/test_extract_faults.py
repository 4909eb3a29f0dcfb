"""Faults of ``python -m tasp_hloc extract/match``: orphaned workers, unusable --output."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
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
