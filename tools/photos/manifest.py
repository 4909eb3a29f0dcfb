"""The gatherer's records and files: a :class:`Candidate` (an image found in a package, before
the checks), a :class:`Dropped` one (left out, and why), what a source returns
(``SourceResult``), and the CSV files of a run (``manifest.csv`` with :data:`MANIFEST_FIELDS`,
``dropped.csv`` with :data:`DROPPED_FIELDS`), written atomically and read back."""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, List, Sequence, Tuple

from tasp_hloc.io.files import write_text_atomic

MANIFEST_FIELDS = [
    "file",
    "source",
    "package",
    "version",
    "path",
    "inner_path",
    "licence",
    "licence_class",
    "attribution",
    "origin",
    "width",
    "height",
    "sha256",
    "source_sha256",
    "note",
]
DROPPED_FIELDS = ["source", "package", "version", "path", "inner_path", "licence", "reason"]


@dataclass
class Candidate:
    """One image found in a package, before the checks."""

    source: str
    package: str
    version: str
    path: str  # inside the package (or wheel)
    inner_path: str  # inside the .rcc / .edj, else ""
    data: bytes
    name: str  # stable output name (extension included)
    licence: str
    attribution: str = ""
    origin: str = ""
    note: str = ""
    group: str = ""  # same group (e.g. the original's URL): keep only the largest

    def dropped(self, licence: str, reason: str) -> dict:
        """The row of ``dropped.csv`` that leaves this image out for ``reason``."""
        return asdict(
            Dropped(
                self.source, self.package, self.version, self.path, self.inner_path, licence, reason
            )
        )


@dataclass
class Dropped:
    source: str
    package: str
    version: str
    path: str
    inner_path: str
    licence: str
    reason: str


def write_csv(rows: Iterable[dict], path: Path, fields: Sequence[str]) -> None:
    """Atomically write ``rows`` (dicts) as CSV with a header."""
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=list(fields), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    write_text_atomic(path, text.getvalue())


def write_manifest(records: Sequence[dict], dropped: Sequence[dict], output: Path) -> None:
    """``manifest.csv`` (kept photos, sorted by file) and ``dropped.csv`` (left out, and why)."""
    write_csv(
        sorted(records, key=lambda r: r["file"]), Path(output) / "manifest.csv", MANIFEST_FIELDS
    )
    write_csv(
        sorted(dropped, key=lambda r: (r["source"], r["path"], r["inner_path"])),
        Path(output) / "dropped.csv",
        DROPPED_FIELDS,
    )


def read_manifest(path: Path) -> List[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# What every source returns: (package, version, candidates, dropped)
SourceResult = Tuple[str, str, List[Candidate], List[Dropped]]
