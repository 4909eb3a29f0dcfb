"""CPU inference modes: folded BatchNorm / fused kernels (exact), bf16 and int8 (close), the
fallbacks where the CPU lacks them, the rebuild when weights change, and the faster NMS."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from tasp_hloc.model import inference
from tasp_hloc.model.backbone import ConvBNAct
from tasp_hloc.model.keypoints import max_filter, nms, remove_borders
from tasp_hloc.model.tasp import TaSP

from conftest import render_scene


def randomise_batchnorm(model: torch.nn.Module) -> None:
    """Non-trivial running statistics and affine terms, so that folding is really tested."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.3, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


def photo(h=88, w=122, seed=0) -> torch.Tensor:
    image = torch.from_numpy(render_scene(h, w, seed)).permute(2, 0, 1)[None]
    return image.float() / 255


def dense(model, image):
    with torch.inference_mode():
        return model.forward_dense(image)


def twins(backbone="efficientnet_lite0", weights=None, **conf):
    """A reference (plain modules, fp32) and a model with ``conf``, same weights."""
    ref = TaSP({"weights": weights, "backbone": backbone, "amp": None, "fuse": False}).eval()
    if weights is None:
        randomise_batchnorm(ref)
    model = TaSP({"weights": weights, "backbone": backbone, **conf}).eval()
    model.load_state_dict(ref.state_dict())
    return ref, model


def desc_cos(a, b):
    return (a["descriptors_dense"] * b["descriptors_dense"]).sum(1)


@pytest.mark.parametrize("onednn", [True, False])
@pytest.mark.parametrize(
    "stride,groups,act", [(1, 1, torch.nn.ReLU6), (2, 8, torch.nn.SiLU), (1, 8, torch.nn.Identity)]
)
def test_folded_conv_equals_conv_bn_act(monkeypatch, onednn, stride, groups, act):
    if onednn and not inference.has_onednn():
        pytest.skip("this torch has no oneDNN fused convolutions")
    block = ConvBNAct(8, 16, 3, stride, groups, act=act()).eval()
    randomise_batchnorm(block)
    fused = inference.FusedConv.from_module(block, torch.float32, onednn)
    x = torch.randn(2, 8, 15, 20).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = block(x)
        torch.testing.assert_close(fused(x), expected, atol=1e-5, rtol=1e-5)
        if act is torch.nn.Identity:  # the last 1x1 of a block: the residual add fused in
            residual = torch.randn_like(expected)
            torch.testing.assert_close(
                fused(x, residual), expected + residual, atol=1e-5, rtol=1e-5
            )


