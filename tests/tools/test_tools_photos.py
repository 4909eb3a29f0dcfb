"""The photo gatherer's parts (the repository tool tools.photos, whose command is
``python -m tools.photos``), offline: the .rcc and .edj readers on files built here, the
licence classifier, the credit parsers, the checks, the manifest, the skip/resume logic on fake
sources, the trainer reading the gathered folder, and the command run from the repository's
root. Nothing here downloads; the recipe itself is run by hand."""

import csv
import json
import pathlib
import struct
import zlib

import cv2
import numpy as np
import pytest

from tools.photos import archives, container_sources, credits, licences, manifest
from tools.photos import gather as run

# --- a .rcc writer following Qt's format (rcc.cpp), for the reader's tests ----------------------


def qt_hash(name: str) -> int:
    h = 0
    for ch in name:
        h = ((h << 4) + ord(ch)) & 0xFFFFFFFF
        h ^= (h & 0xF0000000) >> 23
        h &= 0x0FFFFFFF
    return h


def build_rcc(files: dict, version: int = 3) -> bytes:
    """``files``: {"/a/b.png": (bytes, None | "zlib" | "zstd")} -> a binary resource."""
    root: dict = {}
    for path, entry in files.items():
        parts = path.strip("/").split("/")
        d = root
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = entry
    nodes = [("", root)]  # breadth first, children of a folder contiguous and sorted by hash
    children = {}
    i = 0
    while i < len(nodes):
        if isinstance(nodes[i][1], dict):
            kids = sorted(nodes[i][1].items(), key=lambda kv: qt_hash(kv[0]))
            children[i] = (len(nodes), len(kids))
            nodes.extend(kids)
        i += 1
    names, name_offsets, payload, tree = bytearray(), {}, bytearray(), bytearray()
    for i, (name, entry) in enumerate(nodes):
        if i and name not in name_offsets:
            name_offsets[name] = len(names)
            names += struct.pack(">HI", len(name), qt_hash(name)) + name.encode("utf-16-be")
        name_off = name_offsets.get(name, 0)
        if isinstance(entry, dict):
            first, count = children[i]
            tree += struct.pack(">IHII", name_off, archives.RCC_DIRECTORY, count, first)
        else:
            data, compression = entry
            flags, blob = 0, data
            if compression == "zlib":
                flags, blob = (
                    archives.RCC_COMPRESSED,
                    struct.pack(">I", len(data)) + zlib.compress(data),
                )
            elif compression == "zstd":
                import zstandard

                flags, blob = (
                    archives.RCC_COMPRESSED_ZSTD,
                    zstandard.ZstdCompressor().compress(data),
                )
            tree += struct.pack(">IHHHI", name_off, flags, 0, 0, len(payload))
            payload += struct.pack(">I", len(blob)) + blob
        if version >= 2:
            tree += struct.pack(">Q", 1_700_000_000_000)  # modification time (ms)
    header = 24 if version >= 3 else 20
    data_off, names_off = header, header + len(payload)
    tree_off = names_off + len(names)
    head = b"qres" + struct.pack(">IIII", version, tree_off, data_off, names_off)
    if version >= 3:
        head += struct.pack(">I", 0)
    return head + bytes(payload) + bytes(names) + bytes(tree)


FILES = {
    "/gcompris/src/activities/x/resource/README": (
        b"Copyright: A\nLicense: CC0-1.0\nFiles:\nphoto.webp\n",
        None,
    ),
    "/gcompris/src/activities/x/resource/photo.webp": (bytes(range(256)) * 40, "zlib"),
    "/gcompris/src/activities/x/resource/sub/dir/t\u00e9st.svg": (b"<svg/>", None),
    "/gcompris/src/activities/y.qml": (b"import QtQuick 2.12\n" * 50, "zlib"),
}


@pytest.mark.parametrize("version", [1, 2, 3])
def test_rcc_reader_round_trip(version):
    out = archives.read_rcc(build_rcc(FILES, version))
    assert out == {k: v[0] for k, v in FILES.items()}


def test_rcc_reader_zstd():
    pytest.importorskip(
        "zstandard", reason="zstandard (PyPI) not installed; Qt 6 zstd entries need it"
    )
    files = {"/a/b.bin": (b"zstd payload " * 100, "zstd"), "/a/c.bin": (b"plain", None)}
    assert archives.read_rcc(build_rcc(files)) == {k: v[0] for k, v in files.items()}


