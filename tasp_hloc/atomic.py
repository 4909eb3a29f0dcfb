"""Whole-file writes that a crash never leaves half done: a temporary file, then a rename."""

import os
from pathlib import Path
from typing import Union


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
