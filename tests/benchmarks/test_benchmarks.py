"""Tests of the benchmark harness (benchmarks/): metrics on hand-checked synthetic inputs.

No peer package and no /work/shared data are needed: peer tests skip with a reason, and the
end-to-end test fabricates its own small data tree.
"""

import importlib.util
import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmarks import compare, datasets
from benchmarks.features import MethodUnavailable, load_method, resize_max_side
from benchmarks.metrics import (
    estimate_relative_pose,
    estimate_relative_pose_lo,
    homography_match_errors,
    mean_matching_accuracy,
    mutual_nn_match,
    pose_auc,
    relative_pose_error,
    scale_homography,
    scale_intrinsics,
    symmetric_epipolar_distance,
)
from pipelines.match_metrics import apply_homography as warp_points
from tasp_hloc.labels.peers import deform_conv2d

from harness_data import fabricate_data, rotation, texture, two_view_scene


# ----------------------------------------------------------------------------- matching / MMA
def test_mutual_nn_match_keeps_only_mutual_pairs():
    d0 = np.array([[1, 0, 0], [0, 1, 0], [0.9, 0.1, 0]], np.float32)
    d1 = np.array([[0, 2, 0], [1, 0, 0]], np.float32)  # scale must not matter
    matches, sims = mutual_nn_match(d0, d1)
    # 0 <-> 1 and 1 <-> 0 are mutual; 2's nearest is 1, but 1 prefers 0.
    assert matches.tolist() == [[0, 1], [1, 0]]
    np.testing.assert_allclose(sims, [1, 1], atol=1e-6)
    empty, _ = mutual_nn_match(d0, np.zeros((0, 3), np.float32))
    assert empty.shape == (0, 2)


def test_mma_of_known_matches_under_known_homography():
    H = np.array([[0.9, 0.1, 20], [-0.05, 1.1, 5], [1e-4, 2e-4, 1]])
    rng = np.random.default_rng(0)
    kp0 = rng.uniform(0, 500, (5, 2))
    offsets = np.array([0.5, 2.0, 4.0, 8.0, 20.0])  # one match in each error bin
    direction = rng.normal(size=(5, 2))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    kp1 = warp_points(H, kp0) + offsets[:, None] * direction
    matches = np.stack([np.arange(5), np.arange(5)], 1)
    errors = homography_match_errors(kp0, kp1, matches, H)
    np.testing.assert_allclose(errors, offsets, atol=1e-9)
    mma = mean_matching_accuracy(errors, (1, 3, 5, 10))
    assert mma == {1: 0.2, 3: 0.4, 5: 0.6, 10: 0.8}
    assert mean_matching_accuracy(np.zeros(0)) == {1: 0.0, 3: 0.0, 5: 0.0, 10: 0.0}


def test_scale_homography_and_intrinsics_use_pixel_centres():
    # Halving an image: pixel centre 0 and 1 of the original land at 0.25 - 0.5 = -0.25 and 0.25.
    H = np.eye(3)
    Hs = scale_homography(H, (0.5, 0.5), (1.0, 1.0))  # resized image 0 -> original image 1
    np.testing.assert_allclose(
        warp_points(Hs, np.array([[-0.25, -0.25], [0.25, 0.25]])), [[0, 0], [1, 1]], atol=1e-12
    )
    K = np.array([[500.0, 0, 319.5], [0, 500, 239.5], [0, 0, 1]])
    X = np.array([0.3, -0.2, 2.0])
    u = (K @ X)[:2] / X[2]
    s = (0.25, 0.5)
    Ks = scale_intrinsics(K, s)
    us = (Ks @ X)[:2] / X[2]
    np.testing.assert_allclose(us, (u + 0.5) * np.array(s) - 0.5, atol=1e-12)
    np.testing.assert_allclose(Ks[:2, 2], [(319.5 + 0.5) * 0.25 - 0.5, (239.5 + 0.5) * 0.5 - 0.5])


# ----------------------------------------------------------------------------- pose
def test_pose_auc_of_known_errors():
    # SuperGlue's trapezoid: points (0, 0), (e_i, i/n), flat after the last error below t.
    assert pose_auc([5.0], (10,))[10] == pytest.approx(0.75)
    assert pose_auc([2.0, 20.0], (10,))[10] == pytest.approx(0.45)
    assert pose_auc([1.0, 2.0, 3.0, 4.0], (5,))[5] == pytest.approx(0.6)
    assert pose_auc([0.0, 0.0], (5, 10, 20)) == {5: 1.0, 10: 1.0, 20: 1.0}
    assert pose_auc([np.inf, np.inf], (5,))[5] == 0.0
    assert pose_auc([30.0], (5, 10, 20)) == {5: 0.0, 10: 0.0, 20: 0.0}


