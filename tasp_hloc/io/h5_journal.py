"""Crash-safe in-place appends to HDF5 files: an undo journal under h5py's file-object driver.

HDF5 rewrites its metadata (superblock, group headers, heaps, B-trees) in place, so a process
killed mid-flush can leave a file that no longer opens, old groups included; copying the file
before each run costs gigabytes per resume. Instead h5py writes through :class:`_UndoFile`,
which saves every byte of the last committed state to ``<file>.journal`` before it changes
(SQLite's rollback journal). A commit is ``H5Fflush``, then deleting the journal. After a kill
at any moment, :func:`recover` puts the saved bytes back and cuts the file to its committed
size: the file is exactly as at the last commit.

Scope: the process dying (SIGKILL, OOM killer, crash), whose writes the kernel keeps. Nothing
is fsync'ed, so a power cut or OS crash is not covered.
"""

import errno
import fcntl
import logging
import os
import signal
import struct
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from .files import atomic_path
from .h5_superblock import clear_h5_write_flag, h5_write_flag_set

logger = logging.getLogger(__name__)

PAGE = 4096  # granularity of the saved originals
_HEADER = struct.Struct("<8sQI")  # magic, committed size, crc32 of the two
_RECORD = struct.Struct("<QII")  # offset, length, crc32 of the bytes that follow
_MAGIC = b"TASPUND1"
LOCK_WAIT = 10.0  # s; forked DataLoader workers of a killed run may hold the lock that long


class FileBusyError(RuntimeError):
    """Another process has the file open (not an OSError: the file itself is fine)."""


def journal_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".journal")


# --------------------------------------------------------------------------- journal


def _write_all(fd: int, data, offset: Optional[int] = None) -> None:
    data = memoryview(data).cast("B")
    while len(data):
        n = os.write(fd, data) if offset is None else os.pwrite(fd, data, offset)
        data = data[n:]
        offset = None if offset is None else offset + n


def _read_journal(path: Path):
    """``(committed size, [(offset, bytes)])``, or None if the header is not there (the data
    file was not touched yet). A record cut short by the kill is ignored: its overwrite had
    not started."""
    data = path.read_bytes()
    if len(data) < _HEADER.size:
        return None
    magic, size, crc = _HEADER.unpack_from(data)
    if magic != _MAGIC or crc != zlib.crc32(data[: _HEADER.size - 4]):
        raise OSError(
            f"{path} is not a journal written by tasp_hloc; move it away if the "
            f"data file next to it is known to be good."
        )
    records, at = [], _HEADER.size
    while at + _RECORD.size <= len(data):
        offset, length, crc = _RECORD.unpack_from(data, at)
        chunk = data[at + _RECORD.size : at + _RECORD.size + length]
        if len(chunk) < length or zlib.crc32(chunk) != crc:
            break
        records.append((offset, chunk))
        at += _RECORD.size + length
    return size, records


@contextmanager
def locked(path: Path) -> Iterator[int]:
    """An exclusive ``flock`` on ``path`` (also what HDF5 takes): one writer per file."""
    fd = os.open(path, os.O_RDWR)
    deadline = time.monotonic() + LOCK_WAIT
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise FileBusyError(
                        f"{path} is open in another process (a run writing it, or a reader): "
                        "wait for it to finish or stop it, then run again."
                    ) from None
                time.sleep(0.2)
        yield fd
    finally:
        os.close(fd)


def _recover_locked(path: Path) -> bool:
    jpath, undone = journal_path(path), False
    if jpath.exists():
        journal = _read_journal(jpath)
        if journal is not None:
            size, records = journal
            with open(path, "r+b") as fd:
                for offset, chunk in records:
                    fd.seek(offset)
                    fd.write(chunk)
                fd.truncate(size)
            undone = True
        jpath.unlink()  # last: a kill during the restore restores again
    flag = clear_h5_write_flag(path)
    if undone:
        logger.warning("%s: undid the uncommitted writes of an interrupted run.", path)
    elif flag:
        logger.warning("%s: cleared the write flag a killed writer left.", path)
    return undone or flag


