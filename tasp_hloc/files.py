"""The package's rules for small files: whole-file writes that a crash never leaves half done
(a temporary file, then a rename) and the rows of whitespace-separated text files."""

import os
from pathlib import Path
from typing import Iterator, List, Tuple, Union


def write_bytes_atomic(path: Union[str, Path], data: bytes) -> Path:
    """Write ``data`` to ``path`` via ``<path>.tmp``, so ``path`` is old or new, never truncated."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


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