def test_pose_error_of_ground_truth_is_zero_and_sign_free():
    K0, K1, T, _, _ = two_view_scene()
    assert relative_pose_error(T, T[:3, :3], T[:3, 3]) == pytest.approx((0.0, 0.0), abs=1e-5)
    # E fixes t up to sign and scale: -3 t is as good as t.
    assert relative_pose_error(T, T[:3, :3], -3 * T[:3, 3]) == pytest.approx((0, 0), abs=1e-5)
    R_off = rotation([0, 0, 1], 10) @ T[:3, :3]
    assert relative_pose_error(T, R_off, T[:3, 3])[0] == pytest.approx(10.0, abs=1e-6)


def test_essential_matrix_from_perfect_matches_recovers_the_pose():
    K0, K1, T, k0, k1 = two_view_scene()
    R, t, inliers = estimate_relative_pose(k0, k1, K0, K1, threshold_px=1.0)
    err_R, err_t = relative_pose_error(T, R, t)
    assert err_R < 0.01 and err_t < 0.01
    assert inliers.mean() > 0.95
    epi = symmetric_epipolar_distance(k0, k1, K0, K1, T)
    assert epi.max() < 1e-12
    assert estimate_relative_pose(k0[:4], k1[:4], K0, K1) is None  # too few matches


def test_lo_ransac_recovers_the_pose_from_noisy_matches_with_outliers():
    pytest.importorskip("pycolmap")
    K0, K1, T, k0, k1 = two_view_scene(n=300)
    rng = np.random.default_rng(1)
    k1 = k1 + rng.normal(0, 0.5, k1.shape)  # half-pixel noise on every true match
    outliers = rng.uniform([0, 0], [640, 480], (100, 2))  # and 25 % wrong matches
    k0_all, k1_all = (
        np.vstack([k0, rng.uniform([0, 0], [640, 480], (100, 2))]),
        np.vstack([k1, outliers]),
    )
    R, t, inliers = estimate_relative_pose_lo(k0_all, k1_all, K0, K1, threshold_px=1.0)
    err_R, err_t = relative_pose_error(T, R, t)  # X1 = R X0 + t, as T_0to1
    assert err_R < 0.2 and err_t < 1.0
    assert inliers[:300].mean() > 0.85 and inliers[300:].mean() < 0.05
    again = estimate_relative_pose_lo(k0_all, k1_all, K0, K1, threshold_px=1.0)
    np.testing.assert_array_equal(again[2], inliers)  # the seed fixes the sampling
    assert estimate_relative_pose_lo(k0[:4], k1[:4], K0, K1) is None


# ----------------------------------------------------------------------------- deformable conv
def _shift_x(x, d):
    """x[..., j] -> x[..., j + d] with zeros past the border (d > 0)."""
    out = torch.zeros_like(x)
    out[..., :-d] = x[..., d:]
    return out


def test_deform_conv2d_matches_conv2d_for_zero_and_integer_offsets():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 9, 11)
    w = torch.randn(6, 2, 3, 3)  # groups = 2
    b = torch.randn(6)
    zero = torch.zeros(2, 2 * 9, 5, 6)  # stride 2 -> 5 x 6
    ref = F.conv2d(x, w, b, stride=2, padding=1, groups=2)
    torch.testing.assert_close(deform_conv2d(x, zero, w, b, stride=2, padding=1), ref)
    # Every tap moved by dx = +1 == convolution of the input shifted left by one pixel (except
    # in column 0, whose leftmost tap now reads real pixel 0 instead of the zero padding).
    off = torch.zeros(2, 2 * 9, 9, 11)
    off[:, 1::2] = 1.0
    got = deform_conv2d(x, off, w, None, padding=1)
    shifted = F.conv2d(_shift_x(x, 1), w, None, padding=1, groups=2)
    torch.testing.assert_close(got[..., 1:], shifted[..., 1:])
    # dy = -1 on every tap == the input shifted down by one row (except in the last row).
    off_y = torch.zeros(2, 2 * 9, 9, 11)
    off_y[:, 0::2] = -1.0
    down = torch.zeros_like(x)
    down[..., 1:, :] = x[..., :-1, :]
    torch.testing.assert_close(
        deform_conv2d(x, off_y, w, None, padding=1)[..., :-1, :],
        F.conv2d(down, w, None, padding=1, groups=2)[..., :-1, :],
    )
    # dx = 0.5 is the mean of the two integer shifts (bilinear); a 0.5 mask halves the output.
    off[:, 1::2] = 0.5
    half = 0.5 * (F.conv2d(x, w, None, padding=1, groups=2) + got)
    torch.testing.assert_close(deform_conv2d(x, off, w, None, padding=1), half)
    mask = torch.full((2, 9, 9, 11), 0.5)
    torch.testing.assert_close(deform_conv2d(x, off, w, None, padding=1, mask=mask), 0.5 * half)


@pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is None,
    reason="torchvision not installed (the shim exists because of that)",
)
def test_deform_conv2d_agrees_with_torchvision():
    try:
        from torchvision.ops import deform_conv2d as tv_deform
    except Exception as err:  # a CUDA wheel on a CPU torch fails at import
        pytest.skip(f"torchvision does not load: {err}")
    torch.manual_seed(0)
    x, w = torch.randn(1, 4, 8, 10), torch.randn(5, 4, 3, 3)
    off, mask = 2 * torch.randn(1, 2 * 2 * 9, 8, 10), torch.rand(1, 2 * 9, 8, 10)
    torch.testing.assert_close(
        deform_conv2d(x, off, w, padding=1, mask=mask),
        tv_deform(x, off, w, padding=1, mask=mask),
        atol=1e-4,
        rtol=1e-4,
    )


# ----------------------------------------------------------------------------- features / data
def test_resize_max_side_forces_the_longer_side():
    img = np.zeros((300, 500, 3), np.uint8)
    out, s = resize_max_side(img, 1000)
    assert out.shape == (600, 1000, 3) and s == (2.0, 2.0)
    out, s = resize_max_side(img, 250)
    assert out.shape == (150, 250, 3)


@pytest.mark.parametrize("name", ["sift", "orb", "aliked", "disk", "xfeat"])
def test_method_output_contract(name):
    try:
        method = load_method(name, max_keypoints=300)
    except MethodUnavailable as err:
        pytest.skip(f"{name} not installed: {err}")
    out = method.extract(texture())
    n = len(out["keypoints"])
    assert 0 < n <= 300
    assert out["keypoints"].shape == (n, 2) and out["scores"].shape == (n,)
    assert out["descriptors"].shape[0] == n and out["descriptors"].dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out["descriptors"], axis=1), 1, atol=1e-4)
    assert (out["keypoints"] >= -0.5).all()
    assert (out["keypoints"] <= np.array([319.5, 239.5])).all()


def test_generated_homography_pairs_are_seeded_and_consistent(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), texture()[:, :, ::-1])
    pairs = datasets.make_homography_pairs([folder], 320, n_images=1, seed=3)
    again = datasets.make_homography_pairs([folder], 320, n_images=1, seed=3)
    assert [p.kind for p in pairs] == ["viewpoint"] * 2 + ["illumination"] * 2
    for p, q in zip(pairs, again):
        np.testing.assert_array_equal(p.image1, q.image1)
    # The homography says where image-0 content went: SIFT matches must agree with it.
    sift = load_method("sift")
    f0, f1 = sift.extract(pairs[0].image0), sift.extract(pairs[0].image1)
    matches, _ = mutual_nn_match(f0["descriptors"], f1["descriptors"])
    errors = homography_match_errors(f0["keypoints"], f1["keypoints"], matches, pairs[0].H)
    assert np.median(errors) < 1.0


def test_pose_pair_loader_scales_intrinsics(tmp_path):
    K0, T = fabricate_data(tmp_path)
    (pair,) = datasets.load_pose_pairs(tmp_path / "eval" / "pairs", 160, "x_with_gt.txt")
    assert pair.image0.shape == (120, 160, 3)
    np.testing.assert_allclose(pair.K0, scale_intrinsics(K0, (0.5, 0.5)))
    np.testing.assert_allclose(pair.T_0to1, T)


