"""The Debian sources whose photos sit inside containers: gcompris-qt-data (photos in the
activities' Qt ``.rcc`` files, credited per file by the READMEs inside them) and
enlightenment-data (wallpaper JPEGs at several sizes inside Edje ``.edj`` files, licence from
``debian/copyright``), with their reviewed lists."""

from __future__ import annotations

import posixpath
import re
import struct
from pathlib import Path
from typing import Optional, Tuple

from .archives import read_eet, read_rcc
from .credits import credit_lookup, dep5_lookup, parse_credit_stanzas
from .debian_sources import IMAGE_LIKE, PHOTO_EXTENSIONS, _debian_copyright, _drop_rest
from .licences import classify_licence
from .manifest import Candidate, Dropped, SourceResult
from .packages import debian_package

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
