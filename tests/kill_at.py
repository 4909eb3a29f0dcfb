"""Run a module like ``python -m`` and SIGKILL the process at a known point of its HDF5 writes,
the way a power cut or the OOM killer would (the package carries no hook for this):

    python tests/kill_at.py FILE_NAME N MODULE [ARGS...]  # just before the N-th dataset is
                                                          # created in a file named FILE_NAME
    python tests/kill_at.py after:K MODULE [ARGS...]      # right after the K-th item of an
                                                          # H5Appender (and its commit)
    python tests/kill_at.py during:K MODULE [ARGS...]     # right after the first write from item
                                                          # K on that changes committed bytes

The first leaves an entry half written in a file open for writing; ``during`` leaves the file
on disk torn (HDF5 rewrote a header in place), unreadable without the journal's undo. Used by
the resume tests, so the kill point is the same every run however loaded the machine is.
"""

import os
import runpy
import signal
import sys
from contextlib import contextmanager


def _kill():
    os.kill(os.getpid(), signal.SIGKILL)


def kill_before_dataset(name: str, n: int) -> None:
    import h5py

    create = h5py.Group.create_dataset
    count = 0

    def create_dataset(self, *args, **kwargs):
        nonlocal count
        if os.path.basename(self.file.filename) == name:
            count += 1
            if count == n:
                _kill()
        return create(self, *args, **kwargs)

    h5py.Group.create_dataset = create_dataset


def kill_at_item(when: str, k: int) -> None:
    from tasp_hloc.io import h5_journal

    item, write = h5_journal.H5Appender.item, h5_journal._UndoFile.write
    torn = []  # set once item k starts

    @contextmanager
    def killing_item(self, name):
        if when == "during" and self.items + 1 == k:
            torn.append(True)
        with item(self, name) as h5:
            yield h5
        if when == "after" and self.items == k:
            _kill()

    def killing_write(self, data):
        overwrite = self.pos < self.committed
        n = write(self, data)
        if torn and overwrite:
            _kill()
        return n

    h5_journal.H5Appender.item = killing_item
    h5_journal._UndoFile.write = killing_write


def main():
    when, _, k = sys.argv[1].partition(":")
    if when in ("after", "during") and k.isdigit():
        kill_at_item(when, int(k))
        module, args = sys.argv[2], sys.argv[3:]
    else:
        kill_before_dataset(sys.argv[1], int(sys.argv[2]))
        module, args = sys.argv[3], sys.argv[4:]
    sys.argv = [module, *args]
    sys.path.insert(0, os.getcwd())  # as `python -m` does
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
