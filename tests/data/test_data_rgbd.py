import json

import cv2
import numpy as np
import pytest
import torch

from tasp_hloc.data import build_dataset, collate
from tasp_hloc.data.rgbd import RGBDDataset
from tasp_hloc.data.rgbd_layouts import read_trajectory_log

from conftest import texture_error

H, W = 96, 128
K_TRUE = np.array([[100.0, 0, 63.5], [0, 100.0, 47.5], [0, 0, 1]])


def texture(X, Y, front):
    r = 0.5 + 0.25 * np.sin(9 * X + 2 * Y) + 0.2 * np.cos(13 * Y - 4 * X)
    g = 0.5 + 0.3 * np.sin(7 * Y + 11 * X * Y)
    b = 0.5 + 0.3 * np.cos(10 * X) * np.sin(6 * Y)
    img = np.stack([r, g, b], -1)
    return np.where(front[..., None], 1.0 - img, img)


def render(K, T_world_from_cam, h=H, w=W):
    """Ray-cast a textured wall (Z = 3) with a box face in front of it (Z = 2, |X|,|Y| < 0.25)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(K).T
    R, t = T_world_from_cam[:3, :3], T_world_from_cam[:3, 3]
    d = rays @ R.T  # ray directions in world
    lam_front = (2.0 - t[2]) / d[..., 2]
    P = t + lam_front[..., None] * d
    front = (np.abs(P[..., 0]) < 0.25) & (np.abs(P[..., 1]) < 0.25) & (lam_front > 0)
    lam_back = (3.0 - t[2]) / d[..., 2]
    lam = np.where(front, lam_front, lam_back)
    P = t + lam[..., None] * d
    img = texture(P[..., 0], P[..., 1], front)
    depth = lam * rays[..., 2]  # camera z
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), depth


def pose(i):
    a = 0.04 * i
    T = np.eye(4)
    T[:3, :3] = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    T[:3, 3] = [0.12 * i, 0.02 * i, 0.05 * i]
    return T


def write_icl(root, n=5):
    (root / "image").mkdir(parents=True)
    (root / "depth").mkdir()
    lines = []
    for i in range(n):
        T = pose(i)
        img, depth = render(K_TRUE, T)
        cv2.imwrite(str(root / "image" / f"{i:05d}.png"), img[..., ::-1])
        depth_mm = (depth * 1000).round().astype(np.uint16)
        depth_mm[:3, :3] = 0  # a few unknown pixels
        cv2.imwrite(str(root / "depth" / f"{i:05d}.png"), depth_mm)
        lines.append(f"{i} {i} {i + 1}")
        lines += [" ".join(f"{v:.9f}" for v in row) for row in T]
    (root / "trajectory.log").write_text("\n".join(lines) + "\n")
    (root / "camera_primesense.json").write_text(
        json.dumps({"width": W, "height": H, "intrinsic_matrix": K_TRUE.T.flatten().tolist()})
    )
    return root


@pytest.fixture
def icl(tmp_path):
    return write_icl(tmp_path / "icl")


def test_icl_format_crop_and_correspondences(icl, tmp_path):
    conf = {
        "roots": [str(icl)],
        "size": [64, 64],
        "seed": 0,
        "min_overlap": 0.2,
        "cache_dir": str(tmp_path / "cache"),
    }
    ds = RGBDDataset(conf)
    assert len(ds.frames) == 5 and len(ds) > 0
    assert np.all((ds.pair_overlap >= 0.2) & (ds.pair_overlap <= 0.95))
    O = ds.overlap
    assert O[0, 1] > O[0, 4]  # overlap falls with distance
    assert len(list((tmp_path / "cache").glob("rgbd_overlap_*.npy"))) == 1
    assert np.array_equal(RGBDDataset(conf).overlap, O)  # from the cache

    s = ds[0]
    assert s["image0"].shape == (3, 64, 64) and s["image0"].dtype == torch.float32
    assert s["depth0"].shape == (64, 64) and s["depth0"].dtype == torch.float32
    assert s["K0"].dtype == torch.float32 and s["T_1from0"].shape == (4, 4)
    assert not bool(s["is_homography"]) and torch.equal(s["H_1from0"], torch.eye(3))
    assert s["valid0"].all() and s["valid1"].all()
    assert 0 <= float(s["image0"].min()) and float(s["image0"].max()) <= 1
    assert (s["depth0"] >= 0).all() and (s["depth0"] > 0).float().mean() > 0.9

    # K after the crop: same focal, principal point shifted by the crop offset, which must
    # match where the crop sits in the full image
    for k in range(3):
        s = ds[k]
        for key in ("K0", "K1"):
            K = s[key].double().numpy()
            assert np.allclose(K[[0, 1], [0, 1]], [100, 100])
            x0, y0 = 63.5 - K[0, 2], 47.5 - K[1, 2]
            assert abs(x0 - round(x0)) < 1e-4 and abs(y0 - round(y0)) < 1e-4
        name0 = s["name"].split("|")[0].split("/")[-1]
        full = cv2.imread(str(icl / "image" / name0))[..., ::-1]
        K = s["K0"].double().numpy()
        x0, y0 = int(round(63.5 - K[0, 2])), int(round(47.5 - K[1, 2]))
        crop = (s["image0"].permute(1, 2, 0).numpy() * 255).round()
        assert np.array_equal(crop, full[y0 : y0 + 64, x0 : x0 + 64].astype(np.float64))

    batch = collate([ds[k] for k in range(min(4, len(ds)))])
    err, base, frac = texture_error(batch)
    assert frac > 0.3 and err < 0.01 and base > 20 * err


def test_icl_resize_and_seed(icl):
    ds = RGBDDataset(
        {"roots": str(icl), "size": [48, 48], "resize_max": 80, "seed": 5, "min_overlap": 0.2}
    )
    a, b = ds[1], ds[1]
    for key in ("image0", "image1", "K0", "K1", "T_1from0", "depth1"):
        assert torch.equal(a[key], b[key])
    assert a["name"] == b["name"]
    # 128 -> 80: f scales by 0.625, c follows (c + 0.5) * s - 0.5 then the crop
    assert torch.allclose(a["K0"][0, 0], torch.tensor(62.5))
    cx = (63.5 + 0.5) * 0.625 - 0.5 - a["K0"][0, 2]
    assert abs(float(cx) - round(float(cx))) < 1e-4
    err, base, frac = texture_error(collate([ds[k] for k in range(min(4, len(ds)))]))
    assert frac > 0.3 and err < 0.025 and base > 10 * err
    ds2 = RGBDDataset(
        {
            "roots": str(icl),
            "size": [48, 48],
            "resize_max": 80,
            "seed": 5,
            "min_overlap": 0.2,
            "pairs_per_epoch": 2,
        }
    )
    assert len(ds2) == 2
    p0 = ds2.pairs.copy()
    ds2.set_epoch(0)
    assert np.array_equal(ds2.pairs, p0)


def write_seven_scenes(root, n_seq=2, n=3):
    """7-Scenes layout; depth rendered by a separate depth camera (f = 117, same centre)."""
    K_d = np.array([[117.0, 0, 64.0], [0, 117.0, 48.0], [0, 0, 1]])
    K_rgb = np.array([[100.0, 0, 64.0], [0, 100.0, 48.0], [0, 0, 1]])
    for s in range(1, n_seq + 1):
        seq = root / f"seq-{s:02d}"
        seq.mkdir(parents=True)
        for i in range(n):
            T = pose(i + 0.5 * (s - 1))
            img, _ = render(K_rgb, T)
            _, depth = render(K_d, T)
            d = (depth * 1000).round().astype(np.uint16)
            d[:4] = 65535  # invalid marker
            d[-4:] = 0
            cv2.imwrite(str(seq / f"frame-{i:06d}.color.png"), img[..., ::-1])
            cv2.imwrite(str(seq / f"frame-{i:06d}.depth.png"), d)
            text = "\r\n".join("\t".join(f"{v:.9e}" for v in row) for row in T) + "\r\n"
            (seq / f"frame-{i:06d}.pose.txt").write_text(text)
    (root / "TrainSplit.txt").write_text("sequence1\r\nsequence2\r\n")
    return root


def test_seven_scenes(tmp_path):
    root = write_seven_scenes(tmp_path / "stairs")
    ds = build_dataset(
        {
            "name": "rgbd",
            "roots": [str(root)],
            "size": [64, 64],
            "seed": 0,
            "min_overlap": 0.2,
            "sequences": "TrainSplit.txt",
            "seven_scenes": {"K_rgb": [100, 100, 64, 48], "K_depth": [117, 117, 64, 48]},
        }
    )
    assert len(ds.frames) == 6
    assert any(
        ds.frames[i]["name"].split("/")[1] != ds.frames[j]["name"].split("/")[1]
        for i, j in ds.all_pairs
    )  # pairs across sequences (shared world frame)
    err, base, frac = texture_error(collate([ds[k] for k in range(4)]))
    assert frac > 0.3 and err < 0.015 and base > 10 * err


def test_bad_input(tmp_path, icl):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        RGBDDataset({"roots": [str(tmp_path / "nowhere")]})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        RGBDDataset({"roots": [str(tmp_path / "empty")]})
    text = (icl / "trajectory.log").read_text().splitlines()
    text[3] = "0.1 0.2 oops 0.4"
    (icl / "trajectory.log").write_text("\n".join(text))
    with pytest.raises(ValueError, match="trajectory.log"):
        RGBDDataset({"roots": [str(icl)]})
    (icl / "trajectory.log").write_text("\n".join(text[:7]))
    with pytest.raises(ValueError, match="trajectory.log"):
        read_trajectory_log(icl / "trajectory.log")
    root = write_seven_scenes(tmp_path / "stairs", n_seq=1, n=2)
    (root / "seq-01" / "frame-000001.pose.txt").write_text("1 0 0\n0 1 0\n")
    with pytest.raises(ValueError, match="frame-000001.pose.txt"):
        RGBDDataset({"roots": [str(root)]})
    with pytest.raises(KeyError, match="min_overlapp"):
        RGBDDataset({"roots": [str(root)], "min_overlapp": 0.1})
