"""Every small-file writer keeps the previous version when a write fails (issue 22 item 3).

The harness fails the writes the way a full disk does: ``ENOSPC`` (or EIO, EDQUOT, EFBIG) after
``limit`` bytes of a file opened by ``tasp_hloc.io.files``, or at its fsync. After each fault the
target holds exactly its previous bytes and no temporary file is left beside it.
"""

import builtins
import errno
import json

import numpy as np
import pytest
import torch

from tasp_hloc.io import files

ERRNOS = [errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG]


class FailingFile:
    """A binary file that raises ``OSError(err)`` once more than ``limit`` bytes are written."""

    def __init__(self, f, limit: int, err: int):
        self._f, self._left, self._err = f, limit, err

    def write(self, data):
        n = len(memoryview(data).cast("B"))
        if n > self._left:
            raise OSError(self._err, f"{errno.errorcode[self._err]} (injected)")
        self._left -= n
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.fixture
def disk(monkeypatch):
    """``disk.fail(limit, err)``: later files opened for writing by tasp_hloc.io.files fail after
    ``limit`` bytes (None: only the fsync fails)."""

    class Disk:
        def fail(self, limit, err=errno.ENOSPC):
            real_open = builtins.open

            def failing_open(path, mode="r", *args, **kwargs):
                f = real_open(path, mode, *args, **kwargs)
                return FailingFile(f, limit, err) if "w" in mode and limit is not None else f

            def failing_fsync(fd):
                raise OSError(err, "injected at fsync")

            monkeypatch.setattr(files, "open", failing_open, raising=False)
            if limit is None:
                monkeypatch.setattr(files.os, "fsync", failing_fsync)

        def heal(self):
            monkeypatch.undo()

    return Disk()


def assert_unchanged(path, before: bytes):
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir() if ".tmp" in p.name) == []


def _writers(tmp_path):
    """(name, target path, write a new version) of each writer."""
    from tasp_hloc.labels.cache import LabelCache
    from tasp_hloc.train.checkpoints import atomic_save as _atomic_save
    from tools.photos.manifest import write_csv

    def labels(n):
        return {
            "keypoints": torch.rand(n, 2),
            "scores": torch.rand(n),
            "image_size": torch.tensor([64, 48]),
        }

    cache = LabelCache(tmp_path / "labels", {"detector": "test"})
    cache.put("a/b.png", labels(5))
    return [
        ("checkpoint", tmp_path / "ckpt.pth", lambda p: _atomic_save({"w": torch.ones(5000)}, p)),
        ("label", cache.path("a/b.png"), lambda p: cache.put("a/b.png", labels(500))),
        ("label pack", tmp_path / "pack.h5", lambda p: cache.pack_h5(p)),
        ("csv", tmp_path / "m.csv", lambda p: write_csv([{"a": "x" * 9000}], p, ["a"])),
        (
            "npy",
            tmp_path / "o.npy",
            lambda p: files.atomic_write(p, lambda f: np.save(f, np.ones(4000))),
        ),
        ("text", tmp_path / "t.txt", lambda p: files.write_text_atomic(p, "new\n" * 3000)),
    ]


@pytest.mark.parametrize("err", ERRNOS)
@pytest.mark.parametrize("limit", [0, 100, 4096, None])
def test_a_failed_write_leaves_the_previous_version(tmp_path, disk, err, limit):
    for name, path, write in _writers(tmp_path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"the previous {name}".encode())
        before = path.read_bytes()
        disk.fail(limit, err)
        # h5py writes through its own C driver: only the fsync fault reaches the pack
        if name == "label pack" and limit is not None:
            disk.heal()
            continue
        with pytest.raises(OSError, match="injected") as raised:
            write(path)
            pytest.fail(f"{name}: no fault reached the write")
        assert raised.value.errno == err, name
        assert_unchanged(path, before)
        disk.heal()
        write(path)  # with room again the new version lands
        assert path.read_bytes() != before, name


def test_export_keeps_the_released_weights_and_manifest_on_a_full_disk(tmp_path, disk):
    from tasp_hloc.model.tasp import TaSP
    from tasp_hloc.train.export import export

    model = TaSP({"weights": None, "backbone": "efficientnet_lite0"})
    torch.save({"model": model.state_dict(), "step": 3, "config": {}}, tmp_path / "ckpt.pth")
    weights = tmp_path / "weights"
    out = export(tmp_path / "ckpt.pth", "tasp_x", weights_dir=weights, fp16=True)
    manifest = weights / "manifest.json"
    before = out.read_bytes(), manifest.read_bytes()
    for limit in (0, 1 << 20, None):
        disk.fail(limit)
        with pytest.raises(OSError):
            export(tmp_path / "ckpt.pth", "tasp_x", weights_dir=weights, fp16=False)
        disk.heal()
        assert (out.read_bytes(), manifest.read_bytes()) == before
        assert not [p for p in weights.iterdir() if ".tmp" in p.name]
    export(tmp_path / "ckpt.pth", "tasp_x", weights_dir=weights, fp16=False)
    assert json.loads(manifest.read_text())["weights"]["tasp_x"]["dtype"] == "float32"


def test_atomic_path_keeps_the_old_file_when_the_block_raises(tmp_path):
    target = tmp_path / "pairs.txt"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("the writer failed")
    assert_unchanged(target, b"old\n")
    with files.atomic_path(target) as tmp:
        tmp.write_text("new\n")
    assert target.read_text() == "new\n"
