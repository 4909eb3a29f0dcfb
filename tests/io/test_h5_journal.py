"""The undo journal: a kill at any write leaves a file that recovers to its last commit."""

import os
import signal

import h5py
import numpy as np
import pytest

from tasp_hloc.io import h5_journal
from tasp_hloc.io.h5_journal import journal_path, open_append, recover

from write_faults import ERRNOS, failing_write, os_error_in


def _item(i):
    return {
        "keypoints": np.full((3 + i, 2), i, np.float16),
        "descriptors": np.arange(8 * (3 + i), dtype=np.float16).reshape(8, -1),
    }


def _write(out, name, i):
    with out.item(name) as fd:
        g = fd.create_group(name)
        for key, value in _item(i).items():
            g.create_dataset(key, data=value)


def _names(path):
    with h5py.File(path, "r") as fd:
        found = []
        fd.visititems(
            lambda n, o: found.append(n) if isinstance(o, h5py.Group) and "keypoints" in o else None
        )
    return found


def test_a_kill_at_any_write_recovers_to_the_last_commit(tmp_path, monkeypatch):
    """Snapshot the files as a SIGKILL would leave them before every write of a session (and
    with half of that write done), then recover each snapshot: always the last commit."""
    path = tmp_path / "f.h5"
    with open_append(path, commit_every=0) as out:  # a first session: 12 committed groups
        for i in range(12):
            _write(out, f"db/{i:02d}.jpg", i)
    jpath = journal_path(path)
    snapshots, committed = [], {}
    real_write, real_commit = h5_journal._write_all, h5_journal._UndoFile.commit

    def snapshot(extra=None):
        files = {p: p.read_bytes() for p in (path, jpath) if p.exists()}
        if extra:
            files[extra[0]] = extra[1]
        snapshots.append((files, dict(committed)))

    def write_all(fd, data, offset=None):
        data = bytes(memoryview(data).cast("B"))
        snapshot()
        if len(data) > 1:  # torn: the kernel stops a killed write() between pages
            target = path if offset is not None else jpath
            cur = bytearray(target.read_bytes() if target.exists() else b"")
            at = offset if offset is not None else len(cur)
            half = data[: len(data) // 2]
            cur[at : at + len(half)] = half
            snapshot((target, bytes(cur)))
        real_write(fd, data, offset)

    def commit(self):
        real_commit(self)
        committed.clear()
        committed.update(current)

    monkeypatch.setattr(h5_journal, "_write_all", write_all)
    monkeypatch.setattr(h5_journal._UndoFile, "commit", commit)
    current = {f"db/{i:02d}.jpg": i for i in range(12)}
    committed.update(current)
    with open_append(path, commit_every=0) as out:  # the session under test
        for name, value in [("db/05.jpg", 99), ("db/03.jpg", 98)] + [
            (f"db/{i:02d}.jpg", i) for i in range(12, 16)
        ]:
            if name in out.h5:  # replaced: frees space that HDF5 reuses
                del out.h5[name]
            current[name] = value
            _write(out, name, value)
    monkeypatch.undo()
    assert len(snapshots) > 40 and committed == current

    for files, expected in snapshots:
        for p in (path, jpath):
            p.unlink(missing_ok=True)
        for p, data in files.items():
            p.write_bytes(data)
        recover(path)
        assert not jpath.exists()
        assert sorted(_names(path)) == sorted(expected)
        with h5py.File(path, "r") as fd:
            for name, value in expected.items():
                for key, array in _item(value).items():
                    assert np.array_equal(fd[name][key][()], array), (name, key)


def test_an_exception_mid_item_drops_that_item_and_commits_the_rest(tmp_path):
    path = tmp_path / "f.h5"
    with pytest.raises(KeyboardInterrupt):
        with open_append(path, commit_every=3600) as out:  # nothing committed before the end
            _write(out, "a", 0)
            with out.item("b") as fd:
                fd.create_group("b").create_dataset("keypoints", data=np.zeros((2, 2)))
                raise KeyboardInterrupt
    assert _names(path) == ["a"] and not journal_path(path).exists()


def test_sigterm_inside_an_item_is_held_until_the_item_is_written(tmp_path):
    """A signal never interrupts HDF5 half-way: it stops the run once the item is complete."""
    path, previous = tmp_path / "f.h5", signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match="signal 15"):
        with open_append(path, commit_every=3600) as out:
            with out.item("a") as fd:
                os.kill(os.getpid(), signal.SIGTERM)
                fd.create_group("a").create_dataset("keypoints", data=np.zeros((2, 2)))
            _write(out, "b", 1)  # not reached
    assert _names(path) == ["a"] and not journal_path(path).exists()
    assert signal.getsignal(signal.SIGTERM) is previous


