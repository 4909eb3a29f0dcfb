"""Sub-pixel soft targets, the centroid readout, distinct keypoints and the pixel head."""

import math

import pytest
import torch
import torch.nn.functional as F

from tasp_hloc.losses.soft_targets import soft_cell_cross_entropy, soft_cell_targets
from tasp_hloc.model.keypoints import (
    drop_close_keypoints,
    logits_to_heatmap,
    nms,
    refine_keypoints,
    select_keypoints,
)
from tasp_hloc.model.pixel_head import PixelDetectorHead
from tasp_hloc.model.tasp import TaSP
from tasp_hloc.model.weights import WeightsError, infer_architecture

from conftest import render_scene

EXACT = "donot_use_mm_for_euclid_dist"  # cdist's matmul form errs by ~0.02 px here


def test_soft_targets_split_a_point_bilinearly_over_its_4_pixels():
    kp = torch.tensor([[[10.25, 3.5]]])
    t = soft_cell_targets(kp, torch.ones(1, 1, dtype=torch.bool), 1, 2)
    assert t.shape == (1, 65, 1, 2)
    cell = t[0, :, 0, 1]  # pixels x 8..15: (10, 3) is dx=2, dy=3
    expected = {8 * 3 + 2: 0.375, 8 * 3 + 3: 0.125, 8 * 4 + 2: 0.375, 8 * 4 + 3: 0.125}
    for channel, value in expected.items():
        assert cell[channel].item() == pytest.approx(value)
    assert cell[64].item() == pytest.approx(0.0, abs=1e-7)
    assert cell.sum().item() == pytest.approx(1.0)
    empty = t[0, :, 0, 0]
    assert empty[64].item() == 1.0 and empty[:64].sum().item() == 0.0


def test_soft_targets_across_a_cell_border_and_masked_and_outside_points():
    kp = torch.tensor([[[7.5, 0.0], [3.0, 3.0], [15.5, 7.0]]])
    mask = torch.tensor([[True, False, True]])
    t = soft_cell_targets(kp, mask, 1, 2)[0, :, 0]
    # (7.5, 0): half on pixel 7 of cell 0, half on pixel 0 of cell 1
    assert t[7, 0].item() == pytest.approx(0.5) and t[64, 0].item() == pytest.approx(0.5)
    assert t[0, 1].item() == pytest.approx(0.5)
    # (15.5, 7): half on pixel (15, 7), half outside the 16-px image (dropped to the dustbin)
    assert t[8 * 7 + 7, 1].item() == pytest.approx(0.5)
    assert t[64, 1].item() == pytest.approx(0.0, abs=1e-7)  # 0.5 + 0.5 from the two points
    assert t[8 * 3 + 3, 0].item() == 0.0  # the masked point left no mass


def test_soft_targets_rescale_a_cell_holding_more_than_one_point():
    kp = torch.tensor([[[1.0, 1.0], [4.0, 4.0]]])
    t = soft_cell_targets(kp, torch.ones(1, 2, dtype=torch.bool), 1, 1)[0, :, 0, 0]
    assert t[9].item() == pytest.approx(0.5) and t[36].item() == pytest.approx(0.5)
    assert t[64].item() == 0.0


