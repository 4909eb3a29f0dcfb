"""The run: :func:`admit` applies the licence, size and cut-out checks to a candidate (and
downscales it), :func:`process_source` writes the kept photos of one source, :func:`gather`
runs the sources of :data:`SOURCES` in order with skip/resume and writes the manifest files,
and :func:`main` is the command line (``python -m tools.photos``)."""

from __future__ import annotations

import argparse
import json
import posixpath
import re
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from tasp_hloc.io.files import write_bytes_atomic

from . import __doc__ as _PACKAGE_DOC
from .container_sources import source_enlightenment, source_gcompris
from .debian_sources import source_libjxl, source_lomiri, source_palapeli
from .licences import classify_licence
from .manifest import Candidate, SourceResult, sha256, write_manifest
from .python_sources import source_scipy, source_skimage, source_sklearn

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = Path("~/.cache/tasp_hloc/gather_photos")

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
            drops.append(c.dropped(" ".join(c.licence.split()), reason))
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
                c.dropped(
                    rec["licence"],
                    f"another size of the same original as {other.inner_path or other.path}",
                )
            )
            continue
        dup = seen.get(rec["sha256"]) or seen.get(rec["source_sha256"])
        if dup:
            drops.append(c.dropped(rec["licence"], f"duplicate of {dup}"))
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
        prog="python -m tools.photos",
        description=_PACKAGE_DOC.split("\n\n")[0],
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
