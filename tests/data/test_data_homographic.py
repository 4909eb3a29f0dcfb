import cv2
import numpy as np
import pytest
import torch

from tasp_hloc.data import collate, get_dataset
from tasp_hloc.data.geometry import warp_points
from tasp_hloc.data.homographic import HomographicDataset, sample_homography
from tasp_hloc.data.photometric import PhotometricAugmentation

NO_PHOTO = {"enable": False}


def textured_photo(h=300, w=400, seed=0):
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.uniform(0, 255, (h, w, 3)).astype(np.float32), (0, 0), 2.0)
    noise = (noise - noise.mean()) * 4 + 128
    return np.clip(noise, 0, 255).astype(np.uint8)


@pytest.fixture
def photo_dir(tmp_path):
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    cv2.imwrite(str(d / "a.png"), textured_photo(seed=1))
    cv2.imwrite(
        str(d / "sub" / "b.jpg"), textured_photo(260, 300, seed=2), [cv2.IMWRITE_JPEG_QUALITY, 98]
    )
    cv2.imwrite(str(d / "gray.png"), textured_photo(seed=3)[..., 0])  # grayscale source
    (d / "notes.txt").write_text("not an image")
    return d


def test_sample_format_and_seed(photo_dir):
    ds = HomographicDataset(
        {"image_dirs": [str(photo_dir)], "size": [64, 96], "seed": 3, "short_side": [70, 120]}
    )
    assert len(ds) == 3
    for i in range(len(ds)):
        s = ds[i]
        assert s["image0"].shape == (3, 64, 96) and s["image0"].dtype == torch.float32
        assert s["image1"].shape == (3, 64, 96)
        assert 0 <= s["image0"].min() and s["image1"].max() <= 1
        assert s["depth0"].shape == (64, 96) and torch.all(s["depth0"] == 1)
        assert s["K0"].shape == (3, 3) and s["K0"][0, 0] == 96 and s["K0"][0, 2] == 47.5
        assert torch.equal(s["T_1from0"], torch.eye(4))
        assert s["is_homography"].dtype == torch.bool and bool(s["is_homography"])
        assert s["valid0"].all() and s["valid1"].dtype == torch.bool
        assert 0.2 < s["valid1"].float().mean() <= 1
        assert not s["H_1from0"].equal(torch.eye(3))
    a, b = ds[1], ds[1]
    assert torch.equal(a["image1"], b["image1"]) and torch.equal(a["H_1from0"], b["H_1from0"])
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["H_1from0"], a["H_1from0"])
    batch = collate([ds[0], ds[1]])
    assert batch["image0"].shape == (2, 3, 64, 96) and batch["is_homography"].shape == (2,)
    assert isinstance(batch["name"], list) and len(batch["name"]) == 2


def test_homography_maps_a_rendered_dot(tmp_path):
    """H must send the dot's centre in image0 to the dot's centre in image1."""
    h, w = 96, 128
    # photos of exactly the crop size: image0 is the whole photo
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    centres = [(60.3, 45.6), (50.0, 52.0), (70.5, 40.2)]
    for k, (cx, cy) in enumerate(centres):
        img = 255 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 2.0**2))
        cv2.imwrite(str(tmp_path / f"dot{k}.png"), img.astype(np.uint8))
    ds = HomographicDataset(
        {
            "image_dirs": [str(tmp_path)],
            "size": [h, w],
            "seed": 0,
            "short_side": [h, h],
            "photometric": NO_PHOTO,
            "homography": {"scale": [0.5, 0.6], "translation": 0.05, "min_overlap": 0.2},
        }
    )
    found = 0
    for i in range(len(ds)):
        s = ds[i]
        g0, g1 = s["image0"][0].numpy(), s["image1"][0].numpy()
        if g0.max() < 0.5 or g1.max() < 0.5:
            continue

        def centroid(g):
            m = g > 0.05 * g.max()
            ys, xs = np.nonzero(m)
            wts = g[m]
            return np.array([(xs * wts).sum(), (ys * wts).sum()]) / wts.sum()

        p0 = centroid(g0)
        q = s["H_1from0"].double().numpy() @ np.array([p0[0], p0[1], 1.0])
        p1 = centroid(g1)
        # a half-pixel convention error would move it by (1 - scale) / 2 > 0.2 px
        assert np.linalg.norm(q[:2] / q[2] - p1) < 0.1, np.linalg.norm(q[:2] / q[2] - p1)
        found += 1
    assert found == 3