def recover(path: Path) -> bool:
    """Bring ``path`` back to its last commit if its writer was killed; True if it changed.
    Waits for (then excludes) a live writer, so it is safe to call at any time; a file
    that needs nothing is only read (it may be read-only)."""
    path = Path(path)
    left_by_a_killed_writer = path.exists() and (
        journal_path(path).exists() or h5_write_flag_set(path)
    )
    if not left_by_a_killed_writer:
        return False
    with locked(path):
        return _recover_locked(path)


class _UndoFile:
    """The file object h5py's "fileobj" driver writes through (seek/tell/readinto/write/
    truncate/flush). Bytes below ``self.committed`` are journaled before they change."""

    def __init__(self, fd: int, path: Path):
        self.fd, self.path, self.jpath = fd, path, journal_path(path)
        self.pos = 0
        self.size = self.committed = os.fstat(fd).st_size
        self.saved = set()  # pages of the committed state already in the journal
        self.journal: Optional[int] = None
        self.failure: Optional[BaseException] = None  # the first failed write: never commit after

    def _save(self, start: int, end: int) -> None:
        if self.journal is None:  # the header goes first: it carries the size to cut back to
            self.journal = os.open(self.jpath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            head = _HEADER.pack(_MAGIC, self.committed, 0)[:-4]
            _write_all(self.journal, head + zlib.crc32(head).to_bytes(4, "little"))
        out = []
        for page in range(start // PAGE, (min(end, self.committed) - 1) // PAGE + 1):
            if page in self.saved:
                continue
            offset = page * PAGE
            chunk = os.pread(self.fd, min(PAGE, self.committed - offset), offset)
            out += [_RECORD.pack(offset, len(chunk), zlib.crc32(chunk)), chunk]
            self.saved.add(page)
        if out:
            _write_all(self.journal, b"".join(out))  # before the overwrite it protects

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self.pos = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.size}[whence] + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:  # h5py looks for it; HDF5 calls readinto
        data = os.pread(self.fd, self.size - self.pos if n < 0 else n, self.pos)
        self.pos += len(data)
        return data

    def readinto(self, buf) -> int:
        n = os.preadv(self.fd, [buf], self.pos)
        self.pos += n
        return n

    @property
    def failed(self) -> bool:  # HDF5's state is suspect after a failed write
        return self.failure is not None

    def _refuse_after_a_failure(self) -> None:
        # After a failed write the journal may end in a torn record, which recovery reads as
        # its end: a later overwrite (HDF5 flushing at close) would go unprotected.
        if self.failed:
            raise OSError(errno.EIO, f"{self.path}: not written to after a failed write")

    def write(self, data) -> int:
        self._refuse_after_a_failure()
        n = memoryview(data).nbytes
        try:
            self._save(self.pos, self.pos + n)  # also opens the journal for a pure append
            _write_all(self.fd, data, self.pos)
        except BaseException as e:
            self.failure = self.failure or e  # the first one
            raise
        self.pos += n
        self.size = max(self.size, self.pos)
        return n

    def truncate(self, size: int) -> int:
        self._refuse_after_a_failure()
        if size != self.size:
            try:
                self._save(size, self.committed)
                os.ftruncate(self.fd, size)
            except BaseException as e:
                self.failure = self.failure or e  # the first one
                raise
            self.size = size
        return size

    def flush(self) -> None:
        pass  # written with pwrite: the kernel has it, which is what survives a kill

    def commit(self) -> None:
        """Call after ``H5Fflush``: the file as it is now becomes the state to come back to."""
        if self.journal is not None:
            os.close(self.journal)
            self.journal = None
            os.unlink(self.jpath)
        self.committed = self.size
        self.saved.clear()

    def rollback(self) -> None:
        """Back to the last commit, now (the caller still holds the lock)."""
        if self.journal is not None:
            os.close(self.journal)
            self.journal = None
        _recover_locked(self.path)


# --------------------------------------------------------------------------- sessions


class H5Appender:
    """An HDF5 file open for appending; work is committed between items, at most every
    ``commit_every`` seconds (0: after every item). Write each item inside ``item(name)``.

    Ctrl-C and SIGTERM raise KeyboardInterrupt, so the work done is committed, but never
    inside HDF5 (an exception in the middle of a flush would corrupt its state): they are held
    until the item or the commit ends. Items may be written from one other thread (the main
    thread then never enters HDF5 before ``close``, which it calls after that thread ends).
    """

    def __init__(self, h5, raw: _UndoFile, commit_every: float):
        self.h5, self.raw, self.commit_every = h5, raw, commit_every
        self.items, self.clean, self.last_commit = 0, True, time.monotonic()
        self.busy, self.pending = False, None

    def _signal(self, signum, frame):
        if self.busy:
            self.pending = signum
        else:
            raise KeyboardInterrupt(f"signal {signum}")

    @contextmanager
    def _hold_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield  # a writer thread: the main thread is not inside HDF5 and may be interrupted
            return
        self.busy = True
        try:
            yield
        finally:
            self.busy = False
        if self.pending:
            signum, self.pending = self.pending, None
            raise KeyboardInterrupt(f"signal {signum}")

    @contextmanager
    def item(self, name: str):
        self.items += 1
        with self._hold_signals():
            self.clean = False
            try:
                yield self.h5
            except BaseException:
                # Failed mid-item: drop the half-written group so that what came before can
                # still be committed (else close() rolls back to the last commit).
                try:
                    if not self.raw.failed and name in self.h5:
                        del self.h5[name]
                    self.clean = not self.raw.failed
                except Exception:
                    pass
                raise
            self.clean = True
            if time.monotonic() - self.last_commit >= self.commit_every:
                self.commit()

    def commit(self) -> None:
        self.h5.flush()
        self.raw.commit()
        self.last_commit = time.monotonic()

    def close(self, commit: bool) -> None:
        self.busy = True  # no KeyboardInterrupt inside HDF5 from here on
        if not commit or self.raw.failed:
            try:
                self.h5.close()
            except Exception:
                if not self.raw.failed:
                    raise
                # HDF5 cannot flush after a failed write; the rollback below undoes it all,
                # and the error that failed the write is the one to report
            finally:
                self.raw.rollback()
            return
        self.commit()
        self.h5.close()  # rewrites the superblock without the write flag: journaled too
        self.raw.commit()


@contextmanager
def _interrupt_handlers(handler):
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextmanager
def _report_the_failed_write(raw: _UndoFile):
    # HDF5 turns an OSError of a write into a SystemError or RuntimeError that may not chain to
    # it; the error to report (a full disk, an I/O error) is the write's own.
    try:
        yield
    except Exception as e:
        if raw.failure is None or raw.failure is e or not isinstance(raw.failure, Exception):
            raise
        raise raw.failure.with_traceback(None) from e


@contextmanager
def open_append(path: Path, commit_every: float = 1.0) -> Iterator[H5Appender]:
    """Append to a feature or match file in place, crash-safe: ``path`` is created if missing,
    and what a killed run left uncommitted is undone first.

    A context manager yielding an ``H5Appender``: write each image or pair inside
    ``with out.item(name) as fd:``. Work is committed after an item once ``commit_every``
    seconds have passed since the last commit (0: after every item), and when the block ends,
    also by an exception, Ctrl-C or SIGTERM. A SIGKILL loses what came after the last commit;
    the next run undoes it, so the file only ever holds complete groups.
    """
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():  # an empty file, atomically: the journal needs a valid start
        with atomic_path(path) as new:
            h5py.File(str(new), "w", libver="latest").close()
    with locked(path) as fd:
        _recover_locked(path)
        raw = _UndoFile(fd, path)
        try:
            h5 = h5py.File(raw, "r+", libver="latest")
        except OSError as e:
            raise OSError(
                f"{path} is not a readable HDF5 file ({e}); move it away or delete "
                "it to start over."
            ) from None
        out = H5Appender(h5, raw, commit_every)
        with _interrupt_handlers(out._signal), _report_the_failed_write(raw):
            try:
                yield out
            except BaseException:
                out.close(commit=out.clean)
                raise
            out.close(commit=True)
            if out.pending:  # a signal held during the last commit
                raise KeyboardInterrupt(f"signal {out.pending}")