def test_resume_does_not_copy_and_a_second_writer_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "f.h5"
    with open_append(path) as out:
        _write(out, "a", 0)
    size = path.stat().st_size
    monkeypatch.setattr(h5_journal, "LOCK_WAIT", 0.0)
    with open_append(path) as out:
        assert sorted(os.listdir(tmp_path)) == ["f.h5"]  # no copy, no journal yet
        with pytest.raises(h5_journal.FileBusyError, match="f.h5 is open in another process"):
            with open_append(path):
                pass
        _write(out, "b", 1)
    assert sorted(_names(path)) == ["a", "b"] and path.stat().st_size > size


def test_foreign_or_unreadable_files_fail_with_the_file_name(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(OSError, match="bad.h5 is not a readable HDF5 file.*delete"):
        with open_append(bad):
            pass
    good = tmp_path / "good.h5"
    with open_append(good) as out:
        _write(out, "a", 0)
    journal_path(good).write_bytes(b"something else entirely, long enough for a header")
    with pytest.raises(OSError, match="good.h5.journal is not a journal written by tasp_hloc"):
        recover(good)


@pytest.mark.parametrize("err", ERRNOS)
def test_a_failed_write_at_any_point_keeps_the_last_commit(tmp_path, monkeypatch, err):
    """A write of the data file or the journal fails at the N-th call (after writing half of
    it, as a full disk does), for every N of a session: the session ends in that OSError,
    the next one opens the file at exactly its last commit and completes the run."""
    path = tmp_path / "f.h5"
    with open_append(path, commit_every=0) as out:
        for i in range(6):
            _write(out, f"db/{i:02d}.jpg", i)
    start = path.read_bytes()
    session = [("db/02.jpg", 97)] + [(f"db/{i:02d}.jpg", i) for i in range(6, 10)]
    real_commit = h5_journal._UndoFile.commit

    def run_session(out, current):
        for name, value in session:
            if name in out.h5:
                del out.h5[name]
            current[name] = value
            _write(out, name, value)

    with failing_write() as calls, open_append(path, commit_every=0) as out:
        run_session(out, {})
    total, final = len(calls), {**{f"db/{i:02d}.jpg": i for i in range(10)}, "db/02.jpg": 97}
    assert total > 10

    for n in range(total):
        path.write_bytes(start)
        journal_path(path).unlink(missing_ok=True)
        committed = {f"db/{i:02d}.jpg": i for i in range(6)}
        current = dict(committed)

        def commit(self):
            real_commit(self)
            committed.clear()
            committed.update(current)

        monkeypatch.setattr(h5_journal._UndoFile, "commit", commit)
        with failing_write(n, err), pytest.raises(Exception) as raised:
            with open_append(path, commit_every=0) as out:
                run_session(out, current)
        monkeypatch.undo()
        assert os_error_in(raised.value) is not None, (n, repr(raised.value))
        # the next run opens the file at its last commit, then finishes the work
        with open_append(path, commit_every=0) as out:
            assert sorted(f"db/{k}" for k in out.h5["db"].keys()) == sorted(committed), n
            for name, value in committed.items():
                assert np.array_equal(out.h5[name]["keypoints"][()], _item(value)["keypoints"])
            todo = [(k, v) for k, v in session if committed.get(k) != v]
            for name, value in todo:
                if name in out.h5:
                    del out.h5[name]
                _write(out, name, value)
        assert not journal_path(path).exists()
        with h5py.File(path, "r") as fd:
            assert sorted(_names(path)) == sorted(final)
            for name, value in final.items():
                for key, array in _item(value).items():
                    assert np.array_equal(fd[name][key][()], array), (n, name, key)
