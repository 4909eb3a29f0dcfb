"""The Debian sources whose photos are plain files in the package: lomiri-wallpapers-16.04,
libjxl-testdata and palapeli-data (each ``source_*`` returns a ``SourceResult``), with their
reviewed lists and the helpers shared by every Debian source (the image files of an unpacked
package, its ``debian/copyright``, dropping what a source did not take)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List

from .credits import dep5_lookup, parse_credit_stanzas
from .manifest import Candidate, Dropped, SourceResult
from .packages import debian_package

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