def test_soft_cross_entropy_by_hand():
    # one cell, target half on channel 26, half on 27; logits log 2 on channel 26, else 0:
    # p26 = 2/66, p27 = 1/66, CE = -0.5 log(2/66) - 0.5 log(1/66) = log 66 - 0.5 log 2
    kp = torch.tensor([[[2.5, 3.0]]])
    t = soft_cell_targets(kp, torch.ones(1, 1, dtype=torch.bool), 1, 1)
    logits = torch.zeros(1, 65, 1, 1)
    logits[0, 26] = math.log(2)
    ce = soft_cell_cross_entropy(logits, t)
    assert ce.item() == pytest.approx(math.log(66) - 0.5 * math.log(2), rel=1e-6)
    # a weight scales positive cells only; invalid cells do not count
    t2 = torch.cat([t, soft_cell_targets(kp, torch.zeros(1, 1, dtype=torch.bool), 1, 1)], -1)
    logits2 = torch.zeros(1, 65, 1, 2)
    weights = torch.tensor([[[3.0, 5.0]]])
    ce2 = soft_cell_cross_entropy(logits2, t2, weights)
    assert ce2.item() == pytest.approx((3 * math.log(65) + math.log(65)) / 2, rel=1e-6)
    valid = torch.tensor([[[False, True]]])
    assert soft_cell_cross_entropy(logits2, t2, weights, valid).item() == pytest.approx(
        math.log(65), rel=1e-6
    )
    with pytest.raises(ValueError, match="one shape"):
        soft_cell_cross_entropy(logits2, t)


def test_centroid_readout_recovers_soft_targets_exactly():
    """Logits that predict the targets give keypoints at the labels' sub-pixel positions."""
    g = torch.Generator().manual_seed(0)
    centres = torch.stack(torch.meshgrid(torch.arange(6), torch.arange(8), indexing="ij"), -1)
    kp = (centres.flip(-1).reshape(1, -1, 2) * 8 + 3).float()  # one point per cell
    kp = kp + 2 * torch.rand(kp.shape, generator=g) - 0.5
    targets = soft_cell_targets(kp, torch.ones(kp.shape[:2], dtype=torch.bool), 6, 8)
    heat = logits_to_heatmap(targets.clamp(min=1e-12).log())
    assert torch.allclose(heat, F.pixel_shuffle(targets[:, :64], 8)[:, 0], atol=1e-6)
    found, _, mask = select_keypoints(nms(heat, 3), 0.2, -1)
    refined = refine_keypoints(heat, found)[0][mask[0]]
    assert len(refined) == kp.shape[1]
    assert torch.cdist(kp[0], refined, compute_mode=EXACT).min(1).values.max() < 1e-4
    integer = found[0][mask[0]]
    assert (
        torch.cdist(kp[0], integer, compute_mode=EXACT).min(1).values.max() > 0.3
    )  # the grid alone is off


def test_drop_close_keypoints_keeps_the_stronger():
    kp = torch.tensor([[[0.0, 0.0], [0.6, 0.0], [5.0, 5.0], [5.0, 5.9], [5.0, 6.8], [9, 9]]])
    scores = torch.tensor([[0.5, 0.9, 0.8, 0.7, 0.6, 0.1]])
    mask = torch.tensor([[True, True, True, True, True, False]])
    keep = drop_close_keypoints(kp, scores, mask)
    # 0 is beaten by 1; 3 by 2; 4 by 3 (dropped itself, still stronger and within 1 px)
    assert keep.tolist() == [[False, True, True, False, False, False]]
    tie = drop_close_keypoints(kp[:, :2], torch.ones(1, 2), torch.ones(1, 2, dtype=torch.bool))
    assert tie.tolist() == [[True, False]]
    with pytest.raises(ValueError, match="scores"):
        drop_close_keypoints(kp, scores[:, :3], mask)


def _min_distance(keypoints: torch.Tensor) -> float:
    d = torch.cdist(keypoints, keypoints, compute_mode=EXACT)
    d.fill_diagonal_(float("inf"))
    return d.min().item()


@pytest.mark.parametrize(
    "conf",
    [{}, {"subpixel": "centroid"}, {"scales": [1.0, 0.71, 0.5]}, {"detector": "dog"}],
    ids=["corner", "centroid", "multiscale", "dog"],
)
def test_no_two_keypoints_within_one_pixel(conf):
    image = torch.from_numpy(render_scene(240, 320, 3)).permute(2, 0, 1).float() / 255
    model = TaSP({"max_keypoints": 2048, **conf}).eval()
    out = model.extract(image)
    kp = out["keypoints"][0][out["keypoint_mask"][0]]
    assert len(kp) > 50
    assert _min_distance(kp) >= 1.0
    scores = out["keypoint_scores"][0][out["keypoint_mask"][0]]
    assert (scores[:-1] >= scores[1:]).all()  # strongest first after the drop


