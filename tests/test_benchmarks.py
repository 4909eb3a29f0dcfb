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
from tasp_hloc.labels.peers import deform_conv2d
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


def _rotation(axis, degrees):
    return cv2.Rodrigues(np.asarray(axis, float) / np.linalg.norm(axis) * np.radians(degrees))[0]


def _two_view_scene(seed=0, n=200):
    """Points in front of two cameras; returns K0, K1, T_0to1, kpts0, kpts1 (exact)."""
    rng = np.random.default_rng(seed)
    K0 = np.array([[600.0, 0, 320], [0, 610, 240], [0, 0, 1]])
    K1 = np.array([[580.0, 0, 330], [0, 585, 235], [0, 0, 1]])
    T = np.eye(4)
    T[:3, :3] = _rotation([0.2, 1.0, 0.1], 15)
    T[:3, 3] = [-0.6, 0.1, 0.15]
    X0 = rng.uniform([-2, -1.5, 4], [2, 1.5, 8], (n, 3))
    X1 = X0 @ T[:3, :3].T + T[:3, 3]
    k0 = (X0 @ K0.T)[:, :2] / X0[:, 2:]
    k1 = (X1 @ K1.T)[:, :2] / X1[:, 2:]
    return K0, K1, T, k0, k1


def test_pose_error_of_ground_truth_is_zero_and_sign_free():
    K0, K1, T, _, _ = _two_view_scene()
    assert relative_pose_error(T, T[:3, :3], T[:3, 3]) == pytest.approx((0.0, 0.0), abs=1e-5)
    # E fixes t up to sign and scale: -3 t is as good as t.
    assert relative_pose_error(T, T[:3, :3], -3 * T[:3, 3]) == pytest.approx((0, 0), abs=1e-5)
    R_off = _rotation([0, 0, 1], 10) @ T[:3, :3]
    assert relative_pose_error(T, R_off, T[:3, 3])[0] == pytest.approx(10.0, abs=1e-6)


def test_essential_matrix_from_perfect_matches_recovers_the_pose():
    K0, K1, T, k0, k1 = _two_view_scene()
    R, t, inliers = estimate_relative_pose(k0, k1, K0, K1, threshold_px=1.0)
    err_R, err_t = relative_pose_error(T, R, t)
    assert err_R < 0.01 and err_t < 0.01
    assert inliers.mean() > 0.95
    epi = symmetric_epipolar_distance(k0, k1, K0, K1, T)
    assert epi.max() < 1e-12
    assert estimate_relative_pose(k0[:4], k1[:4], K0, K1) is None  # too few matches


def test_lo_ransac_recovers_the_pose_from_noisy_matches_with_outliers():
    pytest.importorskip("pycolmap")
    K0, K1, T, k0, k1 = _two_view_scene(n=300)
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
def _texture(h=240, w=320, seed=0):
    """A random blob texture, RGB uint8, with plenty of corners and blobs."""
    rng = np.random.default_rng(seed)
    img = cv2.resize(
        rng.uniform(0, 255, (h // 8, w // 8, 3)).astype(np.uint8),
        (w, h),
        interpolation=cv2.INTER_CUBIC,
    )
    for _ in range(40):
        c = tuple(int(v) for v in rng.integers(0, 255, 3))
        cv2.circle(
            img, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(3, 15)), c, -1
        )
    return img


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
    out = method.extract(_texture())
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
    cv2.imwrite(str(folder / "a.png"), _texture()[:, :, ::-1])
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


def _fabricate_data(root):
    """A data tree of the same layout as /work/shared/data: photos + a pose pair file."""
    photos = root / "photos" / "held_out"
    photos.mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(photos / f"{i}.png"), _texture(seed=i)[:, :, ::-1])
    pose_dir = root / "eval" / "pairs"
    (pose_dir / "images").mkdir(parents=True)
    K0, K1, T, _, _ = _two_view_scene()
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(pose_dir / "images" / name), _texture(seed=7)[:, :, ::-1])
    line = [
        "a.png",
        "b.png",
        "0",
        "0",
        *map(str, K0.ravel()),
        *map(str, K1.ravel()),
        *map(str, T.ravel()),
    ]
    (pose_dir / "x_with_gt.txt").write_text(" ".join(line) + "\n")
    return K0, T


