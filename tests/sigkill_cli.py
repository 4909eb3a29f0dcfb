"""Run ``python -m tasp_hloc ARGS`` and SIGKILL it at a chosen point of its HDF5 writes, the
way a power cut or the OOM killer would (the package carries no hook for this):

    python tests/sigkill_cli.py after:K ARGS...   # right after the K-th item (and its commit)
    python tests/sigkill_cli.py during:K ARGS...  # right after the first write from item K on
                                                  # that changes committed bytes: the file on
                                                  # disk is torn, unreadable without the undo
"""

import os
import runpy
import signal
import sys
from contextlib import contextmanager

from tasp_hloc.io import h5_journal


def arm(when: str, k: int) -> None:
    """Patch ``H5Appender.item`` and ``_UndoFile.write`` to SIGKILL this process at ``when``."""
    item, write = h5_journal.H5Appender.item, h5_journal._UndoFile.write
    torn = []  # set once item k starts

    @contextmanager
    def killing_item(self, name):
        if when == "during" and self.items + 1 == k:
            torn.append(True)
        with item(self, name) as h5:
            yield h5
        if when == "after" and self.items == k:
            os.kill(os.getpid(), signal.SIGKILL)

    def killing_write(self, data):
        overwrite = self.pos < self.committed
        n = write(self, data)
        if torn and overwrite:
            os.kill(os.getpid(), signal.SIGKILL)
        return n

    h5_journal.H5Appender.item = killing_item
    h5_journal._UndoFile.write = killing_write


if __name__ == "__main__":
    when, _, k = sys.argv[1].partition(":")
    if when not in ("after", "during") or not k.isdigit():
        sys.exit(f"usage: {sys.argv[0]} after:K|during:K ARGS... (got {sys.argv[1]!r})")
    arm(when, int(k))
    sys.argv = ["tasp_hloc", *sys.argv[2:]]
    runpy.run_module("tasp_hloc", run_name="__main__", alter_sys=True)