def test_rgbd_sequence_pairs_use_camera_to_world_poses(tmp_path):
    (tmp_path / "image").mkdir()
    rng = np.random.default_rng(1)
    poses = []
    for i in range(12):
        T = np.eye(4)
        T[:3, :3] = rotation(rng.normal(size=3), rng.uniform(0, 20))
        T[:3, 3] = rng.normal(size=3)
        poses.append(T)
        cv2.imwrite(str(tmp_path / "image" / f"{i:05d}.jpg"), texture(seed=i)[:, :, ::-1])
    log = "".join(
        f"{i} {i} {i + 1}\n" + "\n".join(" ".join(f"{v:.10f}" for v in row) for row in T) + "\n"
        for i, T in enumerate(poses)
    )
    (tmp_path / "trajectory.log").write_text(log)
    (tmp_path / "camera_x.json").write_text(
        json.dumps(
            {
                "width": 320,
                "height": 240,
                "intrinsic_matrix": [300, 0, 0, 0, 310, 0, 159.5, 119.5, 1],
            }
        )
    )
    pairs = datasets.load_rgbd_sequence_pairs(tmp_path, 320, n_pairs=3, gaps=(2, 4))
    assert [p.name for p in pairs] == ["00000-00002", "00004-00008", "00007-00009"]
    np.testing.assert_allclose(pairs[1].K0, [[300, 0, 159.5], [0, 310, 119.5], [0, 0, 1]])
    # A world point seen from camera 4, moved with T_0to1, must equal it seen from camera 8.
    X_w = np.array([0.3, -0.2, 5.0, 1.0])
    X_4, X_8 = np.linalg.inv(poses[4]) @ X_w, np.linalg.inv(poses[8]) @ X_w
    np.testing.assert_allclose(pairs[1].T_0to1 @ X_4, X_8, atol=1e-6)


def _fabricate_multiview_scene(root, rotations_deg=(0, 20, 75)):
    """One scene of cameras.json (world to camera) + images, cameras turning about y."""
    (root / "images").mkdir(parents=True)
    K = [[400.0, 0, 159.5], [0, 410.0, 119.5], [0, 0, 1]]
    cams, poses = [], []
    for i, deg in enumerate(rotations_deg):
        R = rotation([0, 1, 0], deg)
        t = np.array([0.1 * i, -0.05 * i, 0.2])
        cv2.imwrite(str(root / "images" / f"{i:04d}.jpg"), texture(seed=20 + i)[:, :, ::-1])
        cams.append({"name": f"{i:04d}.jpg", "K": K, "R_w2c": R.tolist(), "t_w2c": t.tolist()})
        poses.append((R, t))
    (root / "cameras.json").write_text(json.dumps({"scene": root.name, "images": cams}))
    return np.array(K), poses


def test_multiview_pairs_keep_small_rotations_and_map_camera_i_to_j(tmp_path):
    K, poses = _fabricate_multiview_scene(tmp_path / "scene")
    pairs = datasets.load_multiview_pairs(tmp_path, 160, max_rotation_deg=60)
    # 0-1 (20 deg) and 1-2 (55 deg) stay; 0-2 (75 deg) is dropped.
    assert [p.name for p in pairs] == ["scene/0000-0001", "scene/0001-0002"]
    assert pairs[0].image0.shape == (120, 160, 3)
    np.testing.assert_allclose(pairs[0].K0, scale_intrinsics(K, (0.5, 0.5)))
    assert pairs[0].image1 is pairs[1].image0  # one decoded image shared by its pairs
    X_w = np.array([0.3, -0.2, 5.0])
    (R1, t1), (R2, t2) = poses[1], poses[2]
    X_1 = np.append(R1 @ X_w + t1, 1.0)
    np.testing.assert_allclose(pairs[1].T_0to1 @ X_1, np.append(R2 @ X_w + t2, 1.0), atol=1e-9)
    assert pairs[0].scale_ratio is None  # no pairs.txt: no scale ratios
    with pytest.raises(FileNotFoundError, match="cameras.json"):
        datasets.load_multiview_pairs(tmp_path / "scene" / "images", 160)
    # A built scene's pairs.txt keeps only its covisible pairs, each with its scale ratio >= 1.
    (tmp_path / "scene" / "pairs.txt").write_text(
        "# name0 name1 overlap scale_ratio\n0001.jpg 0002.jpg 0.4 0.5\n0000.jpg 0002.jpg 0.3 1.2\n"
    )
    pairs = datasets.load_multiview_pairs(tmp_path, 160, max_rotation_deg=60)
    assert [(p.name, p.scale_ratio) for p in pairs] == [("scene/0001-0002", 2.0)]