def test_correspondences_same_texture(photo_dir):
    ds = HomographicDataset(
        {"image_dirs": [str(photo_dir)], "size": [96, 96], "seed": 0, "photometric": NO_PHOTO}
    )
    b = collate([ds[i] for i in range(3)])
    ys, xs = torch.meshgrid(torch.arange(4, 92, 3.0), torch.arange(4, 92, 3.0), indexing="ij")
    kp0 = torch.stack([xs.flatten(), ys.flatten()], -1)[None].expand(3, -1, -1)
    kp1, valid, xyz0, xyz1 = warp_points(kp0, b)
    assert valid.float().mean() > 0.3
    grid = kp1 / 95 * 2 - 1
    v1 = torch.nn.functional.grid_sample(b["image1"], grid[:, None], align_corners=True)[:, :, 0]
    v0 = b["image0"][:, :, kp0[0, :, 1].long(), kp0[0, :, 0].long()]
    inside1 = (
        torch.nn.functional.grid_sample(
            b["valid1"][:, None].float(), grid[:, None], align_corners=True
        )[:, 0, 0]
        > 0.999
    )
    m = valid & inside1
    err = (v0 - v1).abs().mean(1)[m].mean()
    shuffled = (v0 - v1[..., torch.randperm(v1.shape[-1])]).abs().mean(1)[m].mean()
    assert err < 0.06 and shuffled > 3 * err
    assert torch.allclose(xyz0[..., 2], torch.ones_like(xyz0[..., 2]))


def test_sample_homography_keeps_overlap():
    rng = np.random.default_rng(0)
    conf = dict(HomographicDataset.default_conf["homography"], max_angle=45, perspective=0.2)
    from tasp_hloc.data.homographic import overlap_fraction

    for _ in range(20):
        H = sample_homography((64, 64), conf, rng)
        assert overlap_fraction(H, (64, 64)) >= conf["min_overlap"]


def test_photometric_night_darkens():
    img = np.full((32, 32, 3), 0.6, np.float32)
    conf = {
        "p_night": 1.0,
        "noise_std": [0, 0],
        "night_noise_std": [0, 0],
        "p_blur": 0,
        "p_motion_blur": 0,
        "p_grayscale": 0,
    }
    out = PhotometricAugmentation(conf)(img, np.random.default_rng(0))
    assert out.dtype == np.float32 and out.shape == img.shape and out.mean() < 0.35
    same = PhotometricAugmentation(conf)(img, np.random.default_rng(0))
    assert np.array_equal(out, same)


def test_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        HomographicDataset({"image_dirs": [str(tmp_path / "missing_dir")]})
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        HomographicDataset({"image_dirs": [str(tmp_path / "empty")]})
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.jpg").write_bytes(b"not a jpeg")
    ds = HomographicDataset({"image_dirs": [str(tmp_path / "bad")]})
    with pytest.raises(IOError, match="broken.jpg"):
        ds[0]
    with pytest.raises(KeyError, match="sizes"):
        HomographicDataset({"image_dirs": [str(tmp_path / "bad")], "sizes": [1, 1]})
    assert get_dataset("homographic") is HomographicDataset


def test_image_dirs_mix_folders_and_single_files(photo_dir, tmp_path):
    single = tmp_path / "single.png"
    cv2.imwrite(str(single), textured_photo(seed=4))
    ds = HomographicDataset({"image_dirs": [str(photo_dir / "sub"), str(single), str(single)]})
    assert sorted(p.name for p in ds.files) == ["b.jpg", "single.png"]  # named twice, listed once
    with pytest.raises(FileNotFoundError, match="missing.png"):
        HomographicDataset({"image_dirs": [str(tmp_path / "missing.png")]})
