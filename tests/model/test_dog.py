"""DoG keypoints with TaSP descriptors (``detector: "dog"``, preset ``tasp_dog``)."""

import cv2
import h5py
import numpy as np
import pytest
import torch

from tasp_hloc.hloc.confs import get_preset
from tasp_hloc.model.dog import DESCRIBE_SIZE, describe_levels, detect_dog
from tasp_hloc.model.keypoints import sample_descriptors
from tasp_hloc.model.tasp import TaSP

from conftest import render_scene


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255


def test_dog_finds_a_blob_at_its_subpixel_centre():
    h, w, centre = 64, 80, (37.3, 29.6)
    y, x = np.mgrid[:h, :w]
    blob = np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * 3.0**2))
    image = torch.from_numpy(0.2 + 0.6 * blob).float()[None, None]
    kp, response, size, mask = detect_dog(image, -1)
    assert mask.sum() >= 1
    first = kp[0, 0]  # the strongest: the blob (top-left pixel centre is (0, 0))
    assert torch.allclose(first, torch.tensor(centre), atol=0.3), first
    assert size[0, 0] > 4 and response[0, 0] > 0


def test_dog_one_per_position_strongest_first_borders_and_padding():
    images = torch.cat([_tensor(render_scene(120, 160, 0)), _tensor(render_scene(120, 160, 5))])
    kp, response, _, mask = detect_dog(images, 30, border=6)
    assert kp.shape[:2] == response.shape == mask.shape and kp.shape[1] <= 30
    for b in range(2):
        k, r = kp[b][mask[b]], response[b][mask[b]]
        assert len(torch.unique(k, dim=0)) == len(k)  # OpenCV's orientation copies merged
        assert (r[:-1] >= r[1:]).all()
        assert (k >= 6).all() and (k[:, 0] <= 160 - 7).all() and (k[:, 1] <= 120 - 7).all()
    assert (kp[~mask] == 0).all()
    with pytest.raises(ValueError, match="B, 1 or 3"):
        detect_dog(images[0], 10)


def test_dark_and_low_contrast_images_keep_their_keypoints():
    """OpenCV's default threshold leaves nothing on a dark photo; DoG here keeps half of what
    the bright photo has."""
    scene = render_scene(240, 320, 2).astype(np.float32)
    dark = (scene * 0.06 + 2).astype(np.uint8)  # a night photo: values 2..17
    default = cv2.SIFT_create().detect(cv2.cvtColor(dark, cv2.COLOR_RGB2GRAY), None)
    assert len(default) < 5
    bright = detect_dog(_tensor(scene.astype(np.uint8)), -1)[3].sum()
    assert detect_dog(_tensor(dark), -1)[3].sum() > 0.4 * bright > 20
    model = TaSP({"detector": "dog", "max_keypoints": 500}).eval()
    out = model.extract(_tensor(dark)[0])
    assert out["keypoint_mask"].sum() > 0.4 * bright
    assert torch.isfinite(out["descriptors"]).all()


def test_describe_levels_pick_the_scale_that_brings_size_nearest():
    sizes = torch.tensor([DESCRIBE_SIZE, 2 * DESCRIBE_SIZE, 4 * DESCRIBE_SIZE, 1.0, 100.0])
    levels = describe_levels(sizes, (1.0, 0.5, 0.25))
    assert levels.tolist() == [0, 1, 2, 0, 2]


@pytest.mark.parametrize("scales", [(1.0,), (1.0, 0.71, 0.5, 0.35, 0.25)])
def test_descriptors_are_tasps_sampled_on_the_matching_level(scales):
    image = _tensor(render_scene(200, 264, 4))
    model = TaSP({"detector": "dog", "max_keypoints": 300, "scales": scales}).eval()
    with torch.no_grad():
        out = model({"image": image})
    kp, mask = out["keypoints"][0], out["keypoint_mask"][0]
    assert mask.sum() > 50
    # the same points from the detector, in the same order as their responses
    dog_kp, _, sizes, dog_mask = detect_dog(image, -1, border=model.conf["remove_borders"])
    index = torch.cdist(kp[mask], dog_kp[0][dog_mask[0]]).argmin(1)
    assert torch.allclose(dog_kp[0][dog_mask[0]][index], kp[mask])
    level = describe_levels(sizes[0][dog_mask[0]][index], scales)
    used = set()
    for i, s in enumerate(scales):
        pick = level == i
        if not pick.any():
            continue
        used.add(i)
        size = (round(200 * s), round(264 * s))
        scaled = torch.nn.functional.interpolate(image, size=size, mode="area") if s != 1 else image
        with torch.no_grad():
            dense = model.forward_dense(scaled)["descriptors_dense"]
        factor = torch.tensor([size[1] / 264, size[0] / 200])
        expected = sample_descriptors(dense, ((kp[mask][pick] + 0.5) * factor - 0.5)[None], 4)
        assert torch.allclose(out["descriptors"][0][mask][pick], expected[0], atol=1e-5)
    assert len(used) >= min(len(scales), 2)  # sizes spread over the levels


def test_tasp_dog_preset_through_the_command_line(tmp_path, image_dir):
    from tasp_hloc.__main__ import main

    out = tmp_path / "feats.h5"
    main(
        [
            "extract",
            "--images",
            str(image_dir),
            "--output",
            str(out),
            "--preset",
            "tasp_dog",
            "--max-keypoints",
            "256",
        ]
    )
    preset = get_preset("tasp_dog")
    assert preset["model"]["detector"] == "dog" and len(preset["model"]["scales"]) == 5
    with h5py.File(out, "r") as fd:
        names = []
        fd.visititems(lambda n, o: names.append(n) if n.endswith("/keypoints") else None)
        names = [n.rsplit("/", 1)[0] for n in names]
        assert names
        for n in names:
            kp, desc = fd[n]["keypoints"][()], fd[n]["descriptors"][()]
            assert 0 < len(kp) <= 256 and desc.shape == (128, len(kp))
            w, h = fd[n]["image_size"][()]
            assert (kp >= 0).all() and (kp[:, 0] < w).all() and (kp[:, 1] < h).all()
