import math

import cv2
import numpy as np
import pytest
import torch

from tasp_hloc.labels import (
    DUSTBIN,
    HomographicAdaptation,
    LabelCache,
    Labeler,
    ModelDetector,
    PackedLabels,
    get_detector,
    keypoints_to_label_map,
    label_map_to_keypoints,
    logits_to_heatmap,
    nms_keypoints,
    sample_homographies,
)
from tasp_hloc.labels.__main__ import main as cli_main
from tasp_hloc.labels.peers import import_lightglue


def checkerboard(size=128, square=16.0, n=5, angle=0.0, centre=None, ss=4):
    """Anti-aliased rotated checkerboard with a grey surround; returns image and inner corners."""
    centre = np.array([size / 2 - 0.5] * 2) if centre is None else np.asarray(centre)
    c, s = math.cos(angle), math.sin(angle)
    # ss x ss samples per pixel, at sub-pixel offsets around each pixel centre
    off = (np.arange(ss) + 0.5) / ss - 0.5
    y, x = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    xs = x[..., None, None] + off[None, None, None, :]
    ys = y[..., None, None] + off[None, None, :, None]
    dx, dy = xs - centre[0], ys - centre[1]
    u, v = (c * dx + s * dy) / square + n / 2, (-s * dx + c * dy) / square + n / 2  # board coords
    inside = (u >= 0) & (u < n) & (v >= 0) & (v < n)
    val = np.where(inside, np.where((np.floor(u) + np.floor(v)) % 2 == 0, 0.9, 0.1), 0.5)
    image = torch.from_numpy(val.mean((-1, -2))).float()[None, None]
    k = np.arange(1, n) - n / 2
    ku, kv = np.meshgrid(k, k)
    corners = np.stack([c * ku - s * kv, s * ku + c * kv], -1).reshape(-1, 2) * square + centre
    return image, torch.from_numpy(corners).float()


