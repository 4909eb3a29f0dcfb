"""Batched pHash: bit-for-bit against imagehash, patch extraction geometry, Hamming."""

import imagehash
import numpy as np
import pytest
import scipy.fftpack
import torch
from PIL import Image

from tasp_hloc.losses.phash import extract_patches, hamming, phash


def _patches(rng):
    """150 random + 50 structured uint8 32 x 32 patches, none with a tie at the median."""
    out = []
    for k in range(150):
        if k % 3 == 0:  # uniform noise
            p = rng.integers(0, 256, (32, 32))
        elif k % 3 == 1:  # low contrast around a random level
            p = rng.integers(0, 12, (32, 32)) + rng.integers(0, 240)
        else:  # smooth noise (blurred by a box filter)
            n = rng.normal(size=(36, 36))
            p = sum(n[i : i + 32, j : j + 32] for i in range(5) for j in range(5))
            p = (p - p.min()) / np.ptp(p) * 255
        out.append(p)
    yy, xx = np.mgrid[0:32, 0:32].astype(float)
    for k in range(50):
        kind = k % 5
        f, ph = rng.uniform(0.05, 0.8), rng.uniform(0, 6.3)
        if kind == 0:  # oriented stripes
            a = rng.uniform(0, np.pi)
            p = 127.5 + 120 * np.sin(f * (np.cos(a) * xx + np.sin(a) * yy) + ph)
        elif kind == 1:  # checkerboard of random period
            s = rng.integers(2, 9)
            p = 200.0 * (((xx // s) + (yy // s)) % 2) + 20
        elif kind == 2:  # disc on a background
            cx, cy, r = rng.uniform(5, 27, 2).tolist() + [rng.uniform(3, 14)]
            p = np.where((xx - cx) ** 2 + (yy - cy) ** 2 < r * r, 230.0, 30.0)
        elif kind == 3:  # linear ramp
            p = rng.uniform(-4, 4) * xx + rng.uniform(-4, 4) * yy + 128
        else:  # corner (two half-planes)
            p = np.where((xx > rng.integers(4, 28)) & (yy > rng.integers(4, 28)), 250.0, 10.0)
        # A little noise breaks the exact ties that symmetric patterns give (there the
        # reference bits themselves are floating-point noise).
        out.append(p + rng.normal(0, 2, (32, 32)))
    return np.stack([np.clip(np.round(p), 0, 255).astype(np.uint8) for p in out])


def test_phash_matches_imagehash_bit_for_bit():
    patches = _patches(np.random.default_rng(0))
    ref = np.stack([imagehash.phash(Image.fromarray(p, "L")).hash.flatten() for p in patches])
    # The reference must be well defined: no coefficient within 1e-6 of the median.
    coef = scipy.fftpack.dct(scipy.fftpack.dct(patches.astype(float), axis=1), axis=2)[:, :8, :8]
    coef = coef.reshape(len(patches), 64)
    gap = np.abs(coef - np.median(coef, axis=1, keepdims=True)).min(1)
    assert (gap > 1e-6).all()

    ours = phash(torch.from_numpy(patches)).numpy()
    assert ours.shape == (200, 64) and ours.dtype == bool
    np.testing.assert_array_equal(ours, ref)
    # float32 (the fast path) is off by at most a few near-tie bits.
    ours32 = phash(torch.from_numpy(patches).float(), dtype=torch.float32).numpy()
    assert (ours32 != ref).sum() <= 5
    # Median split: 32 ones per hash when there is no tie.
    assert (ours.sum(1) == 32).all()


def test_phash_batch_shape_and_scale_invariance():
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    h = phash(x)
    assert h.shape == (2, 3, 64)
    assert torch.equal(phash(x * 255.0 + 7.0), h)  # affine intensity change keeps the bits
    with pytest.raises(ValueError, match="32 x 32"):
        phash(torch.rand(4, 16, 16))


def test_extract_patches_is_exact_crop_at_pixel_corners():
    rng = np.random.default_rng(1)
    img = torch.from_numpy(rng.integers(0, 256, (2, 1, 48, 64)).astype(np.float64))
    # Centre (x, y) = (15.5 + ox, 15.5 + oy): the patch is img[oy:oy+32, ox:ox+32].
    pts = torch.tensor([[[15.5, 15.5], [25.5, 15.5]], [[47.5, 15.5], [20.5, 16.5]]]).double()
    p = extract_patches(img, pts)
    assert p.shape == (2, 2, 32, 32)
    torch.testing.assert_close(p[0, 0], img[0, 0, 0:32, 0:32])
    torch.testing.assert_close(p[0, 1], img[0, 0, 0:32, 10:42])
    torch.testing.assert_close(p[1, 0], img[1, 0, 0:32, 32:64])
    torch.testing.assert_close(p[1, 1], img[1, 0, 1:33, 5:37])
    # ... so its hash is imagehash's hash of that crop.
    crop = img[0, 0, 0:32, 10:42].numpy().astype(np.uint8)
    ref = imagehash.phash(Image.fromarray(crop, "L")).hash.flatten()
    np.testing.assert_array_equal(phash(p[0, 1]).numpy(), ref)


def test_extract_patches_bilinear_ramp_luma_and_border():
    h, w = 64, 80
    yy, xx = torch.meshgrid(torch.arange(h).double(), torch.arange(w).double(), indexing="ij")
    ramp = xx + 100 * yy
    # RGB whose luma (0.299, 0.587, 0.114) is the ramp.
    img = torch.stack([ramp, ramp, ramp])[None]
    pts = torch.tensor([[[30.25, 31.75]]], dtype=torch.float64)
    p = extract_patches(img, pts, size=4)
    # Sample (i, j) at (30.25 + j - 1.5, 31.75 + i - 1.5); bilinear is exact on a ramp.
    j = torch.arange(4, dtype=torch.float64)
    expect = (30.25 + j - 1.5)[None, :] + 100 * (31.75 + j - 1.5)[:, None]
    torch.testing.assert_close(p[0, 0], expect)
    # extent 8 with 4 samples: spacing 2 pixels.
    p2 = extract_patches(img, pts, size=4, extent=8)
    expect2 = (30.25 + 2 * (j - 1.5))[None, :] + 100 * (31.75 + 2 * (j - 1.5))[:, None]
    torch.testing.assert_close(p2[0, 0], expect2)
    # Outside the image the border pixel is repeated: a patch at the top-left corner.
    p3 = extract_patches(img, torch.zeros(1, 1, 2, dtype=torch.float64), size=4)
    torch.testing.assert_close(p3[0, 0, 0, 0], torch.tensor(0.0, dtype=torch.float64))
    torch.testing.assert_close(p3[0, 0, 3, 3], torch.tensor(1.5 + 150.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="C = 1 or 3"):
        extract_patches(torch.rand(1, 2, 8, 8), pts.float())


def test_hamming():
    a = torch.zeros(2, 64, dtype=torch.bool)
    b = a.clone()
    b[0, :5] = True
    b[1, ::2] = True
    assert hamming(a, b).tolist() == [5, 32]
    assert hamming(b, b).tolist() == [0, 0]
