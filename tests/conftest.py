import importlib.util

import cv2
import h5py
import numpy as np
import pytest
import torch

from tasp_hloc.data.geometry import warp_points

HAS_HLOC = importlib.util.find_spec("hloc") is not None
requires_hloc = pytest.mark.skipif(
    not HAS_HLOC, reason="hloc is not installed (not on PyPI; see README 'Use it from hloc')"
)


def render_scene(h: int, w: int, seed: int) -> np.ndarray:
    """A textured RGB picture with corners and blobs, so detectors find something."""
    rng = np.random.default_rng(seed)
    image = np.full((h, w, 3), 40, np.uint8)
    for _ in range(12):
        x0, y0 = rng.integers(0, w - 8), rng.integers(0, h - 8)
        x1, y1 = x0 + rng.integers(6, w // 2), y0 + rng.integers(6, h // 2)
        cv2.rectangle(
            image, (int(x0), int(y0)), (int(x1), int(y1)), rng.integers(60, 255, 3).tolist(), -1
        )
    for _ in range(8):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(image, c, int(rng.integers(3, 12)), rng.integers(0, 255, 3).tolist(), -1)
    return cv2.GaussianBlur(image, (3, 3), 0)


def write_photos(folder, n: int = 4, h: int = 160, w: int = 200):
    """``n`` rendered photos ``p0.png``... in a new ``folder`` (training-data tests)."""
    folder.mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"p{i}.png"), render_scene(h, w, i))
    return folder


def h5_contents(path):
    """{dataset path: (array, dtype, attributes)} of an HDF5 file."""
    out = {}
    with h5py.File(path, "r") as fd:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = (obj[()], obj.dtype, dict(obj.attrs))

        fd.visititems(visit)
    return out


def assert_same_file(a, b):
    """The same datasets with the same values, dtypes and attributes."""
    ca, cb = h5_contents(a), h5_contents(b)
    assert sorted(ca) == sorted(cb)
    for key in ca:
        (va, ta, aa), (vb, tb, ab) = ca[key], cb[key]
        assert ta == tb and np.array_equal(va, vb), key
        assert aa.keys() == ab.keys() and all(np.array_equal(aa[k], ab[k]) for k in aa), key


@pytest.fixture
def image_dir(tmp_path):
    """Three small RGB images, one in a sub-folder, of odd sizes."""
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    cv2.imwrite(str(root / "a.png"), render_scene(97, 131, 0))
    cv2.imwrite(str(root / "b.jpg"), render_scene(120, 90, 1))
    cv2.imwrite(str(root / "sub" / "c.png"), render_scene(64, 64, 2))
    return root


@pytest.fixture
def tiny_conf():
    """The Aachen preset with an untrained network and a small resize, for speed."""
    from tasp_hloc.hloc.confs import get_preset

    conf = get_preset("tasp_aachen", weights=None, max_keypoints=64)
    conf["preprocessing"]["resize_max"] = 100
    return conf


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def texture_error(batch):
    """Mean |colour(p0) - colour(warp(p0))| over valid grid points, the same for shuffled
    points (a baseline), and the valid fraction: correspondences must land on the same texture."""
    b, _, h, w = batch["image0"].shape
    ys, xs = torch.meshgrid(torch.arange(2, h - 2, 2.0), torch.arange(2, w - 2, 2.0), indexing="ij")
    kp0 = torch.stack([xs.flatten(), ys.flatten()], -1)[None].expand(b, -1, -1)
    kp1, valid, _, _ = warp_points(kp0, batch)
    v0 = batch["image0"][:, :, kp0[0, :, 1].long(), kp0[0, :, 0].long()]
    grid = kp1 / torch.tensor([w - 1.0, h - 1.0]) * 2 - 1
    v1 = torch.nn.functional.grid_sample(batch["image1"], grid[:, None], align_corners=True)[
        :, :, 0
    ]
    err = (v0 - v1).abs().mean(1)[valid].mean()
    base = (v0 - v1[..., torch.randperm(v1.shape[-1])]).abs().mean(1)[valid].mean()
    return float(err), float(base), float(valid.float().mean())
