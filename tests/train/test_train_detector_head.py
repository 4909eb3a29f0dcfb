"""Pixel detector head training: the cache, the loss, resuming, export to weights."""

import csv
import json

import pytest
import torch

from tasp_hloc.model.tasp import TaSP
from tasp_hloc.train import detector_cache, detector_head
from tasp_hloc.train.checkpoints import CHECKPOINT

from conftest import write_photos


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("detector")
    photos = write_photos(root / "photos", n=3, h=120, w=140)
    cache = detector_cache.build_cache([photos], root / "cache", pairs=4, size=96, labels=40)
    return photos, cache


def test_cache_holds_the_frozen_networks_view_of_each_pair(cache_dir):
    photos, cache = cache_dir
    views = detector_cache.load_cache(cache)
    assert views["gray"].shape == (8, 1, 96, 96) and views["gray"].dtype == torch.uint8
    assert views["logits"].shape == (8, 65, 12, 12) and views["logits"].dtype == torch.float16
    n = views["keypoints"].shape[1]
    assert views["mask"].shape == views["delta"].shape == (8, n) and 0 < n <= 40
    assert (views["mask"].sum(1) <= 40).all() and views["mask"].sum() > 20
    assert ((views["delta"] > 0.3) & (views["delta"] < 1.7)).all()  # exp(0.5 (1 - M)), M in [0, 3]
    assert views["cell_valid"][:4].all()  # views 0 are crops of the photo: every cell valid
    # the paper head's logits of the released network on the first view
    image = detector_cache.pair_dataset([photos], 4, 96, 0)[0]["image0"][None]
    with torch.no_grad():
        logits = TaSP({"fuse": False}).eval().forward_dense(image)["logits"]
    assert torch.allclose(views["logits"][:1].float(), logits, atol=0.02)
    assert torch.equal(views["gray"][0], (image[0].mean(0, keepdim=True) * 255).round().byte())
    # the same inputs finish nothing more; other inputs are refused
    assert detector_cache.build_cache([photos], cache, pairs=4, size=96, labels=40) == cache
    with pytest.raises(ValueError, match="other inputs"):
        detector_cache.build_cache([photos], cache, pairs=4, size=96, labels=41)


def test_unfinished_cache_says_how_to_finish(tmp_path, cache_dir):
    _, cache = cache_dir
    meta = json.loads((cache / detector_cache.META).read_text())
    (tmp_path / detector_cache.META).write_text(json.dumps({**meta, "pairs": 120}))
    with pytest.raises(FileNotFoundError, match="unfinished"):
        detector_cache.load_cache(tmp_path)
    with pytest.raises(FileNotFoundError, match="build the cache"):
        detector_cache.load_cache(tmp_path / "none")


def test_loss_reaches_only_the_pixel_head(cache_dir):
    views = detector_cache.load_cache(cache_dir[1])
    model = detector_head.build_model("tasp_v2")
    soft = detector_head.head_loss(model.pixel_head, views, "soft")
    integer = detector_head.head_loss(model.pixel_head, views, "integer")
    assert torch.isfinite(soft) and soft > 0 and soft.item() != pytest.approx(integer.item())
    soft.backward()
    for name, p in model.named_parameters():
        assert p.requires_grad == name.startswith("pixel_head."), name
        assert (p.grad is not None) == name.startswith("pixel_head."), name
    assert model.pixel_head.mix[-1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="targets"):
        detector_head.head_loss(model.pixel_head, views, "hard")


def test_train_resumes_and_exports(tmp_path, cache_dir):
    views = detector_cache.load_cache(cache_dir[1])
    run = tmp_path / "run"
    quiet = dict(batch_size=2, log=lambda *_: None)
    assert detector_head.train(views, run, steps=100, **quiet) == 100
    ckpt = torch.load(run / CHECKPOINT, weights_only=False)
    assert ckpt["step"] == 100 and ckpt["weights"] == "tasp_v2" and ckpt["targets"] == "soft"
    assert (run / CHECKPOINT).stat().st_size < 10e6  # small enough to commit
    logs = []
    assert detector_head.train(views, run, steps=200, batch_size=2, log=logs.append) == 200
    assert "resumed" in logs[0] and "step 100" in logs[0]
    rows = list(csv.reader(open(run / detector_head.CURVE)))
    assert rows[0] == ["step", "loss", "val_loss"] and [r[0] for r in rows[1:]] == ["100", "200"]
    with pytest.raises(ValueError, match="continues"):
        detector_head.train(views, run, steps=300, targets="integer", **quiet)

    exported = detector_head.export_network(run, tmp_path / "export.pth")
    weights = tmp_path / "weights.pth"
    torch.save(torch.load(exported, weights_only=False)["model"], weights)
    trained, released = TaSP({"weights": str(weights)}).eval(), TaSP().eval()
    assert trained.conf["detector_head"] == "pixel"
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, b = trained.forward_dense(image), released.forward_dense(image)
    assert torch.equal(a["descriptors_dense"], b["descriptors_dense"])  # all else frozen
    assert not torch.allclose(a["logits"], b["logits"])


def test_command_line_errors(tmp_path, capsys):
    run = str(tmp_path / "run")
    for argv, message in [
        (["--output", run], "--cache is required"),
        (["--output", run, "--export", str(tmp_path / "x")], "train first"),
        (["--output", run, "--cache", str(tmp_path), "--size", "60"], "multiple of 8"),
        (["--output", run, "--cache", str(tmp_path / "none")], "build the cache"),
    ]:
        with pytest.raises(SystemExit):
            detector_head.main(argv)
        assert message in capsys.readouterr().err