def test_pose_pair_loader_scales_intrinsics(tmp_path):
    K0, T = _fabricate_data(tmp_path)
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
        T[:3, :3] = _rotation(rng.normal(size=3), rng.uniform(0, 20))
        T[:3, 3] = rng.normal(size=3)
        poses.append(T)
        cv2.imwrite(str(tmp_path / "image" / f"{i:05d}.jpg"), _texture(seed=i)[:, :, ::-1])
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
        R = _rotation([0, 1, 0], deg)
        t = np.array([0.1 * i, -0.05 * i, 0.2])
        cv2.imwrite(str(root / "images" / f"{i:04d}.jpg"), _texture(seed=20 + i)[:, :, ::-1])
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
    _fabricate_data(tmp_path)
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
        np.save(files[-1], _texture(seed=k))
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


def test_extract_speed_runs_on_synthetic_images(tmp_path, capsys):
    from benchmarks import extract_speed

    out = tmp_path / "speed.json"
    extract_speed.main(
        [
            "--synthetic",
            "--n-images",
            "2",
            "--sizes",
            "256",
            "320",
            "--methods",
            "sift",
            "orb",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert "img/s" in text and "| sift | 320 | 320x240 |" in text
    records = json.loads(out.read_text())["records"]
    assert [(r["method"], r["max_side"]) for r in records] == [
        ("sift", 256),
        ("orb", 256),
        ("sift", 320),
        ("orb", 320),
    ]
    # --allocator both: each entry in a glibc-default worker and in one keeping freed memory
    extract_speed.main(
        ["--synthetic", "--n-images", "1", "--sizes", "256", "--methods", "sift"]
        + ["--allocator", "both", "--device", "cpu", "--out", str(out)]
    )
    assert "| sift, glibc malloc | 256 |" in capsys.readouterr().out
    records = json.loads(out.read_text())["records"]
    assert [(r["entry"], r["allocator"]) for r in records] == [("sift", "glibc"), ("sift", "kept")]


def test_ablation_table_reads_results_as_stored():
    from benchmarks.ablations import ARMS, table

    mma = {"1": 0.2, "3": 0.5, "5": 0.7, "10": 0.75}
    hom = {
        "all": {"mma": mma, "matches": 1000.0},
        "illumination": {"mma": mma},
        "viewpoint": {"mma": {**mma, "3": 0.25}},
    }
    text = table({"reference": {"bench": {"homography": hom}, "train_wall_s": 600.0}})
    row = text.splitlines()[-1]
    assert row.startswith("| reference | " + ARMS["reference"].changes)
    assert "| 20.0 | 50.0 | 70.0 | 75.0 | 50.0 | 25.0 | 1000 | 10 |" in row
    # pose sets: LO-RANSAC AUC@5/10/20, then AUC@5 per scale-ratio bin where the set has them;
    # an arm without a set or a bin gets "-"
    auc = {"5": 0.5, "10": 0.6, "20": 0.7}
    lund = {"auc_lo": auc, "by_scale": {"1-1.25": {"auc_lo": auc}, ">=1.6": {"auc_lo": {"5": 0}}}}
    results = {
        "mv_sfm": {"bench": {"homography": hom, "pose": {"lund": lund}}, "train_wall_s": 60.0},
        "mv_no_sfm": {"bench": {"homography": hom, "pose": {}}, "train_wall_s": 60.0},
    }
    lines = table(results).splitlines()
    heads = "| lund LO AUC@5/10/20 | lund 1-1.25x AUC@5 | lund >=1.6x AUC@5 | train min |"
    assert lines[0].endswith(heads)
    assert lines[2].endswith("| 1000 | 50.0 / 60.0 / 70.0 | 50.0 | 0.0 | 1 |")
    assert lines[3].endswith("| 1000 | - | - | - | 1 |")


def test_learning_curve_exports_checkpoints_and_reads_reports(tmp_path):
    from benchmarks import learning_curve

    from tasp_hloc.model.tasp import TaSP
    from tasp_hloc.model.weights import read_manifest

    model = TaSP({"weights": None}).state_dict()
    torch.save(
        {
            "model": model,
            "step": 400,
            "config": {"name": "run_a"},
            "rng": {"numpy": np.random.get_state()},
        },
        tmp_path / "ckpt.pth",
    )
    out, step, run = learning_curve.export_checkpoint(tmp_path / "ckpt.pth", tmp_path / "lc")
    assert (step, run, out.name) == (400, "run_a", "run_a_step400.pth")
    exported = torch.load(out, weights_only=True)
    assert exported.keys() == model.keys()
    assert all(torch.equal(exported[k], v) for k, v in model.items())
    # train.export's file and manifest entry: TaSP loads it by path.
    assert read_manifest(tmp_path / "lc")["weights"]["run_a_step400"]["recipe"]["steps"] == 400
    loaded = TaSP({"weights": str(out)}).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.items())
    torch.save(model, tmp_path / "plain.pth")
    with pytest.raises(ValueError, match="not a training checkpoint"):
        learning_curve.export_checkpoint(tmp_path / "plain.pth", tmp_path / "lc")
    mma = {"1": 0.25, "3": 0.5, "5": 0.625, "10": 0.75}
    report = {
        "pose_sets": ["strecha_dev", "scannet_pairs"],
        "methods": {
            "tasp": {
                "homography": {
                    "all": {"mma": mma},
                    "illumination": {"mma": {"3": 0.6}},
                    "viewpoint": {"mma": {"3": 0.4}},
                },
                "pose": {
                    "scannet_pairs": {"auc": {"5": 0, "10": 0, "20": 0}, "matches": 1},
                    "strecha_dev": {
                        "auc": {"5": 0.1, "10": 0.2, "20": 0.3},
                        "auc_lo": {"5": 0.4, "10": 0.5, "20": 0.6},
                        "matches": 812,
                    },
                },
            }
        },
    }
    assert learning_curve.row("run_a", "400", report) == [
        "run_a",
        "400",
        "25.0",
        "50.0",
        "62.5",
        "75.0",
        "60.0",
        "40.0",
        "10.0",
        "20.0",
        "30.0",
        "40.0",
        "50.0",
        "60.0",
        "812",
    ]
    # A report from before LO-RANSAC (or without pycolmap) leaves those columns blank.
    del report["methods"]["tasp"]["pose"]["strecha_dev"]["auc_lo"]
    assert learning_curve.row("run_a", "400", report)[-4:] == ["-", "-", "-", "812"]


def test_learning_curve_measures_in_process_once_per_weights(tmp_path, monkeypatch):
    from benchmarks import learning_curve

    calls = []

    def fake_run(args):
        calls.append(args)
        return {"methods": {"tasp": {"speed": {"time_median_s": float("nan")}}}}

    monkeypatch.setattr(compare, "run", fake_run)
    args = learning_curve.parse_args(["--data", str(tmp_path), "--max-side", "320", "--quick"])
    out = tmp_path / "lc" / "w.json"
    first = learning_curve.measure("w.pth", out, args)
    again = learning_curve.measure("w.pth", out, args)
    assert len(calls) == 1 and again == json.loads(out.read_text())
    assert (calls[0].tasp_weights, calls[0].max_side, calls[0].quick) == ("w.pth", 320, True)
    assert calls[0].methods == ["tasp"] and calls[0].data == tmp_path
    # The cache holds valid JSON: NaN written as null.
    assert np.isnan(first["methods"]["tasp"]["speed"]["time_median_s"])
    assert again["methods"]["tasp"]["speed"]["time_median_s"] is None


def test_inloc_scene_counts_localized_queries_per_threshold():
    from benchmarks.inloc_scene import localized_counts

    stats = {"DUC1": (2, [0.5, 1.0, 1.0], (0.1, 1.0)), "DUC2": (3, [0.0, 1 / 3, 2 / 3], (2.0, 9.0))}
    assert localized_counts(stats) == [1, 3, 4]


def test_train_step_variants_and_depthwise_fp32(capsys):
    from benchmarks import train_step
    from tasp_hloc.train.precision import keep_depthwise_fp32

    conv_dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
    conv_pw = torch.nn.Conv2d(8, 8, 1)
    net = torch.nn.Sequential(conv_dw, conv_pw)
    keep_depthwise_fp32(net)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = torch.rand(1, 8, 6, 6)
        assert conv_dw(x).dtype == torch.float32 and conv_pw(x).dtype == torch.bfloat16
    # glibc only: keeping freed memory would change this test process for good
    argv = ["--batch", "1", "--size", "64", "--steps", "1", "--device", "cpu"]
    train_step.main([*argv, "--allocator", "glibc"])
    rows = [
        r for r in capsys.readouterr().out.splitlines() if r.startswith("| ") and "---" not in r
    ]
    assert [r.split(" | ")[0] for r in rows[1:]] == [
        "| fp32, glibc malloc",
        "| bf16 autocast, glibc malloc",
        "| bf16, depthwise fp32, glibc malloc",
    ]
    assert rows[1].split(" | ")[6] == "1.00x"


def test_cpu_description_reads_model_and_units(tmp_path):
    from benchmarks.hardware import cpu_description

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
        "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n"
    )
    assert cpu_description(cpuinfo) == {
        "model": "AMD EPYC 9B14",
        "units": ["AVX2", "AVX-512", "AVX-512 BF16"],
    }
    assert cpu_description(tmp_path / "missing")["units"] == []


