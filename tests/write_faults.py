"""Fault injection for the project's HDF5 writes: every byte of a feature or match file and of
its journal goes through ``h5_journal._write_all``; here its N-th call writes half of its bytes
and then fails with an errno, as a full disk (ENOSPC), a failing device (EIO), a quota (EDQUOT)
or a file-size limit (EFBIG) do."""

import errno
import os
from contextlib import contextmanager

import pytest

from tasp_hloc.io import h5_journal

ERRNOS = [errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG]


@contextmanager
def failing_write(n=None, err=errno.ENOSPC):
    """Make the ``n``-th write (from 0) fail after half its bytes; ``n=None`` only counts.
    Yields the list that gets one entry per write."""
    real, calls = h5_journal._write_all, []

    def write(fd, data, offset=None):
        calls.append(1)
        if len(calls) - 1 == n:
            data = memoryview(data).cast("B")
            real(fd, data[: len(data) // 2], offset)
            raise OSError(err, os.strerror(err))
        real(fd, data, offset)

    h5_journal._write_all = write
    try:
        yield calls
    finally:
        h5_journal._write_all = real


def os_error_in(exc):
    """The OSError behind ``exc`` (itself or in its chain of causes), or None."""
    while exc is not None and not isinstance(exc, OSError):
        exc = exc.__cause__ or exc.__context__
    return exc


def every_failing_write(run, reset, check, err=errno.ENOSPC, every=1):
    """For every ``every``-th write N of ``run()`` (after ``reset()``): run with write N
    failing, expect that errno to come out of it, run again with room and ``check(n)``.
    Returns the number of writes of an uninterrupted run."""
    reset()
    with failing_write() as calls:
        run()
    total = len(calls)
    assert total > 0
    for n in range(0, total, every):
        reset()
        with failing_write(n, err), pytest.raises(Exception) as raised:
            run()
        assert getattr(os_error_in(raised.value), "errno", None) == err, (n, repr(raised.value))
        run()
        check(n)
    return total
