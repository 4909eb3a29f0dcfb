"""Credit files that give a licence per file: Debian ``copyright`` files (DEP-5) and the
gcompris README stanzas, parsed by :func:`parse_credit_stanzas` into stanzas of files, licence,
copyright and source; :func:`dep5_lookup` and :func:`credit_lookup` find the stanza that
governs a path."""

from __future__ import annotations

import fnmatch
import posixpath
import re
from typing import Dict, List, Optional, Sequence, Tuple

_FIELD = re.compile(
    r"^(Files?|Copyright|Licen[cs]e|Source|Comments?|Author|Attribution)\s*:\s*(.*)$", re.I
)
_FILE_TOKEN = re.compile(r"^[\w.@+*?\[\]-]+(?:/[\w.@+*?\[\]-]+)*\.[A-Za-z0-9]{2,5}$")


def parse_credit_stanzas(text: str) -> List[dict]:
    """Stanzas of ``Key: value`` lines (DEP-5 ``debian/copyright`` and gcompris READMEs).

    Returns dicts with ``files`` (list of path patterns), ``licence`` (first line of the
    License/Licence field), ``copyright``, ``source``, ``comment`` and ``text`` (the stanza).
    Stanzas are separated by blank lines, or start again when a field repeats. Lines without a
    field that look like file names are files (gcompris READMEs list them bare); other such
    lines continue the previous field.
    """
    stanzas: List[dict] = []
    current: dict = {}
    last = None

    def close():
        nonlocal current, last
        if current:
            stanzas.append(current)
        current, last = {}, None

    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip():
            close()
            continue
        m = _FIELD.match(line) if not line[0].isspace() or last is None else None
        if m:
            key = m.group(1).lower()
            key = {
                "file": "files",
                "licence": "licence",
                "license": "licence",
                "comments": "comment",
            }.get(key, key)
            if key in current:  # a field repeats: a new stanza without a blank line
                close()
            if key == "files":
                current.setdefault("files", []).extend(m.group(2).split())
            else:
                current[key] = m.group(2).strip()
            current.setdefault("_text", []).append(line)
            last = key
            continue
        current.setdefault("_text", []).append(line)
        tokens = line.split()
        if last == "files" or all(_FILE_TOKEN.match(t) or t == "to" for t in tokens):
            current.setdefault("files", []).extend(
                t for t in tokens if t != "to"
            )  # "00.svg to 20.svg"
        elif last == "licence":  # DEP-5: the licence text follows the short name
            current["licence_text"] = current.get("licence_text", "") + "\n" + line.strip()
        elif last:
            current[last] = (current.get(last, "") + "\n" + line.strip()).strip()
    close()
    for s in stanzas:
        s["text"] = "\n".join(s.pop("_text", []))
        s.setdefault("files", [])
    return stanzas


def _glob_match(path: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(path, pattern)


def dep5_lookup(stanzas: Sequence[dict], path: str) -> Optional[dict]:
    """The DEP-5 stanza that governs ``path`` (the last matching ``Files`` pattern wins).

    ``path`` is relative to the source tree; a pattern also matches by file name when it names a
    file in a folder of the source tree that the binary package flattened (``16.04/x.jpg``).
    """
    found = None
    base = posixpath.basename(path)
    for s in stanzas:
        for pattern in s["files"]:
            if _glob_match(path, pattern) or (
                "/" in pattern and "*" not in pattern and posixpath.basename(pattern) == base
            ):
                found = s
    return found


def credit_lookup(readmes: Dict[str, List[dict]], path: str) -> Tuple[Optional[str], List[dict]]:
    """The stanzas of the nearest README (same folder, then parents) that list ``path``."""
    folder = posixpath.dirname(path)
    while True:
        if folder in readmes:
            rel = posixpath.relpath(path, folder)
            hits = [s for s in readmes[folder] if any(_glob_match(rel, p) for p in s["files"])]
            if hits:
                return folder, hits
        if folder in ("", "/"):
            return None, []
        folder = posixpath.dirname(folder)
