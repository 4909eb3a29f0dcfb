import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch

from tasp_hloc import extract as extract_module
from tasp_hloc import match as match_module
from tasp_hloc.extract import extract
from tasp_hloc.hloc.confs import get_preset
from tasp_hloc.io.h5_journal import journal_path, open_append
from tasp_hloc.io.hloc_format import (
    list_h5_names,
    names_to_pair,
    rescale_prediction,
    write_features,
)
from tasp_hloc.io.images import ImageReadError
from tasp_hloc.match import exhaustive_pairs, match, write_pairs
from tasp_hloc.model.matcher import mutual_nearest_neighbor

from conftest import render_scene

KILL_AT = Path(__file__).parents[1] / "kill_at.py"


def test_keypoint_rescale_round_trip():
    """hloc's rule (kp + .5) * scale - .5 inverts the resize: pixel centres map to centres."""
    original, resized = np.array([1000, 750]), np.array([640, 480])
    kp_orig = np.array([[0.0, 0.0], [999.0, 749.0], [123.4, 567.8]], np.float32)
    s = original / resized
    kp_resized = (kp_orig + 0.5) / s - 0.5
    pred = {
        "keypoints": kp_resized.astype(np.float32),
        "scores": np.ones(3, np.float32),
        "descriptors": np.zeros((4, 3), np.float32),
    }
    out, unc = rescale_prediction(pred, resized, original, 1.0, as_half=False)
    assert np.allclose(out["keypoints"], kp_orig, atol=1e-3)
    assert unc == pytest.approx(s.mean(), rel=1e-6)
    assert out["keypoints"].dtype == np.float32 and out["descriptors"].dtype == np.float32
    half, _ = rescale_prediction(pred, resized, original, 1.0, as_half=True)
    # half precision: descriptors and scores float16, keypoints stay float32
    assert half["keypoints"].dtype == np.float32 and half["image_size"].dtype == np.int64
    assert half["descriptors"].dtype == np.float16 and half["scores"].dtype == np.float16
    assert np.array_equal(half["keypoints"], out["keypoints"])


def test_half_keeps_subpixel_keypoints_of_big_photos(tmp_path):
    """float16 steps by 2 px above 2048: keypoints of a 4000 px photo must stay float32."""
    original, resized = np.array([4000, 3000]), np.array([1024, 768])
    kp_orig = np.array([[3071.37, 2047.61], [0.25, 1999.99], [3999.1, 12.3]])
    s = original / resized
    pred = {
        "keypoints": ((kp_orig + 0.5) / s - 0.5).astype(np.float32),
        "scores": np.ones(3, np.float32),
        "descriptors": np.ones((4, 3), np.float32) / 2,
    }
    out, unc = rescale_prediction(pred, resized, original, 1.0, as_half=True)
    with open_append(tmp_path / "big.h5") as writer:
        with writer.item("big.jpg") as fd:
            write_features(fd, "big.jpg", out, unc)
    with h5py.File(tmp_path / "big.h5", "r") as fd:
        g = fd["big.jpg"]
        assert g["keypoints"].dtype == np.float32
        assert g["descriptors"].dtype == np.float16 and g["scores"].dtype == np.float16
        assert np.allclose(g["keypoints"][()], kp_orig, rtol=0, atol=1e-3)


def test_extract_writes_hloc_layout(image_dir, tiny_conf, tmp_path):
    path, failures = extract(tiny_conf, image_dir, tmp_path / "f.h5", num_workers=0)
    assert failures == []
    assert list_h5_names(path) == {"a.png", "b.jpg", "sub/c.png"}
    with h5py.File(path, "r") as fd:
        g = fd["a.png"]
        n = g["keypoints"].shape[0]
        assert 0 < n <= 64 and g["keypoints"].shape == (n, 2)
        assert g["descriptors"].shape == (128, n) and g["scores"].shape == (n,)
        assert g["keypoints"].dtype == np.float32 and g["descriptors"].dtype == np.float16
        assert g["scores"].dtype == np.float16
        assert g["image_size"][()].tolist() == [131, 97] and g["image_size"].dtype == np.int64
        assert g["keypoints"].attrs["uncertainty"] == pytest.approx(1.31, rel=1e-3)
        k = g["keypoints"][()].astype(np.float32)
        assert (k > 0).all() and (k[:, 0] < 130).all() and (k[:, 1] < 96).all()
        assert isinstance(fd["sub"], h5py.Group) and "c.png" in fd["sub"]
        d = g["descriptors"][()].astype(np.float32)
        assert np.allclose(np.linalg.norm(d, axis=0), 1, atol=2e-3)


