"""TaSPLoss end to end: all 8 switch combinations, gradients, optimisation, checkpoints."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from tasp_hloc.losses import TaSPLoss

H = W = 32
F_PX, CX, CY = 40.0, 15.5, 15.5


def _backproject(uv, z):
    """Pinhole back-projection of pixels (... x 2) at depths (...)."""
    return torch.stack([(uv[..., 0] - CX) / F_PX * z, (uv[..., 1] - CY) / F_PX * z, z], -1)


def _make_data(b=2, n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Labelled anchors at integer keypoint pixels, then grid anchors.
    kpts0 = torch.randint(2, 30, (b, n, 2), generator=g).float()
    kpts1 = kpts0 + torch.tensor([1.5, -0.5])  # a small translation between the views
    valid = torch.ones(b, n, dtype=torch.bool)
    valid[:, -1] = False
    is_label = torch.zeros(b, n, dtype=torch.bool)
    is_label[:, :3] = True
    labels0 = torch.full((b, H // 8, W // 8), 64, dtype=torch.long)
    for i in range(b):
        for k in range(3):
            x, y = kpts0[i, k].long().tolist()
            labels0[i, y // 8, x // 8] = (y % 8) * 8 + x % 8
    z0 = 2.0 + 0.5 * torch.rand(b, n, generator=g)
    ii, jj = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    cells = torch.stack([jj, ii], -1) * 4 + 1.5  # cell centres (x, y)
    zmap = 2.0 + 0.5 * torch.rand(b, 8, 8, generator=g)
    xyz0 = _backproject(cells[None], zmap).permute(0, 3, 1, 2).contiguous()
    xyz1 = xyz0.clone()
    xyz1[:, :, 2, 3] = float("nan")  # a depth hole
    return {
        "image0": torch.rand(b, 3, H, W, generator=g),
        "image1": torch.rand(b, 1, H, W, generator=g),
        "kpts0": kpts0,
        "kpts1": kpts1,
        "valid": valid,
        "is_label": is_label,
        "labels0": labels0,
        "label_mask0": torch.ones(b, H // 8, W // 8, dtype=torch.bool),
        "xyz_kpts0": _backproject(kpts0, z0),
        "xyz_kpts1": _backproject(kpts1, z0),
        "xyz0": xyz0,
        "xyz1": xyz1,
    }


def _make_pred(b=2, d=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    raw0 = torch.randn(b, d, H // 4, W // 4, generator=g, requires_grad=True)
    raw1 = torch.randn(b, d, H // 4, W // 4, generator=g, requires_grad=True)
    logits = torch.randn(b, 65, H // 8, W // 8, generator=g, requires_grad=True)
    return raw0, raw1, logits


def _preds(raw0, raw1, logits):
    return (
        {"descriptors_dense": F.normalize(raw0, dim=1), "logits": logits},
        {"descriptors_dense": F.normalize(raw1, dim=1), "logits": logits.detach()},
    )


KEYS = {
    "total",
    "desc",
    "kpt",
    "d_pos",
    "d_neg",
    "triplet",
    "w",
    "s",
    "active",
    "n_valid",
    "delta",
    "aligned",
}


SWITCHES = list(itertools.product([False, True], [False, True], ["square", "3d"]))


@pytest.mark.parametrize("ta,diw,window", SWITCHES)
def test_all_switch_combinations(ta, diw, window):
    data = _make_data()
    raw0, raw1, logits = _make_pred()
    loss = TaSPLoss({"task_aligned": ta, "importance_weighting": diw, "window": window}).train()
    out = loss(*_preds(raw0, raw1, logits), data)
    assert set(out) == KEYS
    for k, v in out.items():
        assert v.shape == (2,), k
        assert torch.isfinite(v).all(), k
    torch.testing.assert_close(out["total"], out["desc"] + 1e-3 * out["kpt"])
    assert (out["n_valid"] == 7).all()
    assert (out["triplet"] > 0).all()  # random descriptors: active triplets
    if not diw:
        torch.testing.assert_close(out["desc"], out["triplet"])  # plain mean(M)
        assert (out["w"] == 1).all() and (out["s"] == 1).all()
    if not ta:
        assert (out["delta"] == 1).all()
    else:
        assert (out["aligned"] == 1).all()  # every labelled anchor is valid
    # Backward reaches the descriptors and the logits.
    out["total"].sum().backward()
    for t in (raw0, raw1, logits):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_optimising_descriptors_lowers_the_loss():
    torch.manual_seed(0)
    data = _make_data(seed=3)
    raw0, raw1, logits = _make_pred(seed=4)
    loss = TaSPLoss({"window": "3d"}).train()
    opt = torch.optim.Adam([raw0, raw1], lr=0.05)
    history = []
    for _ in range(15):
        out = loss(*_preds(raw0, raw1, logits), data)
        history.append(out["triplet"].mean().item())
        opt.zero_grad()
        out["total"].sum().backward()
        opt.step()
    assert history[-1] < 0.7 * history[0]


def test_checkpoint_keys_histogram_and_errors():
    keys = {
        tuple(sorted(TaSPLoss({"importance_weighting": d, "window": w}).state_dict()))
        for d in (False, True)
        for w in ("square", "3d")
    }
    assert keys == {("importance.histogram.initialized", "importance.histogram.pdf")}
    data = _make_data()
    raw0, raw1, logits = _make_pred()
    loss = TaSPLoss().eval()
    loss(*_preds(raw0, raw1, logits), data)
    assert not bool(loss.importance.histogram.initialized)  # eval: no update
    loss.train()
    loss(*_preds(raw0, raw1, logits), data, update_histogram=False)
    assert not bool(loss.importance.histogram.initialized)
    loss(*_preds(raw0, raw1, logits), data)
    assert bool(loss.importance.histogram.initialized)
    assert loss.importance.histogram.pdf.sum().item() == pytest.approx(1.0)

    del data["xyz0"]
    with pytest.raises(KeyError, match="xyz0"):
        TaSPLoss({"window": "3d"})(*_preds(raw0, raw1, logits), data)
    with pytest.raises(ValueError, match="Unknown TaSPLoss options"):
        TaSPLoss({"lambda": 1.0})
