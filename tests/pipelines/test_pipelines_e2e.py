"""End-to-end runs of the Aachen, InLoc, HPatches and ETH pipelines on generated scenes (need hloc).

Features are hloc's `sift` (pycolmap SIFT): TaSP's random-init weights would not localize, so
TaSP itself only gets a plumbing run. NetVLAD uses a randomly initialised checkpoint in hloc's
layout; with top-k at least the database size, retrieval still returns every database image.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip(
    "hloc",
    reason="hloc is not on PyPI: install it from "
    "https://github.com/cvg/Hierarchical-Localization to run the pipelines",
)

sys.path.insert(0, str(Path(__file__).parents[1]))
from pipelines import (  # noqa: E402
    aachen,
    common,
    eth,
    evaluate,
    hpatches,
    inloc,
    inloc_localize,
    netvlad,
    triangulate,
)
from pipelines import results as results_files  # noqa: E402
from tasp_hloc.io import hloc_format  # noqa: E402

import pipeline_scenes as ps  # noqa: E402

REPO = Path(__file__).parents[2]
BLANK = np.full((240, 320, 3), 128, np.uint8)  # a query no feature can localize


def _dataset(tmp_path_factory, kind, make, blank_path, blank_image):
    """A generated dataset with its ground truth, a blank query image at `blank_path` (relative
    to the dataset) and a random NetVLAD checkpoint."""
    root = tmp_path_factory.mktemp(kind)
    queries = make(root / "ds")
    ps.write_poses_txt(root / "gt.txt", queries)
    ps.imwrite(root / "ds" / blank_path, blank_image)
    return root, queries, netvlad.make_random_checkpoint(root / "netvlad.mat")


@pytest.fixture(scope="module")
def aachen_ds(tmp_path_factory):
    blank = "query/night/nexus5x/IMG_blank.jpg"
    root, queries, ckpt = _dataset(
        tmp_path_factory, "aachen", ps.make_aachen, f"images_upright/{blank}", BLANK
    )
    with open(root / "ds/queries/night_time_queries_with_intrinsics.txt", "a") as fd:
        fd.write(f"{blank} SIMPLE_RADIAL 320 240 240 160 120 0\n")
    return root, queries, ckpt, blank


@pytest.fixture(scope="module")
def inloc_ds(tmp_path_factory):
    blank = "query/iphone7/IMG_9999.JPG"
    root, queries, ckpt = _dataset(
        tmp_path_factory, "inloc", ps.make_inloc, blank, np.full((480, 640, 3), 128, np.uint8)
    )
    return root, queries, ckpt, blank


def aachen_args(root, ckpt, out, *extra):
    return [
        "--dataset",
        str(root / "ds"),
        "--outputs",
        str(out),
        "--features",
        "sift",
        "--netvlad-weights",
        str(ckpt),
        *extra,
    ]


def check_complete(results: Path, names):
    poses = results_files.read_results(results)
    assert set(poses) == {n.split("/")[-1] for n in names}
    return poses


def test_aachen_end_to_end(aachen_ds, capsys):
    root, queries, ckpt, blank = aachen_ds
    out = root / "out"
    results = aachen.main(aachen_args(root, ckpt, out))
    check_complete(results, [q.name for q in queries] + [blank])
    assert Path(f"{results}_not_localized.txt").read_text().split() == [blank]
    # Retrieval went through our NetVLAD into hloc's format: one descriptor per image.
    with h5py.File(out / "global-feats-netvlad.h5", "r") as fd:
        assert fd["db/1000.jpg/global_descriptor"].shape == (32,)
    pairs = hloc_format.read_pairs(out / "pairs-query-netvlad20.txt")
    assert len(pairs) == 16 * (len(queries) + 1)  # k=20 clamped to the 16 database images
    sfm = triangulate.load_model(next(out.glob("sfm_*")), "test")
    assert sfm.num_points3D() > 300
    stats = evaluate.evaluate("aachen", results, root / "gt.txt")
    print(evaluate.format_table(stats, evaluate.THRESHOLDS["aachen"]))
    n = sum(s[0] for s in stats.values())
    tight = sum(s[0] * s[1][0] for s in stats.values())
    assert tight / n >= 0.8, stats
    evaluate.main(
        ["--benchmark", "aachen", "--results", str(results), "--gt", str(root / "gt.txt")]
    )
    assert "night" in capsys.readouterr().out


def test_aachen_given_pairs_for_night_queries(aachen_ds):
    """The paper's protocol: night queries against a given list, the others retrieved."""
    root, queries, ckpt, blank = aachen_ds
    out = root / "out"  # reuse the features, database matches and model of the end-to-end run
    import pycolmap

    dbs = sorted(
        im.name
        for im in pycolmap.Reconstruction(str(root / "ds/3D-models/aachen_v_1_1")).images.values()
    )
    night = [q.name for q in queries if q.name.startswith("query/night")] + [blank]
    given = root / "night_pairs.txt"
    given.write_text(
        f"{dbs[0]} {dbs[1]}\n" + "".join(f"{q} {d}\n" for q in night for d in dbs[:10])
    )
    results = aachen.main(aachen_args(root, ckpt, out, "--query-pairs", str(given)))
    assert results.name == "Aachen-v1.1_feats-sift_matches-NN-mutual_night_pairs+netvlad20.txt"
    check_complete(results, [q.name for q in queries] + [blank])
    pairs = hloc_format.read_pairs(out / "pairs-query-night_pairs+netvlad20.txt")
    by_query = {}
    for q, d in pairs:
        by_query.setdefault(q, []).append(d)
    assert all(by_query[q] == dbs[:10] for q in night)
    assert all(len(by_query[q.name]) == 16 for q in queries if q.name not in night)
    stats = evaluate.evaluate("aachen", results, root / "gt.txt")
    assert stats["night"][1][2] >= 0.5 and stats["day"][1][2] >= 0.5, stats
    bad = root / "bad_pairs.txt"
    bad.write_text(f"{night[0].split('/')[-1]} {dbs[0]}\n")
    with pytest.raises(ValueError, match=r"bad_pairs.txt:1: .* Did you mean"):
        aachen.main(aachen_args(root, ckpt, out, "--query-pairs", str(bad)))


