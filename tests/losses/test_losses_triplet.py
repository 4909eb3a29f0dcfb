"""Hard triplet loss: a hand-computed example, invalid anchors, and a brute-force check."""

import math

import pytest
import torch
import torch.nn.functional as F

from tasp_hloc.grid import cell_centers
from tasp_hloc.losses.triplet import HardTripletLoss


def _row_map(angles):
    """1 x 2 x 1 x w map of unit vectors (cos a, sin a)."""
    a = torch.tensor(angles, dtype=torch.float64)
    return torch.stack([a.cos(), a.sin()])[None, :, None, :]


def _chord(da):
    return 2 * math.sin(abs(da) / 2)  # distance between unit vectors da radians apart


def test_hand_example():
    desc0 = _row_map([0.0, 0.05, 1.0, 2.5, 3.0, 3.0, 3.0, 3.0]).requires_grad_()
    desc1 = _row_map([0.2, 0.1, 3.0, 1.2, 3.0, 0.7, 3.0, 3.0]).requires_grad_()
    data = {
        # anchor 0 at cell 0's centre in both images; anchor 1 is invalid and NaN.
        "kpts0": torch.tensor([[[1.5, 1.5], [float("nan"), 0.0]]], dtype=torch.float64),
        "kpts1": torch.tensor([[[1.5, 1.5], [3.0, float("nan")]]], dtype=torch.float64),
        "valid": torch.tensor([[True, False]]),
    }
    # K = 4 px: cell 1 (centre 4 px away) is inside the window, cells 2.. are negatives.
    loss = HardTripletLoss({"safe_radius": 4.0})
    out = loss(desc0, desc1, data)
    d_pos = _chord(0.2)
    # n1: the closest of b_2..b_7 to a_0 = 0 is b_5 = 0.7 (b_1 = 0.1 is in the window).
    # n0: the closest of a_2..a_7 to b_0 = 0.2 is a_2 = 1.0 (0.8 away).
    d_neg = min(_chord(0.7), _chord(0.8))
    M = 1 + d_pos - d_neg
    assert out["d_pos"][0, 0].item() == pytest.approx(d_pos, abs=1e-6)
    assert out["d_neg"][0, 0].item() == pytest.approx(d_neg, abs=1e-6)
    assert out["loss"][0, 0].item() == pytest.approx(M, abs=1e-6)
    assert out["neg1"][0, 0].tolist() == [21.5, 1.5]  # cell 5
    assert out["neg0"][0, 0].tolist() == [9.5, 1.5]  # cell 2
    assert out["neg_in_1"][0, 0]
    assert out["valid"].tolist() == [[True, False]]
    assert out["loss"][0, 1].item() == 0.0
    out["loss"].sum().backward()
    assert torch.isfinite(desc0.grad).all() and torch.isfinite(desc1.grad).all()
    # Only the anchor, positive and the winning negative cells receive gradient.
    assert desc1.grad[0, :, 0].abs().sum(0).nonzero().flatten().tolist() == [0, 5]
    assert desc0.grad[0, :, 0].abs().sum(0).nonzero().flatten().tolist() == [0]

    # A small margin makes the triplet inactive.
    out = HardTripletLoss({"safe_radius": 4.0, "margin": 0.1})(desc0, desc1, data)
    assert out["loss"][0, 0].item() == 0.0 and out["valid"][0, 0]
    # A window covering everything leaves no negative: flagged invalid, M = 0.
    out = HardTripletLoss({"safe_radius": 100.0})(desc0, desc1, data)
    assert out["valid"].tolist() == [[False, False]] and (out["loss"] == 0).all()