def test_extract_resumes_and_survives_interruption(image_dir, tiny_conf, tmp_path, monkeypatch):
    out = tmp_path / "f.h5"
    extract(tiny_conf, image_dir, out, names=["a.png"], num_workers=0)
    with h5py.File(out, "r") as fd:
        first = fd["a.png"]["keypoints"][()]

    calls = []
    real_model = extract_module.build_model(tiny_conf["model"], "cpu")

    def counting(data):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed in the middle of the second new image
        return real_model(data)

    with pytest.raises(KeyboardInterrupt):
        extract(tiny_conf, image_dir, out, num_workers=0, model=counting)
    # Work done before the interruption is committed; the file is complete and readable.
    assert list_h5_names(out) == {"a.png", "b.jpg"}
    assert not journal_path(out).exists()
    calls.clear()
    extract(tiny_conf, image_dir, out, num_workers=0, model=counting)
    assert len(calls) == 1 and list_h5_names(out) == {"a.png", "b.jpg", "sub/c.png"}
    with h5py.File(out, "r") as fd:
        assert np.array_equal(fd["a.png"]["keypoints"][()], first)


def _groups(path):
    """{name: {dataset: array, dataset + "@" + attribute: value}} of a feature or match file."""
    out = {}
    with h5py.File(path, "r") as fd:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                group = out.setdefault(obj.parent.name.strip("/"), {})
                group[obj.name.rsplit("/", 1)[1]] = obj[()]
                group.update({f"{obj.name}@{k}": v for k, v in obj.attrs.items()})

        fd.visititems(visit)
    return out


