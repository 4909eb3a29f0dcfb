"""The learned sub-pixel placement: the refiner's geometry, its loss by hand, training and use."""

import math

import cv2
import numpy as np
import pytest
import torch

from tasp_hloc.model.placement import PlacementNet, load_placement
from tasp_hloc.model.tasp import TaSP
from tasp_hloc.train import placement as train_placement


def _image(h=96, w=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, h // 8, w // 8, generator=g)
    return torch.nn.functional.interpolate(small, size=(h, w), mode="bicubic").clamp(0, 1)


def test_refined_points_stay_in_the_window_of_their_nearest_pixel():
    torch.manual_seed(0)
    net = PlacementNet({"radius": 2})
    kpts = torch.tensor([[[20.3, 30.6], [64.0, 40.0], [100.7, 12.2]]])
    out = net(_image(), kpts)
    assert out.shape == (1, 3, 2)
    assert ((out - kpts.round()).abs() <= 2 + 1e-5).all()
    with pytest.raises(ValueError, match="keypoints"):
        net(_image(), kpts[0])
    with pytest.raises(ValueError, match="image"):
        net(_image()[:, :2], kpts)


def test_refinement_depends_on_the_image_content_not_on_absolute_position():
    torch.manual_seed(0)
    net = PlacementNet()
    image = _image(seed=1)
    kpts = torch.tensor([[[40.0, 30.0], [70.0, 50.0]]])
    shifted = torch.roll(image, shifts=(5, 7), dims=(-2, -1))  # content moves +7 px x, +5 px y
    a = net(image, kpts)
    b = net(shifted, kpts + torch.tensor([7.0, 5.0]))
    torch.testing.assert_close(b - a, torch.tensor([7.0, 5.0]).expand_as(a), atol=1e-4, rtol=0)
    # the same on gray input: RGB is averaged to gray first
    c = net(image.mean(1, keepdim=True), kpts)
    torch.testing.assert_close(c, a, atol=1e-5, rtol=0)


class _Identity(torch.nn.Module):
    """A refiner that leaves every point where it starts (a whole pixel)."""

    conf = {"radius": 3}

    def forward(self, image, keypoints):
        return keypoints.round()


def test_loss_of_a_refiner_that_does_not_move_by_hand():
    # A translation by (3.4, 0): corners k0 warp to k0 + 3.4, start (rounded) at k0 + 3; the
    # refined points stay put, so p1 - H p0 = -0.4 px and the Charbonnier is sqrt(0.16 + 0.01).
    image = torch.zeros(1, 3, 64, 64)
    image[..., 20:40, 24:44] = 1.0  # one bright square: 4 corners
    batch = {
        "image0": image,
        "image1": image,
        "H_1from0": torch.tensor([[[1.0, 0, 3.4], [0, 1, 0], [0, 0, 1]]]),
        "valid1": torch.ones(1, 64, 64, dtype=torch.bool),
    }
    g = torch.Generator().manual_seed(0)
    out = train_placement.placement_loss(_Identity(), batch, 4, 0, g)
    assert out["loss"].item() == pytest.approx(math.sqrt(0.16 + 0.01), abs=1e-5)
    assert out["error"].item() == pytest.approx(0.4, abs=1e-5)
    # under the identity nothing is left to explain: only the Charbonnier floor 0.1
    batch["H_1from0"] = torch.eye(3)[None]
    assert train_placement.placement_loss(_Identity(), batch, 4, 0, g)["loss"].item() == (
        pytest.approx(0.1, abs=1e-6)
    )


def test_training_resumes_and_tasp_uses_the_refiner(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        tile = rng.uniform(0, 255, (40, 40, 3)).astype(np.uint8)
        cv2.imwrite(str(photos / f"{i}.png"), cv2.resize(tile, (320, 320), cv2.INTER_CUBIC))
    run = tmp_path / "run"
    lines = []
    first = []
    train_placement.train(
        [photos], run, steps=2, batch_size=2, points=16, num_workers=0, repeats=2, log=first.append
    )
    assert torch.load(run / train_placement.CHECKPOINT, weights_only=False)["step"] == 2
    assert first[0].startswith("step 2/2")  # both steps on the first batch, then logged once
    weights = train_placement.train(
        [photos], run, steps=3, batch_size=2, points=16, num_workers=0, log=lines.append
    )
    assert lines[0].startswith("resumed") and "at step 2" in lines[0]
    assert torch.load(weights, weights_only=True)["steps"] == 3
    net = load_placement(weights)
    assert isinstance(net, PlacementNet) and not net.training

    image = _image(h=128, w=160, seed=3)
    plain = TaSP({"weights": "tasp_v2", "subpixel": None, "max_keypoints": 50}).eval()
    learned = TaSP(
        {
            "weights": "tasp_v2",
            "subpixel": "learned",
            "placement_weights": str(weights),
            "max_keypoints": 50,
        }  # fmt: skip
    ).eval()
    with torch.no_grad():
        a, b = plain({"image": image}), learned({"image": image})
    moved = (b["keypoints"] - a["keypoints"]).abs()
    assert (moved <= 3 + 1e-5).all() and moved.max() > 0  # refined within the window


def test_missing_placement_weights_say_how_to_make_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="tasp_hloc.train.placement"):
        load_placement(tmp_path / "none.pth")
    with pytest.raises(ValueError, match="placement_weights"):
        TaSP({"weights": None, "subpixel": "learned"})