def _brute_force(desc0, desc1, kpts0, kpts1, valid, allowed1, allowed0, margin=1.0):
    """Per-anchor loops; allowed*(b, n, cell) -> bool."""
    b, d, h, w = desc0.shape
    c = cell_centers(h, w, 4, dtype=desc0.dtype)
    M = torch.zeros(b, kpts0.shape[1], dtype=desc0.dtype)

    def sample(dm, p):
        g = ((p + 0.5) / torch.tensor([w * 4, h * 4], dtype=dm.dtype) * 2 - 1).view(1, 1, 1, 2)
        v = F.grid_sample(dm[None], g, align_corners=False, padding_mode="border").flatten()
        return v / v.norm()

    for i in range(b):
        for k in range(kpts0.shape[1]):
            if not valid[i, k]:
                continue
            a0, a1 = sample(desc0[i], kpts0[i, k]), sample(desc1[i], kpts1[i, k])
            dneg = float("inf")
            for cell in range(h * w):
                y, x = divmod(cell, w)
                if allowed1(i, k, cell):
                    dneg = min(dneg, (a0 - desc1[i, :, y, x]).norm().item())
                if allowed0(i, k, cell):
                    dneg = min(dneg, (a1 - desc0[i, :, y, x]).norm().item())
            M[i, k] = max(0.0, margin + (a0 - a1).norm().item() - dneg)
    return M, c


def test_matches_brute_force_square_and_3d():
    g = torch.Generator().manual_seed(0)
    b, d, h, w, n = 2, 8, 6, 6, 5
    desc0 = F.normalize(torch.randn(b, d, h, w, generator=g, dtype=torch.float64), dim=1)
    desc1 = F.normalize(torch.randn(b, d, h, w, generator=g, dtype=torch.float64), dim=1)
    kpts0 = torch.rand(b, n, 2, generator=g, dtype=torch.float64) * 23
    kpts1 = torch.rand(b, n, 2, generator=g, dtype=torch.float64) * 23
    valid = torch.rand(b, n, generator=g) > 0.2
    z1 = torch.tensor([0, 0, 1.0], dtype=torch.float64)  # push depths into [1, 2)
    xyz0 = torch.rand(b, 3, h, w, generator=g, dtype=torch.float64) + z1.view(1, 3, 1, 1)
    xyz1 = torch.rand(b, 3, h, w, generator=g, dtype=torch.float64) + z1.view(1, 3, 1, 1)
    xyz1[0, 2, 1, 1] = 0.0  # one unknown-depth cell
    xk0 = torch.rand(b, n, 3, generator=g, dtype=torch.float64) + torch.tensor([0, 0, 1.0])
    xk1 = torch.rand(b, n, 3, generator=g, dtype=torch.float64) + torch.tensor([0, 0, 1.0])
    data = dict(
        kpts0=kpts0, kpts1=kpts1, valid=valid, xyz_kpts0=xk0, xyz_kpts1=xk1, xyz0=xyz0, xyz1=xyz1
    )
    c = cell_centers(h, w, 4, dtype=torch.float64)
    K, rel = 6.0, 0.5

    def sq(p):
        return lambda i, k, cell: (c[cell] - p[i, k]).abs().max() > K

    def w3(p, xk, xyz):
        def f(i, k, cell):
            y, x = divmod(cell, w)
            X = xyz[i, :, y, x]
            if X[2] <= 0:
                return sq(p)(i, k, cell)
            return (X - xk[i, k]).norm() > rel * xk[i, k, 2]

        return f

    for window in ("square", "3d"):
        conf = {"window": window, "safe_radius": K, "safe_radius_3d_rel": rel}
        out = HardTripletLoss(conf)(desc0, desc1, data)
        if window == "square":
            a1, a0 = sq(kpts1), sq(kpts0)
        else:
            a1, a0 = w3(kpts1, xk1, xyz1), w3(kpts0, xk0, xyz0)
        ref, _ = _brute_force(desc0, desc1, kpts0, kpts1, valid, a1, a0)
        torch.testing.assert_close(out["loss"], ref, atol=1e-9, rtol=0)
        assert (out["loss"] > 0).sum() >= 3  # the check is not vacuous


def test_input_errors():
    loss = HardTripletLoss()
    m = torch.zeros(1, 4, 2, 2)
    with pytest.raises(ValueError, match="B x N x 2"):
        loss(m, m, {"kpts0": torch.zeros(1, 3, 2), "kpts1": torch.zeros(1, 4, 2)})
    with pytest.raises(ValueError, match="Unknown HardTripletLoss options"):
        HardTripletLoss({"radius": 3})