def test_pixel_head_starts_as_the_paper_head_and_learns_from_pixels():
    image = torch.from_numpy(render_scene(96, 128, 1)).permute(2, 0, 1)[None].float() / 255
    paper = TaSP({"fuse": False}).eval()
    pixel = TaSP({"detector_head": "pixel", "fuse": False}).eval()
    assert pixel.conf["detector_head"] == "pixel" and isinstance(
        pixel.pixel_head, PixelDetectorHead
    )
    with torch.no_grad():
        a, b = paper.forward_dense(image)["logits"], pixel.forward_dense(image)["logits"]
    assert torch.allclose(a, b, atol=1e-5)
    # once trained, the correction depends on the pixels of each cell
    torch.nn.init.normal_(pixel.pixel_head.mix[-1].weight, std=0.1)
    with torch.no_grad():
        shifted = pixel.pixel_head(image.roll(1, -1), a)
        assert not torch.allclose(pixel.pixel_head(image, a), shifted, atol=1e-3)
        # the fused CPU forward applies the head too
        pixel.conf["fuse"] = True
        fused = pixel.forward_dense(image)["logits"]
        pixel.conf["fuse"] = False
        assert torch.allclose(fused, pixel.forward_dense(image)["logits"], atol=1e-3)
    with pytest.raises(ValueError, match="multiples of 8"):
        pixel.pixel_head(image[..., :100], a)


def test_pixel_head_weights_round_trip(tmp_path):
    model = TaSP({"detector_head": "pixel", "weights": None})
    torch.nn.init.normal_(model.pixel_head.mix[-1].weight)
    path = tmp_path / "pixel.pth"
    torch.save(model.state_dict(), path)
    assert infer_architecture(model.state_dict())["detector_head"] == "pixel"
    loaded = TaSP({"weights": str(path)})  # the head is read from the weights
    assert loaded.conf["detector_head"] == "pixel"
    # each head gets the readout it was trained for, unless one is asked for
    assert loaded.conf["subpixel"] == "centroid" and TaSP().conf["subpixel"] == "corner"
    assert TaSP({"weights": str(path), "subpixel": "corner"}).conf["subpixel"] == "corner"
    assert torch.equal(loaded.pixel_head.mix[-1].weight, model.pixel_head.mix[-1].weight)
    with pytest.raises(WeightsError, match="detector_head"):
        TaSP({"weights": str(path), "detector_head": "paper"})
    with pytest.raises(ValueError, match="detector_head"):
        TaSP({"weights": None, "detector_head": "pixels"})


def test_drop_close_keypoints_equals_the_pairwise_rule():
    g = torch.Generator().manual_seed(0)
    kp = torch.rand(2, 2000, 2, generator=g) * torch.tensor([200.0, 150.0])
    kp[:, 1000:] = kp[:, :1000] + (torch.rand(2, 1000, 2, generator=g) - 0.5) * 2
    scores = torch.rand(2, 2000, generator=g).round(decimals=2)  # ties too
    mask = torch.rand(2, 2000, generator=g) > 0.1
    keep = drop_close_keypoints(kp, scores, mask)
    index = torch.arange(2000)
    for b in range(2):
        d = torch.cdist(kp[b].double(), kp[b].double(), compute_mode=EXACT)
        s = scores[b]
        stronger = (s[None] > s[:, None]) | (
            (s[None] == s[:, None]) & (index[None] < index[:, None])
        )
        expected = mask[b] & ~((d < 1) & stronger & mask[b][None]).any(1)
        assert torch.equal(keep[b], expected)
    assert 0 < keep.sum() < mask.sum()
