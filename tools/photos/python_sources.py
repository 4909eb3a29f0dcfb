"""The PyPI sources: scikit-image's bundled sample photos (licence from each loader's
docstring), scikit-learn's two sample photos (licence from the README beside them) and scipy's
``face`` and ``ascent`` (always left out: no stated licence). Each ``source_*`` returns a
``SourceResult``; nothing here downloads data at run time, only the wheel when the
distribution is not installed."""

from __future__ import annotations

import ast
import posixpath
import re
from pathlib import Path

from .manifest import Candidate, Dropped, SourceResult
from .packages import PyPIPackage

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