def _run_and_kill(args, h5_name, n):
    """Run the Aachen pipeline until it SIGKILLs itself before the n-th dataset written into
    the HDF5 file `h5_name` (see kill_at.py): a known point, not a timing. True if it did."""
    cmd = [
        sys.executable,
        str(REPO / "tests/kill_at.py"),
        h5_name,
        str(n),
        "pipelines.aachen",
        *args,
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    proc.wait()
    try:  # what the killed process left behind (data-loader workers), by its process group
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return proc.returncode == -signal.SIGKILL


def test_aachen_resumes_after_kill(aachen_ds):
    root, queries, ckpt, blank = aachen_ds
    out = root / "out_killed"
    args = aachen_args(root, ckpt, out)
    # Kill 1: during feature extraction, before its 10th dataset: the 2nd image half written
    # (hloc's sift writes 6 per image).
    assert _run_and_kill(args, "feats-sift.h5", 10)
    assert (out / "feats-sift.h5").exists()
    # Kill 2: during the matching of the database pairs, before its 5th dataset: the 3rd
    # pair's group created, empty (2 datasets per pair).
    assert _run_and_kill(args, "feats-sift_matches-NN-mutual_pairs-db-covis20.h5", 5)
    results = aachen.main(aachen_args(root, ckpt, out))
    check_complete(results, [q.name for q in queries] + [blank])
    stats = evaluate.evaluate("aachen", results, root / "gt.txt")
    assert min(s[1][1] for s in stats.values()) >= 0.5
    # A rerun of a finished run extracts nothing and leaves the results as they were.
    feats = out / "feats-sift.h5"
    mtime, before = feats.stat().st_mtime_ns, results.read_text()
    assert aachen.main(aachen_args(root, ckpt, out)) == results
    assert results.read_text() == before and feats.stat().st_mtime_ns == mtime


def test_triangulation_with_no_matches_fails_loudly(aachen_ds):
    root, _, ckpt, _ = aachen_ds
    out = root / "out"  # reuse the features and pairs of the end-to-end run
    if not (out / "feats-sift.h5").exists():
        aachen.main(aachen_args(root, ckpt, out))
    pairs = out / "pairs-db-covis20.txt"
    empty = root / "empty_matches.h5"
    from hloc.utils.parsers import names_to_pair

    with h5py.File(out / "feats-sift.h5", "r") as ff, h5py.File(empty, "w") as fm:
        for a, b in hloc_format.read_pairs(pairs):
            n = ff[a]["keypoints"].shape[0]
            g = fm.require_group(names_to_pair(a, b))
            if "matches0" not in g:
                g.create_dataset("matches0", data=np.full(n, -1, np.int16))
                g.create_dataset("matching_scores0", data=np.zeros(n, np.float16))
    with pytest.raises(common.PipelineError, match="kept any match"):
        triangulate.triangulate_known_poses(
            root / "sfm_empty",
            root / "ds/3D-models/aachen_v_1_1",
            root / "ds/images_upright",
            pairs,
            out / "feats-sift.h5",
            empty,
        )


def inloc_args(root, ckpt, out, *extra):
    return [
        "--dataset",
        str(root / "ds"),
        "--outputs",
        str(out),
        "--features",
        "sift",
        "--netvlad-weights",
        str(ckpt),
        "--query-focal",
        "scaled",
        *extra,
    ]


def test_inloc_end_to_end(inloc_ds):
    root, queries, ckpt, blank = inloc_ds
    out = root / "out"
    results = inloc.main(inloc_args(root, ckpt, out))
    check_complete(results, [q.name for q in queries] + [blank])
    assert Path(f"{results}_not_localized.txt").read_text().split() == [blank]
    pairs = hloc_format.read_pairs(out / "pairs-query-netvlad40.txt")
    assert len(pairs) == 24 * (len(queries) + 1)  # k=40 clamped to the 24 cutouts
    stats = evaluate.evaluate("inloc", results, root / "gt.txt")
    print(evaluate.format_table(stats, evaluate.THRESHOLDS["inloc"]))
    assert set(stats) == {"DUC1", "DUC2"}
    n = sum(s[0] for s in stats.values())
    assert sum(s[0] * s[1][0] for s in stats.values()) / n >= 0.75, stats


def test_inloc_no_cutout_survives_skip_matches(inloc_ds):
    """hloc's localize_inloc crashes here; ours reports every query as not localized."""
    root, queries, ckpt, blank = inloc_ds
    out = root / "out"
    if not list(out.glob("feats-sift_matches-NN-mutual_pairs-query-netvlad40.h5")):
        inloc.main(inloc_args(root, ckpt, out))
    results = root / "skip_all.txt"
    poses, failed = inloc_localize.localize_inloc(
        root / "ds",
        out / "pairs-query-netvlad40.txt",
        out / "feats-sift.h5",
        out / "feats-sift_matches-NN-mutual_pairs-query-netvlad40.h5",
        results,
        skip_matches=10**6,
        focal="scaled",
    )
    assert len(failed) == len(queries) + 1
    back = check_complete(results, [q.name for q in queries] + [blank])
    assert all(np.allclose(q, [1, 0, 0, 0]) for q, _ in back.values())


def test_inloc_default_focal_is_hlocs(inloc_ds):
    root, _, _, _ = inloc_ds
    cam = inloc_localize.inloc_query_camera(root / "ds", "query/iphone7/IMG_0001.JPG")
    assert cam.params[0] == pytest.approx(4032 * 28 / 36)
    assert cam.params[1:] == pytest.approx([320, 240])
    cam = inloc_localize.inloc_query_camera(root / "ds", "query/iphone7/IMG_0001.JPG", "scaled")
    assert cam.params[0] == pytest.approx(640 * 28 / 36)


@pytest.mark.parametrize("preset", ["tasp_aachen", "tasp_dog"])
def test_tasp_preset_plumbing(tmp_path, preset):
    """The TaSP presets through the whole pipeline; random weights: check files, not accuracy."""
    pytest.importorskip("tasp_hloc.hloc.plugin", reason="the TaSP hloc adapter is not there yet")
    queries = ps.make_aachen(tmp_path / "ds", n_db=6, n_day=1, n_night=1)
    out = tmp_path / "out"
    args = [
        "--dataset",
        str(tmp_path / "ds"),
        "--outputs",
        str(out),
        "--features",
        preset,
        "--max-keypoints",
        "512",
        "--retrieval",
        "exhaustive",
        "--weights",
        "random",
    ]
    try:
        results = aachen.main(args)
    except common.PipelineError as e:  # random features may leave nothing to triangulate
        assert "3D points" in str(e) or "kept any match" in str(e) or "No query" in str(e)
        results = None
    feats = next(out.glob("feats-*.h5"))
    names = [f"db/{1000 + i}.jpg" for i in range(6)] + [q.name for q in queries]
    with h5py.File(feats, "r") as fd:
        for n in names:
            kp, desc = fd[n]["keypoints"][()], fd[n]["descriptors"][()]
            assert kp.shape[1] == 2 and 0 < len(kp) <= 512 and desc.shape[1] == len(kp)
            assert tuple(fd[n]["image_size"][()]) == (320, 240)
    if results is not None:
        check_complete(results, [q.name for q in queries])


def test_hpatches_script(tmp_path, capsys):
    ps.make_hpatches(tmp_path / "hp")
    report = hpatches.main(
        [
            "--dataset",
            str(tmp_path / "hp"),
            "--outputs",
            str(tmp_path / "out"),
            "--features",
            "sift",
        ]
    )
    assert report["sequences"] == 4
    mma = report["mma"]
    assert len(mma["illumination"]) == 10 and mma["illumination"][2] > 0.7
    assert mma["viewpoint"][2] > 0.5 and np.all(np.diff(mma["overall"]) >= 0)
    assert (tmp_path / "out/hpatches_mma_feats-sift_matches-NN-mutual.png").stat().st_size > 0
    saved = json.loads(
        (tmp_path / "out/hpatches_mma_feats-sift_matches-NN-mutual.json").read_text()
    )
    assert saved["mma"] == mma
    assert "MMA illumination" in capsys.readouterr().out


def test_eth_script(tmp_path):
    ps.make_eth(tmp_path / "eth")
    stats = eth.main(
        [
            "--dataset",
            str(tmp_path / "eth"),
            "--outputs",
            str(tmp_path / "out"),
            "--features",
            "sift",
        ]
    )
    assert stats["registered_images"] >= 6 and stats["points3D"] > 50
    assert stats["mean_track_length"] > 2 and stats["mean_reprojection_error"] < 1.5
    assert json.loads((tmp_path / "out/eth_stats_feats-sift.json").read_text()) == stats


def test_missing_netvlad_weights_fail_before_any_work(aachen_ds, tmp_path):
    root, _, _, _ = aachen_ds
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.aachen",
            "--dataset",
            str(root / "ds"),
            "--outputs",
            str(out),
            "--features",
            "sift",
            "--netvlad-weights",
            str(tmp_path / "missing.mat"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "missing.mat" in proc.stderr and "--netvlad-weights" in proc.stderr
    assert "Traceback" not in proc.stderr and not list(out.glob("*.h5"))


def _copy_with_float64_keypoints(src: Path, dst: Path):
    """The features of `src` with keypoints stored as TaSP's hloc extractor stores them."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(src, "r") as fi, h5py.File(dst, "w") as fo:
        for name in hloc_format.list_h5_names(src):
            fi.copy(fi[name], fo.require_group(str(Path(name).parent)), Path(name).name)
            kp = fo[name]["keypoints"]
            attrs, data = dict(kp.attrs), kp[()].astype(np.float64)
            del fo[name]["keypoints"]
            fo[name].create_dataset("keypoints", data=data).attrs.update(attrs)


@pytest.mark.parametrize("benchmark", ["aachen", "inloc"])
def test_float64_keypoints_through_triangulation_and_localization(benchmark, aachen_ds, inloc_ds):
    """TaSP's hloc extractor stores keypoints as float64 (hloc's as_half leaves them at full
    precision): hloc's matching, triangulation and localize_sfm / our InLoc localization read
    them and give the float16 run's poses, from the same keypoint values."""
    root, queries, ckpt, blank = aachen_ds if benchmark == "aachen" else inloc_ds
    module, make_args = (aachen, aachen_args) if benchmark == "aachen" else (inloc, inloc_args)
    ref = module.main(make_args(root, ckpt, root / "out"))  # reused from the end-to-end run
    out64 = root / "out_float64"
    _copy_with_float64_keypoints(root / "out/feats-sift.h5", out64 / "feats-sift.h5")
    results = module.main(make_args(root, ckpt, out64))
    with h5py.File(out64 / "feats-sift.h5", "r") as fd:
        assert fd[f"{queries[0].name}/keypoints"].dtype == np.float64
    a, b = results_files.read_results(ref), results_files.read_results(results)
    assert set(a) == set(b)
    from pipelines.poses import pose_error

    for name in a:  # the same keypoint values; multi-threaded RANSAC and BA leave tiny noise
        dt, dr = pose_error(b[name], a[name])
        assert dt < 0.01 and dr < 0.05, (name, dt, dr)
    if benchmark == "aachen":
        m16 = triangulate.load_model(next((root / "out").glob("sfm_*")), "float16")
        m64 = triangulate.load_model(next(out64.glob("sfm_*")), "float64")
        assert m16.num_points3D() == m64.num_points3D()
