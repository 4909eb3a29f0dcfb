import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tasp_hloc.data.synthetic import SyntheticDataset, SyntheticScenes, cast_rays, render_depth

SMALL = {"size": 128, "num_samples": 6, "seed": 3, "procedural_pool": 8, "texture_size": 128}


@pytest.fixture(scope="module")
def samples():
    ds = SyntheticScenes(SMALL)
    return [ds.sample(i, return_scene=True) for i in range(4)]


def project(X_cam, K):
    uv = X_cam @ K.T
    return uv[:, :2] / uv[:, 2:], uv[:, 2]


def points0(s, step=3):
    """View-0 pixel centres (grid), their world points (float64) and the camera-1 centre."""
    d0 = s["depth0"].double()
    h, w = d0.shape
    y, x = torch.meshgrid(torch.arange(1, h - 1, step), torch.arange(1, w - 1, step), indexing="ij")
    x, y = x.reshape(-1), y.reshape(-1)
    z = d0[y, x]
    p = torch.stack([x, y, torch.ones_like(x)], -1).double()
    X0 = (p @ torch.linalg.inv(s["K0"].double()).T) * z[:, None]
    T0inv = torch.linalg.inv(s["T_cam_from_world0"])
    Xw = X0 @ T0inv[:3, :3].T + T0inv[:3, 3]
    return x, y, X0, Xw


def test_format(samples):
    ds = SyntheticScenes(SMALL)
    s = ds[0]
    assert SyntheticDataset is SyntheticScenes and len(ds) == 6
    for k in ("image0", "image1"):
        assert s[k].shape == (3, 128, 128) and s[k].dtype == torch.float32
        assert 0 <= s[k].min() and s[k].max() <= 1
    for k in ("depth0", "depth1"):
        assert s[k].shape == (128, 128) and s[k].dtype == torch.float32 and s[k].min() > 0
    assert s["valid0"].dtype == torch.bool and s["valid0"].all() and s["valid1"].all()
    assert s["K0"].shape == (3, 3) and s["T_1from0"].shape == (4, 4)
    assert torch.equal(s["H_1from0"], torch.eye(3)) and not bool(s["is_homography"])
    R = s["T_1from0"][:3, :3]
    assert torch.allclose(R @ R.T, torch.eye(3), atol=1e-5)
    assert s["T_1from0"][:3, 3].norm() > 0.02  # parallax
    assert isinstance(s["name"], str)
    with pytest.raises(KeyError, match="texture_dr"):
        SyntheticScenes({"texture_dr": "x"})


def test_depth_is_exact(samples):
    for s in samples:
        scene = s["scene"]
        for v in "01":
            K, T = s["K" + v].double(), s["T_cam_from_world" + v]
            quad = render_depth(scene, K, T, (128, 128))["quad"]
            d = s["depth" + v].double()
            y, x = torch.meshgrid(torch.arange(128), torch.arange(128), indexing="ij")
            p = torch.stack([x, y, torch.ones_like(x)], -1).reshape(-1, 3).double()
            X = (p @ torch.linalg.inv(K).T) * d.reshape(-1, 1)
            Tinv = torch.linalg.inv(T)
            Xw = X @ Tinv[:3, :3].T + Tinv[:3, 3]
            q = quad.reshape(-1)
            rel = Xw - scene["origin"][q]
            n = torch.cross(scene["u"][q], scene["v"][q], dim=-1)
            assert (rel * n).sum(-1).abs().max() < 1e-5  # on the plane of the surface it hit
            su, sv = (rel * scene["u"][q]).sum(-1), (rel * scene["v"][q]).sum(-1)
            ext = scene["extent"][q]
            assert (su > -1e-5).all() and (su < ext[:, 0] + 1e-5).all()  # inside the quad
            assert (sv > -1e-5).all() and (sv < ext[:, 1] + 1e-5).all()


def visibility(s, Xw):
    """Ground truth: is each world point the first thing camera 1 sees along its ray?"""
    T1 = s["T_cam_from_world1"]
    c1 = -T1[:3, :3].T @ T1[:3, 3]
    hit = cast_rays(s["scene"], c1, Xw - c1)  # t = 1 at the point itself
    return hit["t"] > 1 - 1e-6


