"""Labels of a source photo moved into training crops, and the sample sources they rely on."""

import cv2
import numpy as np
import pytest
import torch

from tasp_hloc.data.homographic import HomographicDataset
from tasp_hloc.data.view_pair import ViewPairSampler
from tasp_hloc.train.labeled import transform_keypoints


def _dot_photo(h, w, x, y):
    """A Gaussian blob (sigma 2 px, peak ~190, unsaturated) centred on pixel (x, y)."""
    photo = np.zeros((h, w, 3), np.float32)
    photo[y, x] = 255 * 2 * np.pi * 4 * 0.75
    return np.clip(cv2.GaussianBlur(photo, (0, 0), 2.0), 0, 255).astype(np.uint8)


def _brightest(image0: torch.Tensor):
    """Intensity centroid of the blob (sub-pixel), and its peak value."""
    gray = image0.mean(0).double()
    gray = gray * (gray > 0.2 * gray.max())
    ys, xs = torch.meshgrid(torch.arange(gray.shape[0]), torch.arange(gray.shape[1]), indexing="ij")
    c = np.array([(gray * xs).sum() / gray.sum(), (gray * ys).sum() / gray.sum()])
    return c, float(gray.max())


def test_homographic_source_transform_tracks_a_pixel(tmp_path):
    x, y = 151, 97
    cv2.imwrite(str(tmp_path / "dot.png"), _dot_photo(200, 300, x, y))
    ds = HomographicDataset(
        {
            "image_dirs": [str(tmp_path)],
            "size": [64, 64],
            "short_side": [150, 150],
            "seed": 0,
            "epoch_size": 40,
        }
    )
    checked = 0
    for i in range(40):
        s = ds[i]
        p = transform_keypoints(
            torch.tensor([[x, y]], dtype=torch.float32), s["source0_to_image0"]
        )[0].numpy()
        if not (8 < p[0] < 56 and 8 < p[1] < 56):
            continue
        found, value = _brightest(s["image0"])
        assert value > 0.05
        assert np.abs(found - p).max() <= 0.25, (i, found, p)
        checked += 1
    assert checked >= 3 and s["source0"].endswith("dot.png")


def test_view_pair_source_transform_composes_resize_and_crop():
    h, w, x, y = 120, 160, 101, 57
    photo = _dot_photo(h, w, x, y)
    K = np.array([[100.0, 0, 79.5], [0, 100.0, 59.5], [0, 0, 1]])
    view = {
        "image": photo,
        "depth": np.ones((h, w), np.float32),
        "K": K,
        "path": "dot.png",
        "source_to_view": np.eye(3),
    }
    sampler = ViewPairSampler({"size": [48, 48], "resize_max": 100, "jitter": 0.0})
    checked = 0
    for seed in range(30):  # crops are centred on random valid pixels: check those holding the dot
        s = sampler(view, view, np.eye(4), np.random.default_rng(seed), "dot")
        p = transform_keypoints(
            torch.tensor([[x, y]], dtype=torch.float32), s["source0_to_image0"]
        )[0].numpy()
        if 8 < p[0] < 40 and 8 < p[1] < 40:
            found, _ = _brightest(s["image0"])
            assert np.abs(found - p).max() <= 0.25, (found, p)
            checked += 1
    assert checked >= 2
    # K must agree with the same map: the principal point moves like any pixel.
    c = transform_keypoints(torch.tensor([[79.5, 59.5]]), s["source0_to_image0"])[0]
    assert torch.allclose(c, s["K0"][:2, 2], atol=1e-4)


def test_view_pair_scale_range_resizes_view1_log_uniformly():
    h, w = 120, 160
    K = np.array([[100.0, 0, 79.5], [0, 100.0, 59.5], [0, 0, 1]])
    view = {"image": _dot_photo(h, w, 80, 60), "depth": np.ones((h, w), np.float32), "K": K}
    sampler = ViewPairSampler({"size": [48, 48], "scale_range": [0.5, 2.0], "jitter": 0.0})
    zooms = [sampler.zoom(np.random.default_rng(seed)) for seed in range(400)]
    assert 0.5 <= min(zooms) and max(zooms) <= 2.0
    assert abs(np.mean(np.log(zooms))) < 0.07  # log-uniform: as many shrunk as enlarged
    for seed in range(5):
        zoom = sampler.zoom(np.random.default_rng(seed))
        s = sampler(view, view, np.eye(4), np.random.default_rng(seed), "dot")
        # view 1 is resized by the factor (rounded to whole pixels), view 0 is not
        ratio = float(s["K1"][0, 0] / s["K0"][0, 0])
        expected = max(zoom, 48 / h)  # the crop must still fit
        assert abs(ratio - expected) < 0.01 * expected, (ratio, zoom)
    with_none = ViewPairSampler({"size": [48, 48], "jitter": 0.0})
    assert with_none.zoom(np.random.default_rng(0)) == 1.0
    with pytest.raises(ValueError, match="scale_range"):
        ViewPairSampler({"size": [48, 48], "scale_range": [2.0, 0.5]})
