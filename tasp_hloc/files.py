"""The package's rules for small files: whole-file writes that a crash never leaves half done
(a temporary file, then a rename) and the rows of whitespace-separated text files."""

import os
import uuid
from pathlib import Path
from typing import IO, Callable, Iterator, List, Tuple, Union


def atomic_write(path: Union[str, Path], write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a new file that replaces ``path`` only once it is complete.

    The bytes go to a uniquely named temporary file in the same folder (so concurrent writers
    never share one), are flushed and fsync'ed, then renamed over ``path``. If anything fails
    (a full disk, an I/O error, an exception in ``write``) the temporary file is removed and
    ``path`` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


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