def test_pose_reprojects_onto_same_colour(samples):
    errs, base = [], []
    for s in samples:
        x, y, X0, Xw = points0(s)
        T = s["T_1from0"].double()
        uv, z1 = project(X0 @ T[:3, :3].T + T[:3, 3], s["K1"].double())
        inside = (uv >= 2).all(1) & (uv[:, 0] <= 125) & (uv[:, 1] <= 125) & (z1 > 0)
        ok = inside & visibility(s, Xw)
        # skip silhouettes and quad edges, where a pixel mixes two surfaces
        q0 = render_depth(s["scene"], s["K0"].double(), s["T_cam_from_world0"], (128, 128))["quad"]
        qf = q0[None, None].double()
        flat = (F.max_pool2d(qf, 5, 1, 2) == -F.max_pool2d(-qf, 5, 1, 2))[0, 0]
        ok &= flat[y, x]
        grid = (uv[ok] / 127 * 2 - 1).float().view(1, 1, -1, 2)
        c1 = F.grid_sample(s["image1"][None], grid, align_corners=True)[0, :, 0].T
        c0 = s["image0"][:, y[ok], x[ok]].T
        errs.append((c1 - c0).abs().mean(1))
        base.append(
            (c1 - c0[torch.randperm(len(c0), generator=torch.Generator().manual_seed(0))])
            .abs()
            .mean(1)
        )
    err, rnd = torch.cat(errs).mean(), torch.cat(base).mean()
    print(f"photometric error {err:.4f} vs random {rnd:.4f}")
    assert len(torch.cat(errs)) > 500
    assert err < 0.04 and err < rnd / 4


def test_occlusions_found_by_depth_check(samples):
    agree, n_occ, n = 0, 0, 0
    for s in samples:
        _, _, X0, Xw = points0(s)
        T = s["T_1from0"].double()
        uv, z1 = project(X0 @ T[:3, :3].T + T[:3, 3], s["K1"].double())
        inside = (uv >= 0).all(1) & (uv <= 127).all(1) & (z1 > 0)
        uv, z1, Xw = uv[inside], z1[inside], Xw[inside]
        occluded = ~visibility(s, Xw)
        d1 = s["depth1"].double()[uv[:, 1].round().long(), uv[:, 0].round().long()]
        check = d1 < z1 * (1 - 0.03)  # what a training loss would do with the depth map
        agree += int((check == occluded).sum())
        n_occ += int(occluded.sum())
        n += len(occluded)
    print(f"occluded {n_occ / n:.3f} of in-frame points, depth check agrees on {agree / n:.4f}")
    assert n_occ / n > 0.01  # the scenes do have occlusions
    assert agree / n > 0.97


def test_seeds_reproduce():
    tiny = {**SMALL, "size": 64, "procedural_pool": 4, "texture_size": 64}
    a, b = SyntheticScenes(tiny), SyntheticScenes(tiny)
    s1, s2, s3 = a[1], b[1], a[2]
    for k in ("image0", "image1", "depth0", "depth1", "K0", "K1", "T_1from0"):
        assert torch.equal(s1[k], s2[k]), k
    assert not torch.equal(s1["depth0"], s3["depth0"])
    a.set_epoch(1)
    assert torch.equal(a[1]["depth0"], s1["depth0"])  # same scenes: cached labels stay valid
    c = SyntheticScenes({**tiny, "new_scenes_each_epoch": True})
    c.set_epoch(1)
    assert not torch.equal(c[1]["depth0"], s1["depth0"])


def test_photo_textures(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"p{i}.png"), rng.integers(0, 255, (80, 100, 3), dtype=np.uint8))
    s = SyntheticScenes({**SMALL, "texture_dir": str(tmp_path)})[0]
    assert s["image0"].std() > 0.05
    with pytest.raises(FileNotFoundError, match="texture_dir"):
        SyntheticScenes({"texture_dir": str(tmp_path / "nope")})


def test_the_package_names_its_parts():
    # one concept, one package: the scenes, the ray casting and the textures under one name
    from tasp_hloc.data import synthetic
    from tasp_hloc.data.synthetic import render, scenes, textures

    for name in ("cast_rays", "pixel_rays", "render_depth", "render_color"):
        assert getattr(synthetic, name) is getattr(render, name)
    assert synthetic.procedural_textures is textures.procedural_textures
    assert synthetic.SyntheticScenes is scenes.SyntheticScenes
    assert all(hasattr(synthetic, name) for name in synthetic.__all__)