def test_label_map_round_trip():
    g = torch.Generator().manual_seed(0)
    h, w = 48, 64
    cells = torch.randperm((h // 8) * (w // 8), generator=g)[:20]  # one keypoint per cell
    off = torch.randint(0, 64, (20,), generator=g)
    kpts = torch.stack(
        [(cells % (w // 8)) * 8 + off % 8, (cells // (w // 8)) * 8 + off // 8], -1
    ).float()
    labels = keypoints_to_label_map(kpts, (h, w))
    assert labels.shape == (h // 8, w // 8) and labels.dtype == torch.long
    assert int((labels != DUSTBIN).sum()) == 20
    back = label_map_to_keypoints(labels)
    assert sorted(map(tuple, back.tolist())) == sorted(map(tuple, kpts.tolist()))
    # and the other way: a random label map survives decode -> encode
    lm = torch.randint(0, 65, (6, 8), generator=g)
    assert torch.equal(keypoints_to_label_map(label_map_to_keypoints(lm), (48, 64)), lm)


def test_label_map_keeps_best_and_ignores_outside():
    kpts = torch.tensor([[1.0, 1.0], [6.2, 3.4], [2.0, 7.0], [-1.0, 3.0], [70.0, 3.0], [9.0, 9.0]])
    scores = torch.tensor([0.5, 0.9, 0.1, 1.0, 1.0, 0.3])
    labels = keypoints_to_label_map(kpts, (16, 16), scores)
    assert labels[0, 0] == 3 * 8 + 6  # (6.2, 3.4) rounds to (6, 3) and wins the cell
    assert labels[1, 1] == 1 * 8 + 1 and labels[0, 1] == DUSTBIN and labels[1, 0] == DUSTBIN
    with pytest.raises(ValueError, match="multiple of 8"):
        keypoints_to_label_map(kpts, (15, 16))


def test_logits_heatmap_convention_matches_labels():
    labels = torch.full((2, 3), DUSTBIN)
    labels[1, 2] = 5 * 8 + 3
    logits = torch.nn.functional.one_hot(labels, 65).permute(2, 0, 1)[None].float() * 20
    heat = logits_to_heatmap(logits)[0]
    y, x = divmod(int(heat.argmax()), heat.shape[1])
    assert (x, y) == (2 * 8 + 3, 1 * 8 + 5)
    assert label_map_to_keypoints(labels).tolist() == [[x, y]]


def test_identity_adaptation_equals_single_detection():
    image = torch.rand(1, 3, 64, 80, generator=torch.Generator().manual_seed(1))
    det = get_detector("shi_tomasi")
    ha = HomographicAdaptation(det, {"nms_radius": 2})
    out = ha(image, homographies=torch.eye(3).repeat(4, 1, 1))
    single = det(image)[0, 0]
    assert torch.allclose(out["heatmap"], single, atol=1e-6)
    kpts, scores = nms_keypoints(single, 2, ha.threshold, border=ha.conf["remove_borders"])
    assert torch.equal(out["keypoints"], kpts) and torch.allclose(out["scores"], scores)
    assert torch.equal(out["label_map"], keypoints_to_label_map(kpts, (64, 80), scores))


def test_warps_are_undone():
    # An "identity detector" returns the image itself: averaging its warped-back maps must give
    # the image again, which checks both warp directions and the validity counts.
    class Echo:
        default_threshold = 0.5

        def __call__(self, image):
            return image[:, :1]

        def cache_key(self):
            return {}

    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    image = (0.5 + 0.4 * torch.sin(x / 9) * torch.cos(y / 7))[None, None]
    H = sample_homographies(12, (64, 64), {"max_angle": 0.3}, torch.Generator().manual_seed(0))
    agg = HomographicAdaptation(Echo()).aggregate(image, H)
    seen = agg["count"] >= 6
    assert agg["count"].max() == 12 and seen.float().mean() > 0.3
    assert (agg["heatmap"] - image)[seen].abs().max() < 0.02


def test_checkerboard_corners_found():
    image, corners = checkerboard(angle=0.35)
    ha = HomographicAdaptation(
        get_detector("shi_tomasi"), {"num_homographies": 30, "nms_radius": 3}
    )
    out = ha(image)
    d = torch.cdist(corners, out["keypoints"])
    assert d.min(1).values.max() < 1.5, d.min(1).values  # every inner corner found within 1.5 px
    # the 16 X-junctions are the strongest responses, one keypoint each
    assert d[:, : len(corners)].min(0).values.max() < 1.5
    decoded = label_map_to_keypoints(out["label_map"])  # NMS radius 3 < 8: one per cell at most
    assert sorted(map(tuple, decoded.tolist())) == sorted(map(tuple, out["keypoints"].tolist()))


def test_model_detector_self_labelling():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 65, 8, stride=8)

        def forward_dense(self, image):
            assert not self.training  # labelling runs the net in eval mode
            return {"logits": self.conv(image), "descriptors": None}

    net = Net().train()
    det = ModelDetector(net)
    heat = det(torch.rand(2, 3, 60, 44))  # padded to 64 x 48 inside, cropped back
    assert heat.shape == (2, 1, 60, 44) and net.training
    assert heat.min() >= 0 and heat.max() <= 1
    key = det.cache_key()
    with torch.no_grad():
        net.conv.bias += 1
    assert det.cache_key() != key  # new weights -> new cache entry
    with pytest.raises(ValueError, match="weights_id"):
        ModelDetector(lambda x: x).cache_key()


def test_model_detector_loads_tasp_weights_from_its_conf(tmp_path):
    from tasp_hloc.labels.detectors import get_detector
    from tasp_hloc.model.tasp import TaSP

    net = TaSP({"weights": None, "descriptor_dim": 32}).eval()
    path = tmp_path / "round0.pth"
    torch.save(net.state_dict(), path)
    det = get_detector("model", {"weights": str(path)})  # what a training config can ask for
    # The same cache entry as the network passed in: the weights, not how they came, count.
    assert det.cache_key() == ModelDetector(net).cache_key()
    heat = det(torch.rand(1, 3, 64, 48))
    assert heat.shape == (1, 1, 64, 48) and not det.model.training
    with pytest.raises(ValueError, match="detector_conf"):
        get_detector("model")


def test_cache_computes_once_and_survives_partial_tmp(tmp_path):
    image = checkerboard(size=64, n=3)[0][0].expand(3, -1, -1)
    conf = {"adaptation": {"num_homographies": 3}}
    calls = []

    def counting(labeler):
        inner = labeler.adaptation.detector

        class Counting:
            default_threshold = inner.default_threshold

            def __call__(self, x):
                calls.append(len(x))
                return inner(x)

            def cache_key(self):
                return inner.cache_key()

        labeler.adaptation.detector = Counting()
        return labeler

    a = counting(Labeler(conf, cache_dir=tmp_path))
    # a crashed writer's leftover next to the target, and a truncated target file
    target = a.cache.path("img/a.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    (target.parent / (target.name + ".123.deadbeef.tmp")).write_bytes(b"PK\x03\x04garbage")
    target.write_bytes(b"PK\x03\x04trunc")
    with pytest.warns(UserWarning, match="unreadable"):
        first = a(image, "img/a.png")
    assert sum(calls) == 3 and len(first["keypoints"]) > 0

    b = counting(Labeler(conf, cache_dir=tmp_path))  # a new process, same conf
    calls.clear()
    second = b(image, "img/a.png")
    assert calls == []
    for k in ("keypoints", "scores", "image_size"):
        assert torch.equal(first[k], second[k])
    assert b.cache.clean_tmp() == 1 and b.cache.get("img/a.png") is not None

    c = Labeler({"adaptation": {"num_homographies": 4}}, cache_dir=tmp_path)
    assert c.cache.dir != b.cache.dir and c.cache.get("img/a.png") is None
    with pytest.raises(ValueError, match="label confs"):
        LabelCache(tmp_path)  # ambiguous without a key


def test_labeler_resizes_back_to_full_resolution():
    image, corners = checkerboard(size=128, square=24.0, n=4)
    small = Labeler({"resize_max": 64, "adaptation": {"num_homographies": 1}})(
        image[0].expand(3, -1, -1)
    )
    assert small["image_size"].tolist() == [128, 128]
    d = torch.cdist(corners, small["keypoints"]).min(1).values
    assert d.max() < 2.5  # one pixel at half resolution is two here


def test_cli_labels_folder_and_packs(tmp_path):
    folder = tmp_path / "imgs" / "sub"
    folder.mkdir(parents=True)
    for i in range(2):
        img = (checkerboard(size=64, n=3, angle=0.2 * i)[0][0, 0].numpy() * 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{i}.png"), img)
    out = tmp_path / "labels.h5"
    args = ["--images", str(tmp_path / "imgs"), "--output", str(out), "--num_homographies", "2"]
    cli_main(args)
    cli_main(args)  # resumes: nothing left to compute
    packed = PackedLabels(out)
    assert "sub/0.png" in packed and "sub/1.png" in packed
    assert packed["sub/1.png"]["image_size"].tolist() == [64, 64]
    assert packed.conf["adaptation"]["num_homographies"] == 2


def test_aliked_detector_labels_corners_in_image_pixels():
    try:
        import_lightglue()
    except ImportError as err:
        pytest.skip(str(err))
    image = torch.full((1, 1, 160, 160), 0.2)
    image[..., 40:100, 50:120] = 0.8  # corners at x 49.5 / 119.5, y 39.5 / 99.5 (pixel centres 0)
    det = get_detector("aliked")
    heat = det(image)  # gray in: it is given to ALIKED as RGB
    assert heat.shape == image.shape and heat.min() >= 0 and heat.max() <= 1
    assert det.cache_key() != get_detector("aliked", {"model_name": "aliked-t16"}).cache_key()
    ha = HomographicAdaptation(det, {"num_homographies": 1, "nms_radius": 3})
    corners = torch.tensor([[49.5, 39.5], [119.5, 39.5], [49.5, 99.5], [119.5, 99.5]])
    mirrored = corners * torch.tensor([-1.0, 1.0]) + torch.tensor([159.0, 0.0])
    for img, true in ((image, corners), (image.flip(-1), mirrored)):  # no shift either way
        kpts = ha(img)["keypoints"]
        assert len(kpts) >= 1 and torch.cdist(kpts, true).min(1).values.max() <= 0.75, kpts
    with pytest.raises(ValueError, match="Expected an image"):
        det(torch.rand(3, 32, 32))