def test_tasp_gflop_counts_a_convolution_by_hand():
    from benchmarks.hardware import tasp_gflop

    class OneConv(torch.nn.Module):  # 3 -> 8 channels, 3x3, on 16x32: 2*3*9*8*16*32 FLOPs
        conf = {"fuse": True}

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)

        def forward_dense(self, image):
            assert self.conf["fuse"] is False  # counted on the plain modules
            return self.conv(image)

    model = OneConv()
    assert tasp_gflop(model, 16, 32) == pytest.approx(2 * 3 * 9 * 8 * 16 * 32 / 1e9)
    assert model.conf["fuse"] is True  # restored
    assert tasp_gflop(torch.nn.Identity(), 16, 32) is None


def test_keypoint_storage_rounds_like_a_float16_file():
    from benchmarks.keypoint_precision import render, stored

    kp = np.array([[100.3, 200.7], [1000.25, 10.5]])
    # stored 3x larger: 3000.75 as float16 is 3000 or 3002 (steps of 2 above 2048)
    f16 = stored(kp, 3.0, np.float16)
    assert np.abs(f16 - kp).max() * 3 <= 1.0 + 1e-9 and not np.allclose(f16, kp)
    np.testing.assert_allclose(stored(kp, 3.0, np.float32), kp, atol=1e-3)
    auc = {5: 0.5, 10: 0.6, 20: 0.7}
    text = render({"sift": {"float16": {"strecha": {"auc": auc, "auc_lo": None}}}}, 3072)
    assert "| sift | float16 | strecha | 50.0 | 60.0 | 70.0 | - | - | - |" in text