def _assert_same_groups(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        assert sorted(a[name]) == sorted(b[name]), name
        for key, value in a[name].items():
            assert np.array_equal(value, b[name][key]), (name, key)
            assert np.asarray(value).dtype == np.asarray(b[name][key]).dtype, (name, key)


def _killed_cli(*args, kill):
    """Run ``python -m tasp_hloc`` until ``kill_at.py`` SIGKILLs it at ``kill``."""
    r = subprocess.run(
        [sys.executable, str(KILL_AT), kill, "tasp_hloc", *args, "--commit-every", "0"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == -signal.SIGKILL, r.stderr


@pytest.mark.parametrize("kill, committed", [("after:2", 2), ("during:3", 2)])
def test_extract_killed_by_sigkill_resumes_with_only_the_missing_images(
    tmp_path, tiny_conf, kill, committed
):
    """SIGKILL after image k, or in the middle of writing image k (file torn on disk): the
    rerun extracts only the images not committed and ends equal to an uninterrupted run."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(6):
        cv2.imwrite(str(images / f"{i}.png"), render_scene(60 + 7 * i, 80, i))
    weights = tmp_path / "w.pth"
    torch.save(extract_module.build_model(tiny_conf["model"], "cpu").state_dict(), weights)
    conf = get_preset("tasp_aachen", weights=str(weights), max_keypoints=32)
    conf["preprocessing"]["resize_max"] = 80
    out = tmp_path / "f.h5"
    _killed_cli(
        "extract",
        "--images",
        str(images),
        "--output",
        str(out),
        "--weights",
        str(weights),
        "--max-keypoints",
        "32",
        "--resize-max",
        "80",
        "--workers",
        "0",
        kill=kill,
    )
    assert journal_path(out).exists() == kill.startswith("during")  # "during": file torn

    model = extract_module.build_model(conf["model"], "cpu")
    calls = []
    counting = lambda data: calls.append(1) or model(data)  # noqa: E731
    extract(conf, images, out, num_workers=0, model=counting)
    assert len(calls) == 6 - committed
    extract(conf, images, tmp_path / "ref.h5", num_workers=0, model=model)
    _assert_same_groups(_groups(out), _groups(tmp_path / "ref.h5"))
    assert not journal_path(out).exists()


@pytest.mark.parametrize("kill, committed", [("after:4", 4), ("during:7", 6)])
def test_match_killed_by_sigkill_resumes_with_only_the_missing_pairs(
    tmp_path, monkeypatch, kill, committed
):
    feats = tmp_path / "f.h5"
    _write_random_features(feats, {f"db/{i}.jpg": 20 + 3 * i for i in range(5)})
    pair_list = exhaustive_pairs([f"db/{i}.jpg" for i in range(5)])
    pairs = write_pairs(pair_list, tmp_path / "p.txt")
    out = tmp_path / "m.h5"
    _killed_cli(
        "match",
        "--features",
        str(feats),
        "--pairs",
        str(pairs),
        "--output",
        str(out),
        "--batch-size",
        "3",
        "--device",
        "cpu",
        kill=kill,
    )
    assert journal_path(out).exists() == kill.startswith("during")

    written = []
    real = match_module.write_matches
    monkeypatch.setattr(
        match_module,
        "write_matches",
        lambda fd, pair, *a: written.append(pair) or real(fd, pair, *a),
    )
    match(pairs, feats, out, device="cpu")
    assert written == [names_to_pair(*p) for p in pair_list[committed:]]
    monkeypatch.undo()
    match(pairs, feats, tmp_path / "ref.h5", device="cpu")
    _assert_same_groups(_groups(out), _groups(tmp_path / "ref.h5"))


def test_unreadable_image_is_skipped_and_listed_or_fails_fast(image_dir, tiny_conf, tmp_path):
    (image_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    _, failures = extract(tiny_conf, image_dir, tmp_path / "f.h5", num_workers=1)
    assert [n for n, _ in failures] == ["broken.png"]
    assert list_h5_names(tmp_path / "f.h5") == {"a.png", "b.jpg", "sub/c.png"}
    with pytest.raises(ImageReadError, match="broken.png"):
        extract(
            tiny_conf,
            image_dir,
            tmp_path / "g.h5",
            num_workers=0,
            fail_fast=True,
            names=["a.png", "broken.png", "b.jpg"],
        )
    assert list_h5_names(tmp_path / "g.h5") == {"a.png"}  # nothing done is lost


def test_mutual_nn_against_brute_force():
    g = torch.Generator().manual_seed(0)
    d0 = torch.nn.functional.normalize(torch.randn(1, 40, 16, generator=g), dim=-1)
    d1 = torch.nn.functional.normalize(torch.randn(1, 30, 16, generator=g), dim=-1)
    m0, s0 = mutual_nearest_neighbor(d0, d1)
    sim = (d0[0] @ d1[0].T).numpy()
    for i in range(40):
        j = sim[i].argmax()
        expected = j if sim[:, j].argmax() == i else -1
        assert m0[0, i] == expected
        assert s0[0, i] == pytest.approx((sim[i, j] + 1) / 2, abs=1e-6)
    # padding never matches
    pad0 = torch.cat([d0, torch.zeros(1, 5, 16)], 1)
    mask0 = torch.arange(45)[None] < 40
    pm, ps = mutual_nearest_neighbor(pad0, d1, mask0, None)
    assert torch.equal(pm[:, :40], m0) and (pm[:, 40:] == -1).all()
    e, _ = mutual_nearest_neighbor(d0, d1[:, :0])
    assert e.shape == (1, 40) and (e == -1).all()


def test_mutual_nn_max_distance_by_hand():
    """Distance 0.6 means cosine >= 1 - 0.36 / 2 = 0.82: of two mutual pairs at cosine 0.9 and
    0.8, only the first survives; the dropped point's score is 0, as hloc stores it."""
    c8, s8 = 0.8, (1 - 0.8**2) ** 0.5
    c9, s9 = 0.9, (1 - 0.9**2) ** 0.5
    d0 = torch.tensor([[[1.0, 0, 0, 0], [0, 1.0, 0, 0]]])
    d1 = torch.tensor([[[c9, 0, s9, 0], [0, c8, 0, s8]]])
    m, s = mutual_nearest_neighbor(d0, d1)
    assert m.tolist() == [[0, 1]]
    m, s = mutual_nearest_neighbor(d0, d1, max_distance=0.6)
    assert m.tolist() == [[0, -1]]
    assert s[0].tolist() == pytest.approx([0.95, 0.0])
    m, _ = mutual_nearest_neighbor(d0, d1, max_distance=0.64)  # 2 * (1 - 0.8) = 0.4 <= 0.4096
    assert m.tolist() == [[0, 1]]


def _write_random_features(path, sizes, seed=0):
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as fd:
        for name, n in sizes.items():
            d = rng.normal(size=(8, n)).astype(np.float32)
            fd.create_group(name).create_dataset(
                "descriptors", data=(d / np.linalg.norm(d, axis=0)).astype(np.float16)
            )
            fd[name].create_dataset("keypoints", data=rng.uniform(0, 50, (n, 2)).astype(np.float16))


def test_match_file_layout_resume_and_unknown_names(tmp_path):
    feats = tmp_path / "f.h5"
    _write_random_features(feats, {"q/a.jpg": 30, "db/b.jpg": 25, "db/c.jpg": 0})
    pairs = write_pairs(
        [("q/a.jpg", "db/b.jpg"), ("db/b.jpg", "q/a.jpg"), ("q/a.jpg", "db/c.jpg")],
        tmp_path / "pairs.txt",
    )
    out = match(pairs, feats, tmp_path / "m.h5", device="cpu", batch_size=2)
    with h5py.File(out, "r") as fd:
        assert set(fd) == {"q-a.jpg"}  # names_to_pair flattens slashes
        g = fd[names_to_pair("q/a.jpg", "db/b.jpg")]
        assert g["matches0"].dtype == np.int16 and g["matches0"].shape == (30,)
        assert g["matching_scores0"].dtype == np.float16
        assert (g["matches0"][()] >= 0).sum() > 0
        assert (fd[names_to_pair("q/a.jpg", "db/c.jpg")]["matches0"][()] == -1).all()
    assert len(list_h5_names(out)) == 2  # the reversed duplicate is matched once

    before = out.stat().st_mtime_ns
    match(pairs, feats, out, device="cpu")  # everything done: file untouched
    assert out.stat().st_mtime_ns == before

    bad = write_pairs([("q/a.jpg", "db/ghost.jpg")], tmp_path / "bad.txt")
    with pytest.raises(KeyError, match="ghost.jpg"):
        match(bad, feats, tmp_path / "m2.h5")
    assert not (tmp_path / "m2.h5").exists()


def test_cli_extract_match_and_errors(image_dir, tmp_path):
    def run(*a):
        return subprocess.run(
            [sys.executable, "-m", "tasp_hloc", *a], capture_output=True, text=True
        )

    feats, matches = tmp_path / "f.h5", tmp_path / "m.h5"
    r = run(
        "extract",
        "--images",
        str(image_dir),
        "--output",
        str(feats),
        "--weights",
        "random",
        "--max-keypoints",
        "32",
        "--resize-max",
        "80",
        "--workers",
        "0",
    )
    assert r.returncode == 0, r.stderr
    r = run("match", "--features", str(feats), "--output", str(matches))
    assert r.returncode == 0, r.stderr
    assert len(list_h5_names(matches)) == 3
    r = run("extract", "--images", str(tmp_path / "missing"), "--output", str(feats))
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = run(
        "extract",
        "--images",
        str(image_dir),
        "--output",
        str(tmp_path / "x.h5"),
        "--weights",
        "no_such_weights",
    )
    assert r.returncode == 2 and "Unknown weights 'no_such_weights'" in r.stderr


def test_same_size_runs_groups_consecutive_images_of_one_size():
    shapes = [(3, 8, 8), (3, 8, 8), (3, 8, 8), None, (3, 8, 8), (3, 6, 8), (3, 6, 8)]
    items = [
        {"name": str(k), "error": "bad"} if s is None else {"name": str(k), "image": np.zeros(s)}
        for k, s in enumerate(shapes)
    ]
    runs = [[i["name"] for i in run] for run in extract_module.same_size_runs(items, 2)]
    assert runs == [["0", "1"], ["2"], ["3"], ["4"], ["5", "6"]]
    runs = [[i["name"] for i in run] for run in extract_module.same_size_runs(items, 1)]
    assert runs == [[str(k)] for k in range(7)]


def test_batched_extraction_equals_one_at_a_time(tmp_path, tiny_conf):
    root = tmp_path / "images"
    root.mkdir()
    for k in range(4):  # 4 of one size, then another size, then a broken file
        cv2.imwrite(str(root / f"s{k}.png"), render_scene(90, 120, k))
    cv2.imwrite(str(root / "t0.png"), render_scene(120, 90, 7))
    (root / "u_broken.png").write_bytes(b"not an image")
    model = extract_module.build_model(tiny_conf["model"], "cpu")
    calls = []

    def counting(data):
        calls.append(len(data["image"]))
        return model(data)

    one, failures_one = extract(
        tiny_conf, root, tmp_path / "one.h5", num_workers=0, model=model, as_half=False
    )
    many, failures_many = extract(
        tiny_conf,
        root,
        tmp_path / "many.h5",
        num_workers=2,
        model=counting,
        batch_size=3,
        as_half=False,
    )
    assert calls == [3, 1, 1]  # s0-s2, s3, t0; the broken file never reaches the network
    assert [n for n, _ in failures_one] == [n for n, _ in failures_many] == ["u_broken.png"]
    assert (
        list_h5_names(one)
        == list_h5_names(many)
        == {"s0.png", "s1.png", "s2.png", "s3.png", "t0.png"}
    )
    with h5py.File(one, "r") as a, h5py.File(many, "r") as b:
        for name in list_h5_names(one):
            assert a[name]["keypoints"].shape == b[name]["keypoints"].shape
            assert set(a[name]) == set(b[name])
            for key in a[name]:
                np.testing.assert_allclose(
                    a[name][key][()].astype(np.float32),
                    b[name][key][()].astype(np.float32),
                    atol=2e-3,
                )


def test_writer_error_stops_extraction_and_keeps_earlier_images(
    image_dir, tiny_conf, tmp_path, monkeypatch
):
    real_write = extract_module.write_features

    def failing(fd, name, pred, uncertainty):
        if name == "b.jpg":
            raise OSError("No space left on device")
        real_write(fd, name, pred, uncertainty)

    monkeypatch.setattr(extract_module, "write_features", failing)
    out = tmp_path / "f.h5"
    with pytest.raises(OSError, match="No space left"):
        extract(tiny_conf, image_dir, out, num_workers=0)
    assert list_h5_names(out) == {"a.png"}  # committed and readable, no half-written group
    assert not journal_path(out).exists()


def test_hloc_extract_features_as_half_keeps_keypoints_precise(tmp_path):
    """Through (the stand-in of) hloc's ``extract_features.main`` with ``as_half=True``, its
    default: descriptors and scores become float16, TaSP's keypoints stay float64."""
    from hloc_standin import write_hloc_standin

    standin = write_hloc_standin(tmp_path / "standin")
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), render_scene(150, 200, 0))
    code = (
        "import sys\n"
        "from tasp_hloc.hloc.plugin import register\n"
        "register()\n"
        "from hloc import extract_features\n"
        "conf = dict(extract_features.confs['tasp_aachen'])\n"
        "conf['model'] = {**conf['model'], 'weights': None, 'max_keypoints': 64}\n"
        "conf['preprocessing'] = {**conf['preprocessing'], 'resize_max': 96}\n"
        "extract_features.main(conf, sys.argv[1], feature_path=sys.argv[2], as_half=True)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(standin), root])}
    out = tmp_path / "hloc.h5"
    done = subprocess.run(
        [sys.executable, "-c", code, str(images), str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with h5py.File(out, "r") as fd:
        g = fd["a.png"]
        assert g["keypoints"].dtype == np.float64
        assert g["descriptors"].dtype == np.float16 and g["scores"].dtype == np.float16
        k = g["keypoints"][()]
        assert 0 < len(k) <= 64 and (k > 0).all() and (k[:, 0] < 199).all()
        assert not np.allclose(k, k.astype(np.float16))  # sub-pixel places float16 would lose
