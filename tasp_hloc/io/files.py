"""The package's rules for small files: whole-file writes that a crash never leaves half done
(a temporary file, then a rename) and the rows of whitespace-separated text files."""

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator, List, Tuple, Union


@contextmanager
def atomic_path(path: Union[str, Path], suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` for writers that take a file name (h5py, hloc, numpy),
    renamed over ``path`` when the block ends without an exception.

    The name is unique (concurrent writers never share one) and ends with ``suffix`` (numpy
    appends ``.npy`` to names without it). The written file is fsync'ed before the rename. If
    anything fails (a full disk, an I/O error, an exception in the block) the temporary file is
    removed and ``path`` keeps its previous content; an OSError behind another exception (a
    full disk inside ``torch.save``) is raised as itself, so callers can name its cause.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as exc:
        cause = _os_error_in(exc)
        if cause is None or cause is exc:
            raise
        raise cause from exc  # e.g. torch.save's RuntimeError hides "No space left on device"
    finally:
        if tmp.exists():
            tmp.unlink()


def _os_error_in(exc: BaseException):
    """The first OSError in an exception's chain, or None."""
    while exc is not None and not isinstance(exc, OSError):
        exc = exc.__cause__ or exc.__context__
    return exc


def atomic_write(path: Union[str, Path], write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a new file that replaces ``path`` only once it is complete (see
    :func:`atomic_path`: ``path`` is old or new, never truncated)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)
    return Path(path)


def write_bytes_atomic(path: Union[str, Path], data: bytes) -> Path:
    """Write ``data`` to ``path`` so that ``path`` is old or new, never truncated."""
    return atomic_write(path, lambda f: f.write(data))


def write_text_atomic(path: Union[str, Path], text: str) -> Path:
    return write_bytes_atomic(path, text.encode())


def read_rows(
    path: Union[str, Path], min_columns: int, layout: str
) -> Iterator[Tuple[int, List[str]]]:
    """``(line number, columns)`` of a text file, blank lines and ``#`` comments skipped.

    A row with fewer than ``min_columns`` columns raises ValueError naming the file, the line
    and the expected ``layout`` (e.g. ``"`name0 name1`"``).
    """
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        cols = line.split()
        if len(cols) < min_columns:
            raise ValueError(f"{path}:{i}: expected {layout}, got {line!r}.")
        yield i, cols
