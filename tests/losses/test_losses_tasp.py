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
    "subpx",
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


def test_subpixel_loss_by_hand():
    from tasp_hloc.losses import SubpixelReprojectionLoss

    heat = torch.zeros(1, 16, 24, requires_grad=True)
    with torch.no_grad():
        heat[0, 5, 10] = 1.0  # pixel (x 10, y 5) and its right neighbour share the mass:
        heat[0, 5, 11] = 1.0  # the 3 x 3 soft-argmax around (10, 5) is (10.5, 5.0)
    kpts1 = torch.tensor([[[10.3, 5.0], [10.3, 5.0], [30.0, 5.0]]])
    valid = torch.tensor([[True, False, True]])  # an invalid point, and one outside the image
    out = SubpixelReprojectionLoss()(heat, kpts1, valid)
    assert out["loss"].item() == pytest.approx(0.2**2, abs=1e-6)
    assert out["error"].item() == pytest.approx(0.2, abs=1e-6)
    out["loss"].sum().backward()
    # more mass on (10, 5) pulls the estimate left, towards 10.3: the gradient there is negative
    assert heat.grad[0, 5, 10] < 0 < heat.grad[0, 5, 11]
    none = SubpixelReprojectionLoss()(heat.detach(), kpts1, torch.zeros(1, 3, dtype=torch.bool))
    assert none["loss"].item() == 0 and none["error"].item() == 0
    with pytest.raises(ValueError, match="valid"):
        SubpixelReprojectionLoss()(heat, kpts1, valid[:, :2])


def test_tasp_loss_adds_the_subpixel_term_only_when_asked():
    from tasp_hloc.losses import SubpixelReprojectionLoss
    from tasp_hloc.model.keypoints import logits_to_heatmap

    data = _make_data()
    raw0, raw1, logits = _make_pred()
    pred0, pred1 = _preds(raw0, raw1, logits)
    off = TaSPLoss({"importance_weighting": False}).train()(pred0, pred1, data)
    assert (off["subpx"] == 0).all()
    on = TaSPLoss({"importance_weighting": False, "lambda_subpixel": 0.5}).train()(
        pred0, pred1, data
    )
    mask = data.get("valid", torch.ones_like(data["is_label"])).bool() & data["is_label"].bool()
    sub = SubpixelReprojectionLoss()(logits_to_heatmap(pred1["logits"]), data["kpts1"], mask)
    torch.testing.assert_close(on["total"], off["total"] + 0.5 * sub["loss"])
    torch.testing.assert_close(on["subpx"], sub["error"])
    assert (on["subpx"] > 0).all()
    with pytest.raises(KeyError, match="missing inputs .*pred1.*logits"):
        TaSPLoss({"lambda_subpixel": 0.5, "importance_weighting": False})(
            pred0, {"descriptors_dense": pred1["descriptors_dense"]}, data
        )