def test_api_speed_times_the_api_the_command_line_and_a_peer(tmp_path, capsys):
    from benchmarks import api_speed

    out = tmp_path / "api.json"
    args = ["--synthetic", "--n-images", "2", "--size", "160", "--repeats", "1"]
    api_speed.main(args + ["--entries", "api", "cli", "sift", "--out", str(out)])
    text = capsys.readouterr().out
    assert "| TaSP().extract, plain Python process |" in text and "CPU: " in text
    report = json.loads(out.read_text())
    assert [r["entry"] for r in report["records"]] == ["api", "cli", "sift"]
    assert all(r["error"] is None for r in report["records"])
    # a difference of two walls for the command line (may be noise-negative on 2 tiny images)
    assert report["records"][0]["s_per_image"] > 0 and report["records"][2]["s_per_image"] > 0
    assert len(report["times"]["api"]) == 1  # the first of the 2 images is warm-up
    with pytest.raises(SystemExit):
        api_speed.main(["--entries", "nothing"])


def test_ablation_main_resumes_and_measures_the_control_on_homographies(tmp_path, monkeypatch):
    from benchmarks import ablations

    mma = {"1": 0.2, "3": 0.5, "5": 0.7, "10": 0.75}
    hom = {"all": {"mma": mma, "matches": 10.0}, "illumination": {"mma": mma}}
    hom["viewpoint"] = {"mma": mma}
    calls = []

    def evaluate(arm, root, args, tasp_conf, pose_sets):
        calls.append((arm, tasp_conf["subpixel"], pose_sets))
        return {"homography": hom}

    monkeypatch.setattr(
        ablations, "train", lambda arm, steps, root: {"train_wall_s": 1.0, "steps": steps}
    )
    monkeypatch.setattr(ablations, "evaluate", evaluate)
    argv = ["--group", "multiview", "--root", str(tmp_path), "--steps", "5"]
    argv += ["--arms", "mv_sfm_scale", "mv_sfm_scale_softargmax"]
    ablations.main(argv)
    sets = ablations.POSE_SETS["multiview"]
    assert calls == [
        ("mv_sfm_scale", "auto", sets),  # TaSP's default: the corner snap for this head
        ("mv_sfm_scale_softargmax", "centroid", "none"),
    ]
    ablations.main(argv)  # both finished: nothing is measured again
    assert len(calls) == 2
    ablations.main(argv[:-2] + ["mv_sfm_scale", "--steps", "6"])  # another budget is another run
    assert len(calls) == 3
