import cv2
import h5py
import numpy as np
import pytest
import torch

from tasp_hloc.data import collate, get_dataset
from tasp_hloc.data.megadepth import MegaDepthDataset

from conftest import texture_error

DH, DW = 96, 128  # depth-map resolution (the intrinsics refer to it)
K_OURS = np.array([[100.0, 0, 63.5], [0, 100.0, 47.5], [0, 0, 1]])  # pixel centres at integers


def texture(X, Y):
    return np.stack(
        [
            0.5 + 0.25 * np.sin(9 * X + 2 * Y) + 0.2 * np.cos(13 * Y - 4 * X),
            0.5 + 0.3 * np.sin(7 * Y + 11 * X * Y),
            0.5 + 0.3 * np.cos(10 * X) * np.sin(6 * Y),
        ],
        -1,
    )


def render(K, T_cam_from_world, h, w):
    """Ray-cast a textured wall Z = 3 (world)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(K).T
    T = np.linalg.inv(T_cam_from_world)
    d, t = rays @ T[:3, :3].T, T[:3, 3]
    lam = (3.0 - t[2]) / d[..., 2]
    P = t + lam[..., None] * d
    img = (np.clip(texture(P[..., 0], P[..., 1]), 0, 1) * 255).round().astype(np.uint8)
    return img, (lam * rays[..., 2]).astype(np.float32)


def cam_from_world(i):
    a = 0.05 * i
    T = np.eye(4)
    T[:3, :3] = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    T[:3, 3] = [0.1 * i, -0.03 * i, 0.04 * i]
    return np.linalg.inv(T)


def write_megadepth(root, scene="0001", n=4):
    img_dir = root / "Undistorted_SfM" / scene / "images"
    dep_dir = root / "phoenix/S6/zl548/MegaDepth_v1" / scene / "dense0" / "depths"
    img_dir.mkdir(parents=True)
    dep_dir.mkdir(parents=True)
    (root / "scene_info").mkdir(exist_ok=True)
    m = n + 1  # one extra unusable image (None paths), as D2-Net writes them
    image_paths, depth_paths = np.empty(m, object), np.empty(m, object)
    intrinsics, poses = np.empty(m, object), np.empty(m, object)
    for i in range(n):
        P = cam_from_world(i)
        _, depth = render(K_OURS, P, DH, DW)
        if i == 0:  # an image at twice the depth resolution: the loader must resize it
            s = 2.0
            K2 = K_OURS.copy()
            K2[:2] *= s
            K2[:2, 2] = (K_OURS[:2, 2] + 0.5) * s - 0.5
            img, _ = render(K2, P, DH * 2, DW * 2)
        else:
            img, _ = render(K_OURS, P, DH, DW)
        name = f"{1000 + i}_abc.jpg"
        cv2.imwrite(str(img_dir / name), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])
        with h5py.File(dep_dir / f"{1000 + i}_abc.h5", "w") as f:
            f.create_dataset("depth", data=depth)
        image_paths[i] = f"Undistorted_SfM/{scene}/images/{name}"
        depth_paths[i] = f"phoenix/S6/zl548/MegaDepth_v1/{scene}/dense0/depths/{1000 + i}_abc.h5"
        Kc = K_OURS.copy()
        Kc[:2, 2] += 0.5  # COLMAP: pixel centres at +0.5
        intrinsics[i] = Kc
        poses[i] = P if i % 2 else P.flatten()  # both storage forms exist in the wild
    overlap = np.full((m, m), -1.0)
    scale = np.full((m, m), -1.0)
    for i in range(n):
        for j in range(n):
            if i != j:
                overlap[i, j] = 0.8 - 0.1 * abs(i - j)
                scale[i, j] = 1.1
    overlap[0, 3] = overlap[3, 0] = 0.3  # below min_overlap
    scale[1, 2], scale[2, 1] = 3.0, 1 / 3.0  # beyond max_scale_ratio 2
    np.savez(
        root / "scene_info" / f"{scene}.0.npz",
        image_paths=image_paths,
        depth_paths=depth_paths,
        intrinsics=intrinsics,
        poses=poses,
        overlap_matrix=overlap,
        scale_ratio_matrix=scale,
        angles=np.zeros((m, m)),
        n_points3D=np.full(m, 10),
        points3D_id_to_2D=np.array([{} for _ in range(m)], dtype=object),
    )
    return root


@pytest.fixture
def mega(tmp_path):
    root = write_megadepth(tmp_path / "megadepth")
    (root / "train_scenes.txt").write_text("0001\n0002\n")  # 0002 has no scene info: skipped
    (root / "valid_scenes.txt").write_text("0001\n")
    return root


def test_pairs_filter_and_epochs(mega):
    ds = MegaDepthDataset({"root": str(mega), "max_scale_ratio": 2.0, "size": [64, 64]})
    pairs = {tuple(p) for p in ds.scenes[0]["pairs"].tolist()}
    expected = {(i, j) for i in range(4) for j in range(4) if i != j} - {
        (0, 3),
        (3, 0),
        (1, 2),
        (2, 1),
    }
    assert pairs == expected and len(ds) == len(expected)
    ds = MegaDepthDataset({"root": str(mega), "pairs_per_scene": 3, "seed": 1, "size": [64, 64]})
    assert len(ds) == 3
    e0 = list(ds.items)
    draws = set()
    for e in range(6):
        ds.set_epoch(e)
        draws.add(tuple(ds.items))
    ds.set_epoch(0)
    assert ds.items == e0 and len(draws) > 1  # re-drawn per epoch, reproducible
    val = MegaDepthDataset(
        {"root": str(mega), "split": "val", "pairs_per_scene": 3, "size": [64, 64]}
    )
    v0 = list(val.items)
    val.set_epoch(4)
    assert val.items == v0  # validation pairs are fixed


def test_sample_format_and_correspondences(mega):
    ds = get_dataset("megadepth")({"root": str(mega), "size": [64, 64], "seed": 0})
    s = ds[0]
    for key, shape, dtype in (
        ("image0", (3, 64, 64), torch.float32),
        ("depth1", (64, 64), torch.float32),
        ("K0", (3, 3), torch.float32),
        ("T_1from0", (4, 4), torch.float32),
        ("H_1from0", (3, 3), torch.float32),
        ("valid0", (64, 64), torch.bool),
    ):
        assert s[key].shape == shape and s[key].dtype == dtype, key
    assert not bool(s["is_homography"]) and s["name"].startswith("0001/")
    assert torch.equal(s["image0"], ds[0]["image0"])  # seeded
    batch = collate([ds[k] for k in range(len(ds))])  # includes image 0 (resized to the depth grid)
    err, base, frac = texture_error(batch)
    assert frac > 0.3 and err < 0.012 and base > 10 * err, (err, base, frac)
    # K refers to our pixel-centre convention: the stored COLMAP c (+0.5) minus 0.5, minus
    # an integer crop offset
    for k in range(len(ds)):
        for key in ("K0", "K1"):
            K = ds[k][key].double()
            assert torch.allclose(
                K[[0, 1], [0, 1]], torch.tensor([100.0, 100.0], dtype=torch.double)
            )
            off = torch.tensor([63.5, 47.5], dtype=torch.double) - K[:2, 2]
            assert torch.allclose(off, off.round(), atol=1e-4) and (off >= 0).all()


def test_bad_input(tmp_path, mega):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        MegaDepthDataset({"root": str(tmp_path / "nowhere")})
    (tmp_path / "m2").mkdir()
    with pytest.raises(FileNotFoundError, match="scene_info"):
        MegaDepthDataset({"root": str(tmp_path / "m2")})
    (tmp_path / "m2" / "scene_info").mkdir()
    with pytest.raises(FileNotFoundError, match="train_scenes.txt"):
        MegaDepthDataset({"root": str(tmp_path / "m2")})
    (tmp_path / "m2" / "train_scenes.txt").write_text("0005\n")
    with pytest.raises(ValueError, match="no scene"):
        MegaDepthDataset({"root": str(tmp_path / "m2")})
    np.savez(tmp_path / "m2" / "scene_info" / "0005.0.npz", image_paths=np.array(["a.jpg"]))
    with pytest.raises(ValueError, match="0005.0.npz"):
        MegaDepthDataset({"root": str(tmp_path / "m2")})
    ds = MegaDepthDataset({"root": str(mega), "size": [64, 64]})
    h5 = next((mega / "phoenix").rglob("*.h5"))
    h5.write_bytes(b"broken")
    with pytest.raises(IOError, match=h5.name):
        for k in range(len(ds)):
            ds[k]
