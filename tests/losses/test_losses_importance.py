"""Dynamic importance weighting: pHash importance, the moving histogram, the weighted loss."""

import imagehash
import numpy as np
import pytest
import torch
from PIL import Image

from tasp_hloc.losses.importance import (
    DynamicImportanceWeighting,
    MovingHistogram,
    intrinsic_importance,
)


def _ref_hash(img, x0, y0):
    crop = img[y0 : y0 + 32, x0 : x0 + 32].astype(np.uint8)
    return imagehash.phash(Image.fromarray(crop, "L"))


def test_intrinsic_importance_and_guard():
    rng = np.random.default_rng(0)
    im0 = rng.integers(0, 256, (64, 96)).astype(np.float64)
    im1 = im0.copy()
    im1[:, 48:] = rng.integers(0, 256, (64, 48))  # right half differs
    t0 = torch.from_numpy(im0)[None, None] / 255
    t1 = torch.from_numpy(im1)[None, None] / 255
    # Points at pixel corners: the patches are exact crops (top-left = point - 15.5).
    p0 = torch.tensor([[[15.5, 15.5], [15.5, 15.5]]], dtype=torch.float64)
    p1 = torch.tensor([[[15.5, 15.5], [16.5, 20.5]]], dtype=torch.float64)
    n1 = torch.tensor([[[63.5, 15.5], [63.5, 31.5]]], dtype=torch.float64)
    out = intrinsic_importance(t0, t1, p0, p1, n1)
    h0 = _ref_hash(im0, 0, 0)
    # Triplet 0: identical positive (v_pos = 0, guarded to 1) -> s = v_neg.
    v_neg0 = h0 - _ref_hash(im1, 48, 0)
    assert out["v_pos"][0, 0].item() == 0
    assert out["v_neg"][0, 0].item() == v_neg0 > 0
    assert out["s"][0, 0].item() == pytest.approx(v_neg0)
    # Triplet 1: both distances from imagehash on the crops.
    v_pos1 = h0 - _ref_hash(im1, 1, 5)
    v_neg1 = h0 - _ref_hash(im1, 48, 16)
    assert out["v_pos"][0, 1].item() == v_pos1 > 0
    assert out["s"][0, 1].item() == pytest.approx(v_neg1 / v_pos1)
    # A stricter guard.
    out2 = intrinsic_importance(t0, t1, p0, p1, n1, v_pos_min=4.0)
    assert out2["s"][0, 0].item() == pytest.approx(v_neg0 / 4.0)


def test_moving_histogram_decay_and_cdf():
    h = MovingHistogram(bins=4, vmin=0.0, vmax=4.0, momentum=0.1)
    assert not bool(h.initialized)
    h.update(torch.tensor([0.5, 1.5, 1.5, 3.5]))  # first batch initialises: [.25, .5, 0, .25]
    torch.testing.assert_close(h.pdf, torch.tensor([0.25, 0.5, 0.0, 0.25]))
    h.update(torch.tensor([]))  # empty batch: no change
    h.update(torch.tensor([2.5, 2.5]))  # 0.9 * old + 0.1 * [0, 0, 1, 0]
    torch.testing.assert_close(h.pdf, torch.tensor([0.225, 0.45, 0.1, 0.225]))
    # CDF = mass up to and including the value's bin; out-of-range values are clipped.
    cdf = h.cdf(torch.tensor([0.1, 1.0, 2.9, 3.99, 10.0, -1.0]))
    torch.testing.assert_close(cdf, torch.tensor([0.225, 0.675, 0.775, 1.0, 1.0, 0.225]))
    # Buffers: saved in the state dict and restored.
    sd = h.state_dict()
    assert set(sd) == {"pdf", "initialized"}
    h2 = MovingHistogram(bins=4, vmin=0.0, vmax=4.0)
    h2.load_state_dict(sd)
    torch.testing.assert_close(h2.pdf, h.pdf)
    assert bool(h2.initialized)


def _diw_inputs():
    rng = np.random.default_rng(1)
    img = torch.from_numpy(rng.random((1, 1, 64, 64)))
    f64 = torch.float64
    p0 = torch.tensor([[[15.5, 15.5], [20.5, 30.5], [40.5, 40.5], [30.5, 18.5]]], dtype=f64)
    p1 = p0 + torch.tensor([1.0, 0.0], dtype=torch.float64)  # small shift: v_pos > 0 mostly
    n1 = torch.tensor([[[47.5, 47.5], [45.5, 16.5], [16.5, 45.5], [48.5, 30.5]]], dtype=f64)
    return img, p0, p1, n1


def test_diw_weights_loss_and_gradient():
    img, p0, p1, n1 = _diw_inputs()
    M = torch.tensor([[0.0, 0.5, 1.5, 0.8]], dtype=torch.float64, requires_grad=True)
    valid = torch.tensor([[True, True, True, False]])
    diw = DynamicImportanceWeighting({"hist_bins": 64, "hist_max": 8.0}).train()
    out = diw(M, valid, img, img, p0, p1, n1)
    s = out["s"]
    assert s[0, 3] == 0 and (s[0, :3] > 0).all()
    # Independent histogram of x = s * M over the 3 valid triplets (bins of width 1/8).
    x = (s * M).detach()[0, :3].numpy()
    counts = np.bincount(np.clip((x * 8).astype(int), 0, 63), minlength=64) / 3
    cdf = np.cumsum(counts)[np.clip((x * 8).astype(int), 0, 63)]
    assert out["w"][0, 0] == 0  # M = 0 -> w = 0
    assert out["w"][0, 3] == 0  # invalid
    np.testing.assert_allclose(out["w"][0, 1:3].numpy(), cdf[1:3])
    # Here x = (0, ~1.9, ~3.2): one third of the mass in bin 0, then one third per triplet.
    assert out["w"][0, 1:3].tolist() == pytest.approx([2 / 3, 1.0])
    w = out["w"].detach()
    expect = (w * s * M.detach())[0, :3].sum() / 3
    assert out["loss"].shape == (1,)
    assert out["loss"].item() == pytest.approx(expect.item())
    # No gradient through w (or s): dL/dM = w * s / n_valid exactly.
    out["loss"].sum().backward()
    torch.testing.assert_close(M.grad, (w * s / 3).masked_fill(~valid, 0))
    assert not out["w"].requires_grad and not out["s"].requires_grad


def test_histogram_updates_only_when_training_and_allowed():
    img, p0, p1, n1 = _diw_inputs()
    M = torch.tensor([[0.2, 0.5, 1.5, 0.8]], dtype=torch.float64)
    valid = torch.ones(1, 4, dtype=torch.bool)
    diw = DynamicImportanceWeighting()
    diw.eval()
    out = diw(M, valid, img, img, p0, p1, n1)
    assert not bool(diw.histogram.initialized) and diw.histogram.pdf.sum() == 0
    # An empty histogram in eval: the batch's own histogram gives the weights (max -> 1).
    assert out["w"].max().item() == pytest.approx(1.0)
    diw.train()
    diw(M, valid, img, img, p0, p1, n1, update=False)
    assert not bool(diw.histogram.initialized)
    diw(M, valid, img, img, p0, p1, n1)
    assert bool(diw.histogram.initialized)
    before = diw.histogram.pdf.clone()
    diw.eval()
    diw(M * 3, valid, img, img, p0, p1, n1, update=True)  # eval wins over update=True
    assert torch.equal(diw.histogram.pdf, before)
    # Default range: 64 * (margin + 2) = 192 for m = 1.
    assert diw.histogram.vmax == 192.0 and diw.histogram.bins == 8192
