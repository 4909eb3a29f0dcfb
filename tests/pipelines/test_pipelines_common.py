"""Pipeline pieces that need no hloc: results files, pose errors, recall, NetVLAD, layouts, errors."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parents[1]))
from pipelines import (  # noqa: E402
    common,
    evaluate,
    h5_repair,
    hpatches,
    netvlad,
    retrieval,
    triangulate,
)
from pipelines import poses as pose_math  # noqa: E402
from pipelines import results as results_files  # noqa: E402
from pipelines.aachen import check_layout  # noqa: E402
from pipelines.inloc import dataset_images as list_images  # noqa: E402
from tasp_hloc.io import (
    h5_superblock,  # noqa: E402
    hloc_format,  # noqa: E402
)

import conftest  # noqa: E402
import pipeline_scenes as ps  # noqa: E402


def _rand_pose(rng):
    q = rng.normal(size=4)
    return q / np.linalg.norm(q), rng.normal(size=3)


# --------------------------------------------------------------------------- results files


def test_results_roundtrip_names_and_sign(tmp_path):
    rng = np.random.default_rng(0)
    poses = {
        "query/day/nexus5x/IMG_1.jpg": _rand_pose(rng),
        "query/night/milestone/IMG_2.jpg": _rand_pose(rng),
    }
    poses["query/day/nexus5x/IMG_1.jpg"] = (
        -np.abs(poses["query/day/nexus5x/IMG_1.jpg"][0]),
        poses["query/day/nexus5x/IMG_1.jpg"][1],
    )
    out = tmp_path / "r.txt"
    results_files.write_results(poses, out)
    back = results_files.read_results(out)
    assert set(back) == {"IMG_1.jpg", "IMG_2.jpg"}  # visuallocalization.net: file names only
    for name, (q, t) in poses.items():
        qb, tb = back[name.split("/")[-1]]
        assert qb[0] >= 0 and np.allclose(np.abs(qb @ q), 1, atol=1e-8)
        assert np.allclose(tb, t, atol=1e-8)
        assert pose_math.pose_error((qb, tb), (q, t))[0] < 1e-7
    lines = out.read_text().splitlines()
    assert all(len(line.split()) == 8 for line in lines)
    results_files.write_results(poses, out, prepend_camera_name=True)
    assert "nexus5x/IMG_1.jpg" in results_files.read_results(out)


@pytest.mark.parametrize(
    "text,msg",
    [
        ("a.jpg 1 0 0 0 1 2\n", "expected"),
        ("a.jpg 1 0 0 x 1 2 3\n", "non-numeric"),
        ("a.jpg 2 0 0 0 1 2 3\n", "unit-norm"),
        ("a.jpg 1 0 0 0 1 2 nan\n", "non-finite"),
        ("a.jpg 1 0 0 0 1 2 3\na.jpg 1 0 0 0 1 2 3\n", "duplicate"),
    ],
)
def test_read_results_errors_name_file_and_line(tmp_path, text, msg):
    f = tmp_path / "bad.txt"
    f.write_text(text)
    with pytest.raises(ValueError, match=msg) as e:
        results_files.read_results(f)
    assert "bad.txt:" in str(e.value)


def test_write_results_rejects_collisions_and_nan(tmp_path):
    p = (np.array([1.0, 0, 0, 0]), np.zeros(3))
    with pytest.raises(ValueError, match="same results name"):
        results_files.write_results({"a/x.jpg": p, "b/x.jpg": p}, tmp_path / "r.txt")
    with pytest.raises(ValueError, match="not finite"):
        results_files.write_results({"x.jpg": (p[0], np.array([0, np.nan, 0]))}, tmp_path / "r.txt")
    with pytest.raises(FileNotFoundError):
        results_files.read_results(tmp_path / "missing.txt")


def test_pose_error_known_values():
    R = ps.look_R(0.3, 0.1)
    c = np.array([1.0, 2.0, 3.0])
    gt = (pose_math.R_to_qvec(R), -R @ c)
    dR = ps.look_R(0.0, 0.0) @ np.linalg.inv(ps.look_R(np.deg2rad(7), 0.0))  # 7 deg yaw
    R2 = dR @ R
    est = (pose_math.R_to_qvec(R2), -R2 @ (c + [0.3, 0.4, 0]))
    dt, dr = pose_math.pose_error(est, gt)
    assert dt == pytest.approx(0.5) and dr == pytest.approx(7.0, abs=1e-6)
    assert np.allclose(pose_math.qvec_to_R(pose_math.R_to_qvec(R)), R)


def test_complete_results_fills_every_query():
    poses = {"a": (np.array([1.0, 0, 0, 0]), np.ones(3))}
    fb = {"c": (np.array([0, 1.0, 0, 0]), np.zeros(3))}
    missing = results_files.complete_results(poses, ["a", "b", "c"], fb)
    assert missing == ["b", "c"] and set(poses) == {"a", "b", "c"}
    assert np.allclose(poses["b"][0], [1, 0, 0, 0]) and np.allclose(poses["c"][0], [0, 1, 0, 0])


# The submission files of visuallocalization.net: one line per query, `name qw qx qy qz tx ty tz`
# (the file name as in the query list without its folders; the rotation as a unit quaternion and
# the translation of the world-to-camera pose), fields separated by single spaces.
SUBMISSION_LINE = re.compile(r"^(?P<name>[^ /]+)(?: -?\d+\.\d{10}){7}$")
SUBMISSIONS = {
    "aachen_v1.1": [
        "query/day/nexus5x/IMG_20161227_160713.jpg",
        "query/night/nexus5x/IMG_20161227_172616.jpg",
        "query/day/milestone/2010-10-30_17-47-25_73.jpg",
        "query/night/nexus5x_additional_night/IMG_20170702_003514.jpg",
    ],
    "inloc": [
        "query/iphone7/IMG_0731.JPG",
        "query/iphone7/IMG_0732.JPG",
        "query/iphone7/IMG_1001.JPG",
    ],
}


@pytest.mark.parametrize("benchmark", sorted(SUBMISSIONS))
def test_submission_file_as_visuallocalization_expects(benchmark, tmp_path):
    rng = np.random.default_rng(2)
    names = SUBMISSIONS[benchmark]
    poses = {n: (rng.normal(size=4), rng.normal(size=3) * 100) for n in reversed(names)}
    poses[names[0]] = (np.array([-0.5, 0.5, -0.5, 0.5]), np.array([1e-12, -0.0, 250.0]))
    out = tmp_path / "submission.txt"
    results_files.write_results(poses, out, order=names)
    text = out.read_text()
    assert text.endswith("\n") and "\r" not in text and "\t" not in text
    lines = text.splitlines()
    assert [SUBMISSION_LINE.match(l)["name"] for l in lines] == [n.split("/")[-1] for n in names]
    first = lines[0].split(" ")
    assert first[1:] == [
        "0.5000000000",
        "-0.5000000000",
        "0.5000000000",
        "-0.5000000000",
        "0.0000000000",
        "0.0000000000",
        "250.0000000000",
    ]  # qw >= 0, no "-0"
    back = results_files.read_results(out)
    assert list(back) == [n.split("/")[-1] for n in names]
    for name in names[1:]:
        q, t = poses[name]
        qb, tb = back[name.split("/")[-1]]
        assert qb[0] >= 0 and np.allclose(qb, q / np.linalg.norm(q) * np.sign(q[0]), atol=1e-9)
        assert np.allclose(tb, t, atol=1e-9)
    with pytest.raises(ValueError, match="No pose for 1 queries"):
        results_files.write_results(poses, out, order=names + ["query/day/x/missing.jpg"])


# --------------------------------------------------------------------------- given query pairs


def _names():
    queries = [
        "query/day/nexus5x/IMG_1.jpg",
        "query/night/nexus5x/IMG_2.jpg",
        "query/night/nexus5x/IMG_3.jpg",
    ]
    dbs = ["db/1.jpg", "db/2.jpg", "db/3.jpg", "sequences/s1/0001.png"]
    return queries, dbs


def test_given_pairs_either_order_and_database_pairs_skipped(tmp_path):
    queries, dbs = _names()
    f = tmp_path / "image_pairs_to_match_v1_1.txt"
    f.write_text(
        "db/1.jpg db/2.jpg\nsequences/s1/0001.png db/3.jpg\n# comment\n\n"
        "query/night/nexus5x/IMG_2.jpg db/3.jpg\n"
        "db/1.jpg query/night/nexus5x/IMG_2.jpg\n"
        "query/night/nexus5x/IMG_2.jpg db/3.jpg\n"
        "query/night/nexus5x/IMG_3.jpg sequences/s1/0001.png\n"
    )
    given = retrieval.read_given_pairs([f], queries, dbs)
    assert given == {
        "query/night/nexus5x/IMG_2.jpg": ["db/3.jpg", "db/1.jpg"],
        "query/night/nexus5x/IMG_3.jpg": ["sequences/s1/0001.png"],
    }


@pytest.mark.parametrize(
    "line,msg",
    [
        (
            "IMG_2.jpg db/1.jpg",
            r"pairs.txt:2: 'IMG_2.jpg' is neither a query.*Did you mean "
            r"'query/night/nexus5x/IMG_2.jpg'",
        ),
        ("query/night/nexus5x/IMG_2.jpg db/99.jpg", r"pairs.txt:2: 'db/99.jpg' is neither"),
        ("query/night/nexus5x/IMG_2.jpg query/night/nexus5x/IMG_3.jpg", "two query images"),
        ("query/night/nexus5x/IMG_2.jpg", "expected `query_name database_name`"),
    ],
)
def test_given_pairs_errors_name_file_line_and_fix(tmp_path, line, msg):
    queries, dbs = _names()
    f = tmp_path / "pairs.txt"
    f.write_text(f"db/1.jpg db/2.jpg\n{line}\n")
    with pytest.raises(ValueError, match=msg):
        retrieval.read_given_pairs([f], queries, dbs)
    f.write_text("db/1.jpg db/2.jpg\n")
    with pytest.raises(ValueError, match="no line pairs a query"):
        retrieval.read_given_pairs([f], queries, dbs)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        retrieval.read_given_pairs([tmp_path / "nope.txt"], queries, dbs)


def test_given_pairs_for_some_queries_retrieval_for_the_rest(tmp_path):
    import argparse

    queries, dbs = _names()
    f = tmp_path / "night.txt"
    f.write_text("query/night/nexus5x/IMG_2.jpg db/3.jpg\nquery/night/nexus5x/IMG_3.jpg db/1.jpg\n")
    args = argparse.Namespace(
        query_pairs=[f], retrieval="exhaustive", num_loc=20, results=None, netvlad_weights=None
    )
    given = retrieval.read_given_pairs(args.query_pairs, queries, dbs)
    out = tmp_path / "out"
    out.mkdir()
    loc_pairs, results = retrieval.localization_paths(args, out, "feats_NN", "Aachen-v1.1")
    assert loc_pairs.name == "pairs-query-night+exhaustive.txt"
    assert results.name == "Aachen-v1.1_feats_NN_night+exhaustive.txt"
    retrieval.query_pairs(args, tmp_path, out, loc_pairs, queries, dbs, given)
    pairs = hloc_format.read_pairs(loc_pairs)
    assert pairs == [(queries[0], d) for d in dbs] + [
        ("query/night/nexus5x/IMG_2.jpg", "db/3.jpg"),
        ("query/night/nexus5x/IMG_3.jpg", "db/1.jpg"),
    ]
    rest = out / "pairs-query-exhaustive-rest-of-night+exhaustive.txt"
    assert {q for q, _ in hloc_format.read_pairs(rest)} == {queries[0]}
    # All queries given: no retrieval at all (and no NetVLAD weights needed).
    args.retrieval = "netvlad"
    all_given = {q: ["db/2.jpg"] for q in queries}
    loc_all, res_all = retrieval.localization_paths(
        args, out, "feats_NN", "InLoc", retrieval_needed=False
    )
    assert loc_all.name == "pairs-query-night.txt" and res_all.name == "InLoc_feats_NN_night.txt"
    retrieval.query_pairs(args, tmp_path, out, loc_all, queries, dbs, all_given)
    assert hloc_format.read_pairs(loc_all) == [(q, "db/2.jpg") for q in queries]


# --------------------------------------------------------------------------- evaluation


def _gt_and_results(tmp_path):
    rng = np.random.default_rng(1)
    gt, res = {}, {}
    lines = []
    for i, cond in enumerate(["day"] * 4 + ["night"] * 2):
        name = f"IMG_{i}.jpg"
        R = ps.look_R(rng.uniform(-3, 3), 0.1)
        c = rng.normal(size=3)
        gt[name] = (pose_math.R_to_qvec(R), -R @ c)
        lines.append(" ".join([name, *map(str, gt[name][0]), *map(str, gt[name][1]), cond]))
        # errors: day 0.1 m, 0.3 m, 2 m, missing; night 0.1 m, 20 m
        off = {0: 0.1, 1: 0.3, 2: 2.0, 4: 0.1, 5: 20.0}.get(i)
        if off is not None:
            res[name] = (gt[name][0], -R @ (c + [off, 0, 0]))
    (tmp_path / "gt.txt").write_text("\n".join(lines) + "\n")
    results_files.write_results(res, tmp_path / "res.txt")
    return tmp_path / "gt.txt", tmp_path / "res.txt"


def test_recall_aachen_thresholds_and_missing_queries(tmp_path, capsys):
    gt, res = _gt_and_results(tmp_path)
    stats = evaluate.evaluate("aachen", res, gt)
    assert stats["day"][0] == 4 and stats["night"][0] == 2
    assert stats["day"][1] == pytest.approx([0.25, 0.5, 0.75])  # missing query counts as failure
    assert stats["night"][1] == pytest.approx([0.5, 0.5, 0.5])
    evaluate.main(["--benchmark", "aachen", "--results", str(res), "--gt", str(gt)])
    out = capsys.readouterr().out
    assert "(0.25m, 2.0°) / (0.5m, 5.0°) / (5.0m, 10.0°)" in out
    assert "day" in out and "25.0 / 50.0 / 75.0" in out


def test_recall_inloc_thresholds(tmp_path):
    gt, res = _gt_and_results(tmp_path)
    stats = evaluate.evaluate("inloc", res, gt)
    assert stats["day"][1] == pytest.approx([0.25, 0.5, 0.5])
    assert evaluate.THRESHOLDS["inloc"] == [(0.25, 10.0), (0.5, 10.0), (1.0, 10.0)]


def test_aachen_conditions_from_query_lists(tmp_path):
    gt, res = _gt_and_results(tmp_path)
    # Ground truth without the condition column: the split comes from the dataset's lists.
    lines = [" ".join(line.split()[:8]) for line in gt.read_text().splitlines()]
    gt.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="--dataset"):
        evaluate.evaluate("aachen", res, gt)
    q = tmp_path / "ds/queries"
    q.mkdir(parents=True)
    (q / "day_time_queries_with_intrinsics.txt").write_text(
        "".join(
            f"query/day/nexus5x/IMG_{i}.jpg SIMPLE_RADIAL 320 240 200 160 120 0\n" for i in range(4)
        )
    )
    (q / "night_time_queries_with_intrinsics.txt").write_text(
        "".join(
            f"query/night/nexus5x/IMG_{i}.jpg SIMPLE_RADIAL 320 240 200 160 120 0\n" for i in (4, 5)
        )
    )
    stats = evaluate.evaluate("aachen", res, gt, tmp_path / "ds")
    assert stats["night"][1] == pytest.approx([0.5, 0.5, 0.5])


def test_evaluate_rejects_foreign_names(tmp_path):
    gt, _ = _gt_and_results(tmp_path)
    results_files.write_results(
        {"query/day/x/other.jpg": (np.array([1.0, 0, 0, 0]), np.zeros(3))}, tmp_path / "r.txt"
    )
    with pytest.raises(ValueError, match="file names only"):
        evaluate.evaluate("inloc", tmp_path / "r.txt", gt)


# --------------------------------------------------------------------------- NetVLAD


def _naive_netvlad(net, image):
    """hloc's formulation: explicit B x D x K x N residuals."""
    x = image * 255.0 - net.mean
    x = F.normalize(net.backbone(x).flatten(2), dim=1)
    a = torch.softmax(F.conv1d(x, net.score_w[:, :, None]), dim=1)
    diff = x.unsqueeze(2) - net.centers[None, :, :, None]
    d = (a.unsqueeze(1) * diff).sum(-1)
    d = F.normalize(F.normalize(d, dim=1).reshape(len(d), -1), dim=1)
    return F.normalize(net.whiten(d), dim=1)