def test_rcc_reader_rejects_garbage():
    with pytest.raises(archives.RccError, match="magic"):
        archives.read_rcc(b"PK\x03\x04 not a resource")
    data = build_rcc(FILES)
    with pytest.raises(archives.RccError):
        archives.read_rcc(data[: len(data) // 2])  # truncated: the tree is at the end
    bad = bytearray(data)
    bad[4:8] = struct.pack(">I", 9)
    with pytest.raises(archives.RccError, match="version"):
        archives.read_rcc(bytes(bad))


def build_eet(entries: dict) -> bytes:
    """{name: (bytes, flags)} -> an Eet file (zlib when flags & 1)."""
    n = len(entries)
    names = b"".join(k.encode() + b"\0" for k in entries)
    blobs = [zlib.compress(v) if f & 1 else v for v, f in entries.values()]
    head = 12 + 24 * n
    data_at = head + len(names)
    directory, name_at, out = b"", head, b""
    for (name, (raw, flags)), blob in zip(entries.items(), blobs):
        directory += struct.pack(
            ">6i", data_at + len(out), len(blob), len(raw), name_at, len(name) + 1, flags
        )
        name_at += len(name) + 1
        out += blob
    return struct.pack(">III", archives.EET_MAGIC_FILE2, n, 0) + directory + names + out


def test_eet_reader():
    jpeg = cv2.imencode(".jpg", np.full((20, 30, 3), 128, np.uint8))[1].tobytes()
    data = build_eet(
        {"edje/images/0": (jpeg, 0), "edje/file": (b"x" * 300, 1), "secret": (b"y", 2)}
    )
    out = archives.read_eet(data)
    assert out == {"edje/images/0": jpeg, "edje/file": b"x" * 300}  # the ciphered entry is skipped
    assert container_sources._jpeg_size(jpeg) == (30, 20)
    with pytest.raises(ValueError, match="Eet"):
        archives.read_eet(b"qres" + bytes(20))


# --- licences and credits --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, ok, name",
    [
        ("CC0-1.0", True, "CC0-1.0"),
        ("Public Domain", True, "public-domain"),
        ("public domain", True, "public-domain"),
        ("CC-BY 2.0", True, "CC-BY-2.0"),
        ("CC-BY-4.0", True, "CC-BY-4.0"),
        ("Creative Commons Attribution 3.0", True, "CC-BY-3.0"),
        (
            "Released under a creative commons license. https://creativecommons.org/licenses/by/2.0/",
            True,
            "CC-BY-2.0",
        ),
        ("BSD-2-clause", True, "BSD-2-Clause"),
        ("Apache-2.0 AND BSD-3-Clause", True, "BSD-3-Clause AND Apache-2.0"),
        ("MIT/Expat", True, "MIT"),
        ("No copyright restrictions. CC0 by the photographer (Lav Varshney).", True, "CC0-1.0"),
        ("CC-BY-SA 4.0", False, ""),
        ("CC-BY-SA-4.0", False, ""),
        ("Attribution-ShareAlike 4.0 International", False, ""),
        ("https://creativecommons.org/licenses/by-sa/3.0/", False, ""),
        ("CC BY-NC 2.0", False, ""),
        ("CC-BY-ND 4.0", False, ""),
        ("GPLv3 or later", False, ""),
        ("GNU-FDL", False, ""),
        ("unknown", False, ""),
        ("", False, ""),
        (None, False, ""),
        ("No known copyright restrictions.", False, ""),
        (
            "Photo from https://example.org/public_domain_cc0_images/x.jpg",
            False,
            "",
        ),  # URLs say nothing
    ],
)
def test_licence_classifier(text, ok, name):
    verdict = licences.classify_licence(text)
    assert verdict.ok is ok
    assert verdict.name == name
    assert bool(verdict.reason) is not ok


def test_licence_classifier_reasons():
    assert "share-alike" in licences.classify_licence("CC-BY-SA 4.0").reason
    assert "non-commercial" in licences.classify_licence("CC BY-NC 2.0").reason
    assert "no recognised licence" in licences.classify_licence("unknown").reason
    assert licences.classify_licence(
        "CC-BY-SA 3.0 or CC0"
    ).ok  # a choice of licences: one passing is enough


README = """Copyright: Timothee Giet, 2018
License: CC-BY-SA 4.0
Files:
  background.svg

Copyright: Someone
Source: https://commons.wikimedia.org/wiki/File:A.jpg
License: CC0-1.0
Files:
wonders/a.webp

Copyright: 2000, 2008 Bruno Coudoin and others
License: CC-BY 4.0
castle_0.webp
castle_background.webp
Comment: based on a photo by Guillaume Piolle, license CC-BY 3.0, source at https://example.org/c.jpg
Files: heron.webp
Source: https://example.org/heron.jpg
License: Public domain
Copyright: Stephan
"""


def test_credit_stanzas_and_lookup():
    stanzas = credits.parse_credit_stanzas(README)
    assert [s["files"] for s in stanzas] == [
        ["background.svg"],
        ["wonders/a.webp"],
        ["castle_0.webp", "castle_background.webp"],
        ["heron.webp"],
    ]
    assert stanzas[2]["licence"] == "CC-BY 4.0" and "Guillaume Piolle" in stanzas[2]["comment"]
    assert stanzas[3]["licence"] == "Public domain" and stanzas[3]["copyright"] == "Stephan"
    readmes = {"/r": stanzas}
    assert credits.credit_lookup(readmes, "/r/wonders/a.webp")[1] == [stanzas[1]]
    assert credits.credit_lookup(readmes, "/r/castle_0.webp") == ("/r", [stanzas[2]])
    assert (
        credits.credit_lookup(readmes, "/r/sub/heron.webp")[1] == []
    )  # not listed for that folder
    assert credits.credit_lookup(readmes, "/r/other.webp") == (None, [])


DEP5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: x

Files: *
Copyright: 2000-2020 Carsten Haitzler and various contributors
\t   2005 Someone Else
License: BSD-2-clause

Files: 16.04/photo_by_A.jpg
Copyright: A, 2018
License: CC-BY-SA-4.0

Files: debian/*
 AUTHORS
Copyright: 2018 D
License: Expat

License: CC-BY-SA-4.0
 Attribution-ShareAlike 4.0 International
 .
 Files: this line is licence text, not a field
"""


def test_dep5_lookup():
    stanzas = credits.parse_credit_stanzas(DEP5)
    assert (
        credits.dep5_lookup(stanzas, "data/backgrounds/Mountain.edj")["licence"] == "BSD-2-clause"
    )
    assert (
        credits.dep5_lookup(stanzas, "16.04/photo_by_A.jpg")["licence"] == "CC-BY-SA-4.0"
    )  # last match wins
    assert credits.dep5_lookup(stanzas, "debian/rules")["licence"] == "Expat"
    assert credits.dep5_lookup(stanzas, "data/backgrounds/Mountain.edj")["copyright"].startswith(
        "2000-2020 Carsten"
    )


# --- checks, manifest, gather ----------------------------------------------------------------


def textured(h, w, seed=0, channels=3):
    rng = np.random.default_rng(seed)
    im = cv2.GaussianBlur(rng.uniform(0, 255, (h, w, channels)).astype(np.float32), (0, 0), 2.0)
    return np.clip((im - im.mean()) * 4 + 128, 0, 255).astype(np.uint8)


def enc(im, ext=".jpg"):
    return cv2.imencode(ext, im)[1].tobytes()


def cand(name, data, licence="CC0-1.0", group=""):
    return manifest.Candidate(
        "fake",
        "fake-pkg",
        "1.0",
        f"usr/share/{name}",
        "",
        data,
        name,
        licence,
        "Some One",
        "https://example.org",
        group=group,
    )


def fake_candidates():
    good = enc(textured(300, 400, 1))
    rgba = textured(300, 300, 2, 4)
    rgba[:, :150, 3] = 0
    return [
        cand("good.jpg", good),
        cand("sa.jpg", enc(textured(300, 400, 3)), "CC-BY-SA 4.0"),
        cand("small.jpg", enc(textured(100, 120, 4)), "Public Domain"),
        cand("cutout.png", enc(rgba, ".png"), "Public Domain"),
        cand("copy.jpg", good),
        cand("big.png", enc(textured(1000, 2000, 5), ".png"), "CC-BY 4.0"),
        cand("v_small.jpg", enc(textured(260, 300, 6)), group="url1"),
        cand("v_large.jpg", enc(textured(520, 600, 6)), group="url1"),
    ]


def test_process_source_checks(tmp_path):
    records, drops = run.process_source(
        "fake", ("fake-pkg", "1.0", fake_candidates(), []), tmp_path, {}, min_side=256, max_side=800
    )
    kept = {r["file"]: r for r in records}
    assert sorted(kept) == ["fake/big.png", "fake/good.jpg", "fake/v_large.jpg"]
    reasons = {d["path"].split("/")[-1]: d["reason"] for d in drops}
    assert "share-alike" in reasons["sa.jpg"]
    assert "too small" in reasons["small.jpg"]
    assert "transparent" in reasons["cutout.png"]
    assert reasons["copy.jpg"] == "duplicate of fake/good.jpg"
    assert "same original" in reasons["v_small.jpg"]
    good = kept["fake/good.jpg"]
    assert (tmp_path / "fake/good.jpg").read_bytes() == fake_candidates()[
        0
    ].data  # copied byte for byte
    assert good["sha256"] == good["source_sha256"] and good["licence_class"] == "CC0-1.0"
    big = kept["fake/big.png"]
    assert (big["width"], big["height"]) == (800, 400) and "downscaled from 2000x1000" in big[
        "note"
    ]
    assert cv2.imread(str(tmp_path / "fake/big.png")).shape == (400, 800, 3)
    assert big["sha256"] != big["source_sha256"]


def test_manifest_writer(tmp_path):
    rec = dict(
        file="a/x.jpg",
        source="a",
        package="p",
        version="1:2.0",
        path="usr/x.rcc",
        inner_path="/g/x.webp",
        licence="CC-BY 4.0",
        licence_class="CC-BY-4.0",
        attribution='Name, "Nick", 2018',
        origin="https://e.org/x?y=1,2",
        width=640,
        height=480,
        sha256="ab" * 32,
        source_sha256="cd" * 32,
        note="",
    )
    drop = dict(
        source="a",
        package="p",
        version="1",
        path="usr/y.png",
        inner_path="",
        licence="GPL-3",
        reason="licence: copyleft (GPL/FDL)",
    )
    manifest.write_manifest([rec], [drop], tmp_path)
    rows = manifest.read_manifest(tmp_path / "manifest.csv")
    assert rows == [{k: str(v) for k, v in rec.items()}]
    assert list(rows[0]) == manifest.MANIFEST_FIELDS
    with open(tmp_path / "dropped.csv", newline="") as f:
        assert list(csv.DictReader(f)) == [drop]
    assert not list(tmp_path.glob("*.tmp"))


def test_gather_skips_finished_sources_and_isolates_failures(tmp_path, monkeypatch):
    calls = {"a": 0, "b": 0}
    broken = {"b": True}

    def source_a(cache):
        calls["a"] += 1
        return "pkg-a", "1", [cand("one.jpg", enc(textured(300, 300, 7)))], []

    def source_b(cache):
        calls["b"] += 1
        if broken["b"]:
            raise RuntimeError("mirror unreachable")
        return "pkg-b", "2", [cand("two.jpg", enc(textured(300, 300, 8)), "Public Domain")], []

    monkeypatch.setattr(run, "SOURCES", {"a": source_a, "b": source_b})
    out, cache = tmp_path / "photos", tmp_path / "cache"
    logs = []
    s = run.gather(out, cache, ["a", "b"], log=logs.append)
    assert s["sources"]["b"]["status"] == "FAILED: RuntimeError: mirror unreachable"
    assert s["sources"]["a"]["status"] == "ok" and s["total"] == 1
    assert [r["file"] for r in manifest.read_manifest(out / "manifest.csv")] == ["a/one.jpg"]

    broken["b"] = False
    s = run.gather(out, cache, ["a", "b"], log=logs.append)
    assert calls == {"a": 1, "b": 2}  # a was not redone
    assert (
        s["sources"]["a"]["status"].startswith("done before")
        and s["sources"]["b"]["status"] == "ok"
    )
    assert [r["file"] for r in manifest.read_manifest(out / "manifest.csv")] == [
        "a/one.jpg",
        "b/two.jpg",
    ]
    assert json.loads((out / "sources.json").read_text())["total"] == 2

    run.gather(out, cache, ["a"], force=True, log=logs.append)  # redo one; the other stays listed
    assert calls["a"] == 2
    assert len(manifest.read_manifest(out / "manifest.csv")) == 2

    (out / "a/one.jpg").unlink()  # a lost file makes the source run again
    run.gather(out, cache, ["a"], log=logs.append)
    assert calls["a"] == 3 and (out / "a/one.jpg").is_file()

    broken["b"] = True
    assert run.main(["--output", str(out), "--cache", str(cache), "--sources", "b", "--force"]) == 1
    assert (out / "b/two.jpg").is_file()  # a failed redo keeps what was gathered before
    assert [r["file"] for r in manifest.read_manifest(out / "manifest.csv")] == [
        "a/one.jpg",
        "b/two.jpg",
    ]


def test_gather_refuses_folders_in_the_repo_or_cache_in_output(tmp_path):
    with pytest.raises(ValueError, match="inside the repository"):
        run.gather(run.REPO_ROOT / "outputs" / "photos_here", tmp_path, [])
    with pytest.raises(ValueError, match="inside --output"):
        run.gather(tmp_path / "o", tmp_path / "o" / "cache", [])
    with pytest.raises(SystemExit):
        run.main(["--output", str(tmp_path / "o"), "--sources", "no-such-source"])


# --- the trainer reads the gathered folder ------------------------------------------------------


def test_trainer_uses_the_gathered_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "SOURCES", {"a": lambda cache: ("pkg", "1", fake_candidates(), [])})
    out = tmp_path / "photos"
    run.gather(out, tmp_path / "cache", ["a"], max_side=800, log=lambda s: None)
    kept = sorted(str(out / r["file"]) for r in manifest.read_manifest(out / "manifest.csv"))

    from tasp_hloc.data.homographic import HomographicDataset
    from tasp_hloc.data.synthetic import SyntheticScenes

    ds = HomographicDataset(
        {"image_dirs": [str(out)], "size": [64, 64], "seed": 0, "short_side": [70, 90]}
    )
    assert (
        sorted(map(str, ds.files)) == kept
    )  # manifest.csv, dropped.csv and .state/ are not images
    assert ds[0]["image0"].shape == (3, 64, 64)
    s = SyntheticScenes(
        {"size": 64, "num_samples": 2, "seed": 1, "texture_size": 64, "texture_dir": str(out)}
    )[0]
    assert s["image0"].std() > 0.02

    from tasp_hloc.train.config import load_config

    monkeypatch.setenv("TASP_PHOTOS", str(out))
    conf = load_config("photos_v3")
    homographic, _, synthetic = conf.data.sources
    assert str(out) in list(homographic.image_dirs) and synthetic.texture_dir == str(out)
    assert any(d.endswith("photos/tum") for d in homographic.image_dirs)
    assert conf.model.weights == "tasp_v0"
    monkeypatch.delenv("TASP_PHOTOS")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_config("photos_v3").data.sources[2].texture_dir == str(tmp_path / "tasp_photos")


def test_gatherer_is_never_imported_by_the_package():
    # run by hand only: nothing in tasp_hloc imports tools/ (so no test or training run downloads,
    # and the installed package, which lacks tools/, needs none of it)
    import re

    root = pathlib.Path(__file__).resolve().parents[2]
    assert run.REPO_ROOT == root
    imports = re.compile(
        r"^\s*(?:from|import)\s+[^\n]*\b(?:tools|gather_photos|photos)\b"
        r"|import_module\([^)]*(?:tools|gather_photos|photos)",
        re.M,
    )
    users = [
        p
        for p in (root / "tasp_hloc").rglob("*.py")
        if imports.search(p.read_text(errors="replace"))
    ]
    assert users == []
    assert not (root / "tasp_hloc" / "data" / "photos").exists()
    assert not (root / "tasp_hloc" / "data" / "gather_photos.py").exists()


def test_command_runs_as_a_module_from_the_repository_root():
    import os
    import subprocess
    import sys

    repo = pathlib.Path(__file__).resolve().parents[2]
    path = os.pathsep.join(x for x in (str(repo), os.environ.get("PYTHONPATH")) if x)
    done = subprocess.run(
        [sys.executable, "-m", "tools.photos", "--help"],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "python -m tools.photos" in done.stdout
    assert "Gather photographs whose terms allow releasing trained weights" in done.stdout
    for option in ("--output", "--cache", "--sources", "--force", "--min-side", "--max-side"):
        assert option in done.stdout, option