@pytest.mark.parametrize("backbone", ["efficientnet_b0", "efficientnet_lite0"])
@pytest.mark.parametrize("onednn", [True, False])
def test_fused_fp32_network_equals_plain_modules(monkeypatch, backbone, onednn):
    if not onednn:
        monkeypatch.setattr(inference, "has_onednn", lambda: False)
    ref, model = twins(backbone, amp=None)
    image = photo(67, 101)  # odd size: padded to 72 x 104, stride-2 "SAME" padding at the end
    a, b = dense(ref, image), dense(model, image)
    assert isinstance(model.__dict__["_fused"][1], inference.FusedTaSPNet)
    torch.testing.assert_close(b["logits"], a["logits"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(b["descriptors_dense"], a["descriptors_dense"], atol=1e-4, rtol=1e-4)


def test_fused_fp32_keypoints_equal_plain_modules_with_released_weights():
    ref, model = twins(None, weights="tasp_v2", amp=None)
    image = photo(120, 160, seed=5)
    with torch.inference_mode():
        pa, pb = ref({"image": image}), model({"image": image})
    assert pa["keypoints"].shape[1] > 50
    # Near-ties between neighbouring pixels of the heatmap (1e-6 apart) may go either way, then
    # the corner refinement takes both to (nearly) the same corner: compare as sets.
    dist, nearest = torch.cdist(pa["keypoints"][0], pb["keypoints"][0]).min(1)
    assert (dist < 1e-4).float().mean() > 0.9 and (dist < 0.1).float().mean() > 0.98
    cos = (pa["descriptors"][0] * pb["descriptors"][0][nearest]).sum(-1)[dist < 1e-4]
    assert cos.min() > 0.9999


@pytest.mark.skipif(not inference.native_bf16(), reason="no native bf16 on this CPU")
def test_bf16_close_to_fp32_with_released_weights():
    ref, model = twins(None, weights="tasp_v2", amp="bf16")
    assert model.cpu_precision() == "bf16"
    image = photo(120, 160, seed=3)
    a, b = dense(ref, image), dense(model, image)
    assert b["logits"].dtype == torch.float32 and b["descriptors_dense"].dtype == torch.float32
    # bf16 keeps 8 bits of mantissa. With tasp_v2 here: map cosine 0.974 on average (down to
    # 0.76 in flat, textureless regions, where descriptors are ill-defined anyway), 95% of the
    # keypoints within 1 px, their descriptors at cosine 0.996; mean |d logits| 0.12.
    assert desc_cos(a, b).mean() > 0.95
    assert (b["logits"] - a["logits"]).abs().mean() < 0.3
    with torch.inference_mode():
        pa, pb = ref({"image": image}), model({"image": image})
    dist, nearest = torch.cdist(pa["keypoints"][0], pb["keypoints"][0]).min(1)
    close = dist <= 1.0
    assert close.float().mean() > 0.85
    kpt_cos = (pa["descriptors"][0][close] * pb["descriptors"][0][nearest[close]]).sum(-1)
    assert kpt_cos.mean() > 0.99


@pytest.mark.skipif(not inference.native_int8(), reason="no VNNI / quantized engine here")
def test_int8_close_to_fp32_with_released_weights():
    ref, model = twins(None, weights="tasp_v2", amp="int8")
    image = photo(120, 160, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = dense(model, image)
    assert isinstance(model.__dict__["_fused"][1], inference.QuantizedTaSPNet)
    cos = desc_cos(dense(ref, image), b)
    assert cos.mean() > 0.9  # int8 costs more than bf16 (see docs/results.md)


def test_missing_bf16_falls_back_to_fp32(monkeypatch):
    monkeypatch.setattr(inference, "cpu_flags", lambda: frozenset({"avx2"}))
    assert not inference.native_bf16() and not inference.native_int8()
    ref, model = twins(amp="bf16")
    with pytest.warns(UserWarning, match="no native bf16"):
        out = dense(model, photo())
    assert model.__dict__["_fused"][1].dtype == torch.float32
    torch.testing.assert_close(out["logits"], dense(ref, photo())["logits"], atol=1e-4, rtol=1e-4)
    auto = TaSP({"weights": None, "amp": "auto"}).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "auto" falls back silently
        assert auto.cpu_precision() == "fp32"
        dense(auto, photo())
    with pytest.warns(UserWarning, match="no native int8"):
        assert TaSP({"weights": None, "amp": "int8"}).cpu_precision() == "fp32"


def test_auto_uses_bf16_only_where_native(monkeypatch):
    model = TaSP({"weights": None}).eval()
    assert model.conf["amp"] == "auto"
    monkeypatch.setattr(inference, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    monkeypatch.setattr(inference, "has_onednn", lambda: True)
    assert model.cpu_precision() == "bf16"
    monkeypatch.setattr(inference, "has_onednn", lambda: False)
    assert model.cpu_precision() == "fp32"  # software bf16 would be slower than fp32


def test_int8_needs_lite0_else_fp32():
    if not inference.native_int8():
        pytest.skip("no VNNI / quantized engine here")
    ref, model = twins("efficientnet_b0", amp="int8")
    with pytest.warns(UserWarning, match="efficientnet_lite0"):
        out = dense(model, photo())
    torch.testing.assert_close(out["logits"], dense(ref, photo())["logits"], atol=1e-4, rtol=1e-4)


def test_fused_network_follows_weight_changes():
    ref, model = twins(amp=None)
    image = photo()
    before = dense(model, image)["logits"]
    other = TaSP(
        {"weights": None, "backbone": "efficientnet_lite0", "amp": None, "fuse": False}
    ).eval()
    randomise_batchnorm(other)
    model.load_state_dict(other.state_dict())  # in place: the version counters move
    after = dense(model, image)["logits"]
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, dense(other, image)["logits"], atol=1e-4, rtol=1e-4)


def test_gradients_and_training_use_the_plain_modules():
    model = TaSP({"weights": None}).eval()
    out = model.forward_dense(photo())  # grad enabled, parameters require grad
    assert out["logits"].requires_grad and "_fused" not in model.__dict__
    model.train()
    with torch.no_grad():
        model.forward_dense(photo())
    assert "_fused" not in model.__dict__
    assert "_fused" not in "".join(model.state_dict())


def test_resolve_precision_rejects_unknown():
    with pytest.raises(ValueError, match="precision"):
        inference.resolve_precision("fp8")
    with pytest.raises(ValueError, match="amp"):
        TaSP({"weights": None, "amp": "int4"})


@pytest.mark.parametrize("shape", [(1, 68, 103), (2, 5, 4), (1, 1, 7), (3, 9, 2)])
@pytest.mark.parametrize("window", [1, 3, 5, 7])
def test_nms_equals_max_pool(shape, window):
    x = torch.rand(shape) ** 4
    x[..., :2] = 0.25  # ties
    pooled = F.max_pool2d(x[:, None], window, stride=1, padding=window // 2)[:, 0]
    torch.testing.assert_close(max_filter(x, window // 2), pooled, atol=0, rtol=0)
    assert torch.equal(nms(x, window), torch.where(x == pooled, x, torch.zeros_like(x)))


@pytest.mark.parametrize("border", [1, 2, 4, 10])
def test_remove_borders_zeroes_the_frame_only(border):
    x = torch.rand(2, 9, 12) + 0.1
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[:, border:-border, border:-border] = True
    out = remove_borders(x, border)
    assert torch.equal(out, x * mask) and not torch.equal(out, x)