def test_netvlad_random_checkpoint_matches_reference(tmp_path):
    ckpt = netvlad.make_random_checkpoint(tmp_path / "nv.mat", K=6, dim_out=24)
    net = netvlad.load_checkpoint(ckpt)
    img = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        d = net(img)
        ref = _naive_netvlad(net, img)
    assert d.shape == (2, 24)
    assert torch.allclose(d.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(d, ref, atol=1e-5)
    # hloc's conversion: centres stored negated, mean from averageImage[0, 0].
    from scipy.io import loadmat

    mat = loadmat(str(ckpt), struct_as_record=False, squeeze_me=True)
    assert torch.allclose(net.centers, -torch.tensor(mat["net"].layers[30].weights[1]).float())
    assert np.allclose(net.mean.flatten().numpy(), mat["net"].meta.normalization.averageImage[0, 0])


def test_netvlad_full_vgg_layout_loads(tmp_path):
    widths = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
    ckpt = netvlad.make_random_checkpoint(tmp_path / "nv.mat", widths=widths, K=64, dim_out=16)
    net = netvlad.load_checkpoint(ckpt)
    convs = [m for m in net.backbone if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13 and convs[-1].out_channels == 512
    assert not isinstance(net.backbone[-1], torch.nn.ReLU)  # conv5_3 before its ReLU
    assert net.whiten.in_features == 512 * 64


def test_netvlad_missing_and_invalid_weights(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        netvlad.extract(tmp_path, tmp_path / "out", ["a.jpg"], tmp_path / "nope.mat")
    msg = str(e.value)
    assert "nope.mat" in msg and "--netvlad-weights" in msg and netvlad.CHECKPOINT_URL in msg
    from scipy.io import savemat

    savemat(str(tmp_path / "bad.mat"), {"foo": np.zeros(3)})
    with pytest.raises(ValueError, match="not a NetVLAD checkpoint"):
        netvlad.load_checkpoint(tmp_path / "bad.mat")
    assert netvlad.default_checkpoint().name == "VGG16-NetVLAD-Pitts30K.mat"


# --------------------------------------------------------------------------- layouts & errors


def test_generated_layouts_pass_checks(tmp_path):
    ps.make_aachen(tmp_path / "a", n_db=6, n_day=1, n_night=1)
    lists = check_layout(tmp_path / "a")
    assert [p.name for p in lists] == [
        "day_time_queries_with_intrinsics.txt",
        "night_time_queries_with_intrinsics.txt",
    ]
    import pycolmap

    rec = pycolmap.Reconstruction(str(tmp_path / "a/3D-models/aachen_v_1_1"))
    assert rec.num_images() == 6 and rec.num_points3D() > 100
    ps.make_inloc(
        tmp_path / "i", scans_per_floor=1, yaws=2, n_queries_per_floor=1, qsize=(160, 120)
    )
    queries, cutouts = list_images(tmp_path / "i")
    assert queries == ["query/iphone7/IMG_0001.JPG", "query/iphone7/IMG_0002.JPG"]
    assert len(cutouts) == 4 and all(c.startswith("database/cutouts/DUC") for c in cutouts)


def test_inloc_xyzcut_and_alignment_consistent(tmp_path):
    """XYZcut (scan frame) mapped by the alignment re-projects to its own pixel."""
    from scipy.io import loadmat

    ps.make_inloc(tmp_path, scans_per_floor=1, yaws=1, n_queries_per_floor=0)
    name = sorted(tmp_path.glob("database/cutouts/DUC1/*/*.jpg"))[0]
    xyz = loadmat(str(name) + ".mat")["XYZcut"]
    lines = (tmp_path / "database/alignments/DUC1/transformations").glob("*.txt")
    raw = next(lines).read_text().splitlines()
    T = np.array([np.fromstring(raw[i], sep=" ") for i in range(7, 11)])  # what hloc reads
    world = xyz.reshape(-1, 3) @ T[:3, :3].T + T[:3, 3]
    H, W = xyz.shape[:2]
    ok = np.isfinite(world).all(1)
    assert (~ok).sum() > 0  # holes exist, like real scans
    # The cutout (yaw 0, f 180) sees every pixel's point along its ray from one centre.
    v, u = np.mgrid[:H, :W]
    rays = np.stack(
        [(u + 0.5 - W / 2) / 180.0, (v + 0.5 - H / 2) / 180.0, np.ones_like(u, float)], -1
    ).reshape(-1, 3) @ ps.look_R(0.0, 0.0)
    # All rays meet at one centre: solve least squares for c with world = c + s * ray.
    r = rays[ok] / np.linalg.norm(rays[ok], axis=1, keepdims=True)
    P = np.eye(3)[None] - r[:, :, None] * r[:, None, :]
    c = np.linalg.solve(P.sum(0), np.einsum("nij,nj->i", P, world[ok]))
    resid = np.linalg.norm(np.einsum("nij,nj->ni", P, world[ok] - c), axis=1)
    assert resid.max() < 1e-6


def test_layout_errors_name_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="images_upright"):
        check_layout(tmp_path)
    with pytest.raises(FileNotFoundError, match="query/iphone7"):
        list_images(tmp_path)
    ps.make_inloc(
        tmp_path / "i", scans_per_floor=1, yaws=1, n_queries_per_floor=1, qsize=(160, 120)
    )
    next((tmp_path / "i").glob("database/cutouts/*/*/*.jpg.mat")).unlink()
    with pytest.raises(FileNotFoundError, match="XYZcut"):
        list_images(tmp_path / "i")


def test_empty_model_fails_loudly(tmp_path):
    import pycolmap

    rec = pycolmap.Reconstruction()
    cam = pycolmap.Camera(
        model="SIMPLE_PINHOLE", width=10, height=10, params=[5, 5, 5], camera_id=1
    )
    rec.add_camera_with_trivial_rig(cam)
    rec.add_image_with_trivial_frame(
        pycolmap.Image(name="a.jpg", camera_id=1, image_id=1), pycolmap.Rigid3d()
    )
    rec.write_binary(str(tmp_path))
    with pytest.raises(common.PipelineError, match="0 3D points"):
        triangulate.load_model(tmp_path, "triangulation")
    with pytest.raises(common.PipelineError, match="no COLMAP model"):
        triangulate.load_model(tmp_path / "nothing", "x")


def test_fix_two_view_geometries_sets_calibrated(tmp_path):
    import pycolmap

    db_path = tmp_path / "db.db"
    with pycolmap.Database.open(str(db_path)) as db:
        cam = pycolmap.Camera(model="SIMPLE_PINHOLE", width=10, height=10, params=[5, 5, 5])
        cid = db.write_camera(cam)
        ids = [db.write_image(pycolmap.Image(name=f"{i}.jpg", camera_id=cid)) for i in range(3)]
        m = np.array([[0, 1], [2, 3]], np.uint32)
        db.write_two_view_geometry(ids[0], ids[1], pycolmap.TwoViewGeometry(inlier_matches=m))
        db.write_two_view_geometry(ids[0], ids[2], pycolmap.TwoViewGeometry())  # no inliers
    assert triangulate.fix_two_view_geometries(db_path) == 1
    with pycolmap.Database.open(str(db_path)) as db:
        g = db.read_two_view_geometry(ids[0], ids[1])
        assert g.config == pycolmap.TwoViewGeometryConfiguration.CALIBRATED
        assert len(g.inlier_matches) == 2
        g2 = db.read_two_view_geometry(ids[0], ids[2])
        assert g2.config == pycolmap.TwoViewGeometryConfiguration.UNDEFINED


def test_hpatches_correct_fraction_and_summary():
    rng = np.random.default_rng(0)
    kp0 = rng.uniform(0, 200, (50, 2))
    H = np.array([[1.1, 0.05, 3], [-0.02, 0.95, -4], [1e-4, 0, 1]])
    p = np.c_[kp0, np.ones(50)] @ H.T
    kp1 = p[:, :2] / p[:, 2:]
    kp1[:10] += [2.5, 0]  # 10 matches off by 2.5 px
    m = np.stack([np.arange(50), np.arange(50)], 1)
    frac = hpatches.correct_fraction(kp0, kp1, m, H)
    assert frac[0] == pytest.approx(0.8) and frac[1] == pytest.approx(0.8)
    assert frac[2] == pytest.approx(1.0)
    assert np.all(hpatches.correct_fraction(kp0, kp1, m[:0], H) == 0)
    s = hpatches.summarize({"i_a/2": np.ones(10), "v_b/2": np.zeros(10)})
    assert s["illumination"][0] == 1 and s["viewpoint"][0] == 0 and s["overall"][0] == 0.5


def test_hpatches_layout_check(tmp_path):
    ps.make_hpatches(tmp_path, n_seq=(1, 1), size=(64, 48))
    assert hpatches.list_sequences(tmp_path) == ["i_synth0", "v_synth0"]
    assert hpatches.list_sequences(tmp_path, ["v_synth0"]) == ["i_synth0"]
    (tmp_path / "v_synth0/H_1_4").unlink()
    with pytest.raises(FileNotFoundError, match="v_synth0"):
        hpatches.list_sequences(tmp_path)


def test_clis_without_hloc_say_how_to_install(tmp_path):
    """With hloc unimportable, the pipelines stop with the install hint, not a traceback soup."""
    code = (
        "import sys; sys.modules['hloc'] = None\n"
        "from pipelines import aachen\n"
        "try:\n    aachen.main(['--dataset', 'x', '--outputs', 'y'])\n"
        "except ImportError as e:\n    print('MSG', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "MSG hloc is not installed" in out.stdout and "Hierarchical-Localization" in out.stdout


def test_h5_left_by_killed_writer_is_repaired(tmp_path):
    """hloc's h5 files (libver latest) stay unopenable after a kill; repair_h5 resumes them."""
    import h5py

    f = tmp_path / "feats.h5"
    code = (
        "import h5py, numpy as np, os, sys\n"
        "fd = h5py.File(sys.argv[1], 'a', libver='latest')\n"
        "for i in range(3):\n"
        "    g = fd.create_group(f'db/{i}.jpg')\n"
        "    for k in ('keypoints', 'descriptors', 'image_size'):\n"
        "        g.create_dataset(k, data=np.zeros(3))\n"
        "fd.create_group('db/3.jpg').create_dataset('keypoints', data=np.zeros(3))\n"
        "fd.flush()\n"
        "os._exit(0)  # die like a killed process: no close\n"
    )
    subprocess.run([sys.executable, "-c", code, str(f)], check=True, timeout=60)
    with pytest.raises(OSError, match="consistency flags"):
        h5py.File(str(f), "r")
    h5_repair.repair_h5(f, h5_repair.FEATURE_KEYS)
    with h5py.File(str(f), "r") as fd:
        assert sorted(fd["db"].keys()) == ["0.jpg", "1.jpg", "2.jpg"]  # partial group dropped
    assert (
        h5_superblock.lookup3(b"Four score and seven years ago") == 0x17770551
    )  # lookup3 test vector
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    h5_repair.repair_h5(tmp_path / "junk.h5", h5_repair.FEATURE_KEYS)
    assert not (tmp_path / "junk.h5").exists() and (tmp_path / "junk.h5.corrupt").exists()


@pytest.mark.skipif(not conftest.HAS_HLOC, reason="hloc is not installed (not on PyPI)")
def test_feature_scales_and_the_tasp_matcher_preset():
    from pipelines import hloc_steps

    conf = hloc_steps.feature_conf("tasp_inloc", scales=[1, 0.71, 0.5])
    assert conf["model"]["scales"] == [1.0, 0.71, 0.5]
    assert conf["output"] == "feats-tasp_inloc-n4096-r1600-s1-0.71-0.5"  # its own file
    with pytest.raises(ValueError, match="TaSP option"):
        hloc_steps.feature_conf("sift", scales=[1, 0.5])
    nn = hloc_steps.matcher_conf("NN-tasp")["model"]
    assert nn == {"name": "nearest_neighbor", "do_mutual_check": True, "distance_threshold": 0.6}