def test_pose_auc_by_scale_ratio_bins_pairs_by_hand():
    from benchmarks.evaluation import auc_by_scale_ratio

    rows = [
        {"scale_ratio": 1.1, "error": 0.0, "error_lo": 0.0},
        {"scale_ratio": 1.2, "error": np.inf, "error_lo": 0.0},
        {"scale_ratio": 1.3, "error": 0.0, "error_lo": 0.0},
        {"scale_ratio": 2.0, "error": 10.0, "error_lo": 10.0},
        {"scale_ratio": None, "error": 0.0, "error_lo": 0.0},  # no ratio: in no bin
    ]
    bins = auc_by_scale_ratio(rows, ["", "_lo"])
    assert list(bins) == ["1-1.25", "1.25-1.6", ">=1.6"]
    assert [b["n_pairs"] for b in bins.values()] == [2, 1, 1]
    # Half the pairs exact, half failed: recall 0.5 at every threshold.
    assert bins["1-1.25"]["auc"] == pytest.approx({5: 0.5, 10: 0.5, 20: 0.5})
    assert bins["1-1.25"]["auc_lo"] == pytest.approx({5: 1.0, 10: 1.0, 20: 1.0})
    # One pair 10 deg off: the curve (0, 0) -> (10, 1), then flat: AUC@20 = (5 + 10) / 20;
    # under 10 deg nothing is found.
    assert bins[">=1.6"]["auc"] == pytest.approx({5: 0.0, 10: 0.0, 20: 0.75})
    assert auc_by_scale_ratio([], [""])["1-1.25"] == {"n_pairs": 0, "auc": None}


def test_compare_end_to_end_without_peers(tmp_path, capsys):
    fabricate_data(tmp_path)
    _fabricate_multiview_scene(tmp_path / "eval" / "multiview" / "scene")
    out = tmp_path / "report.json"
    compare.main(
        [
            "--data",
            str(tmp_path),
            "--methods",
            "sift",
            "orb",
            "--max-side",
            "320",
            "--homography-source",
            "photos/held_out",
            "--homography-images",
            "2",
            "--pose-sets",
            "eval/multiview,eval/pairs",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    text = capsys.readouterr().out
    assert "multiview AUC@5 %" in text  # the first pose set is the summary's
    assert "RootSIFT (OpenCV)" in text and "ORB (OpenCV)" in text and "MMA@3px" in text
    report = json.loads(out.read_text())
    sift = report["methods"]["sift"]
    assert sift["homography"]["all"]["n_pairs"] == 8
    assert sift["homography"]["viewpoint"]["mma"]["10"] > 0.5
    assert sift["pose"]["pairs"]["n_pairs"] == 1
    assert sift["pose"]["multiview"]["n_pairs"] == 2
    # LO-RANSAC beside RANSAC, per pair and in the tables (pycolmap is in [dev]).
    multiview = sift["pose"]["multiview"]
    assert set(multiview["auc_lo"]) == {"5", "10", "20"} and "error_lo" in multiview["pairs"][0]
    assert "AUC@5 LO-RANSAC %" in text and "AUC@5° LO-RANSAC" in text
    assert sift["speed"]["n_images"] == 2 + 8 + 2 + 3
    assert sift["speed"]["time_median_s"] > 0 and sift["speed"]["peak_rss_mib"] > 0


def test_compare_reports_missing_data_clearly(tmp_path):
    with pytest.raises(SystemExit, match="No evaluation data"):
        compare.main(
            [
                "--data",
                str(tmp_path / "nowhere"),
                "--methods",
                "sift",
                "--out",
                str(tmp_path / "r.json"),
            ]
        )


def test_worker_protocol_saves_what_the_method_extracts_and_reports_failures(tmp_path):
    from benchmarks.runner import Worker, load_features, run_method

    files = []
    for k in range(2):
        files.append(tmp_path / f"{k}.npy")
        np.save(files[-1], texture(seed=k))
    record = run_method("sift", files, tmp_path / "sift", max_keypoints=200)
    assert record["n_images"] == 2 and record["image_sizes"] == [(240, 320)]
    assert len(record["times_s"]) == 2 and record["descriptor_dim"] == 128
    assert record["peak_rss_mib"] > 0 and "threads" not in record
    # The features a worker saved are the ones the method gives in this process.
    direct = load_method("sift", max_keypoints=200).extract(np.load(files[1]))
    saved = load_features(tmp_path / "sift", 1)
    np.testing.assert_array_equal(saved["keypoints"], direct["keypoints"])
    np.testing.assert_array_equal(saved["descriptors"], direct["descriptors"])
    assert json.loads((tmp_path / "sift" / "result.json").read_text())["n_images"] == 2

    unknown = run_method("no_such_method", files, tmp_path / "unknown")
    assert "no_such_method" in unknown["error"]
    # A worker that dies mid-run says so, with the end of its stderr.
    worker = Worker(
        {"method": "orb", "device": "cpu", "max_keypoints": 50, "warmup": str(files[0])}
    )
    worker.extract(tmp_path / "missing.npy")
    info = worker.finish()
    assert "worker failed" in info["error"] and "missing.npy" in info["error"]
    assert worker.times == []
