"""Head-only detector training: frozen trunk, small resumable state, export to weights."""

import csv

import pytest
import torch

from tasp_hloc.model.tasp import TaSP
from tasp_hloc.train import detector_head
from tasp_hloc.train.checkpoints import CHECKPOINT

from conftest import write_photos


def test_loss_reaches_only_the_heads(tmp_path):
    from torch.utils.data import DataLoader

    from tasp_hloc.data.homographic import HomographicDataset
    from tasp_hloc.losses.triplet import HardTripletLoss
    from tasp_hloc.model.inference import FusedTaSPNet

    photos = write_photos(tmp_path / "photos", n=2, h=120, w=140)
    data = HomographicDataset({"image_dirs": [str(photos)], "seed": 0, "size": [64, 80]})
    batch = next(iter(DataLoader(data, 2)))
    model = detector_head.build_model("tasp_v2")
    trunk = FusedTaSPNet(model, "fp32")
    out = detector_head.detector_loss(model, trunk, batch, 50, HardTripletLoss())
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    assert 0 < out["labels"] <= 50 and 0 < out["positive_cells"] < 1
    out["loss"].backward()
    for name, p in model.named_parameters():
        trains = name.startswith(detector_head.HEADS)
        assert p.requires_grad == trains, name
        assert (p.grad is not None) == trains, name
    assert model.pixel_head.mix[-1].weight.grad.abs().sum() > 0


def test_train_resumes_and_exports(tmp_path):
    photos = write_photos(tmp_path / "photos", n=3, h=120, w=140)
    run = tmp_path / "run"
    args = dict(weights="tasp_v2", batch_size=1, size=64, labels=40, num_workers=0)
    assert detector_head.train([photos], run, steps=2, log=lambda *_: None, **args) == 2
    ckpt = torch.load(run / CHECKPOINT, weights_only=False)
    assert ckpt["step"] == 2 and ckpt["weights"] == "tasp_v2"
    assert all(k.startswith(detector_head.HEADS) for k in ckpt["heads"])
    assert (run / CHECKPOINT).stat().st_size < 10e6  # small enough to commit
    logs = []
    assert detector_head.train([photos], run, steps=3, log=logs.append, **args) == 3
    assert "resumed" in logs[0] and "step 2" in logs[0]
    rows = list(csv.reader(open(run / detector_head.CURVE)))
    assert rows[0][0] == "step" and [r[0] for r in rows[1:]] == ["2", "3"]
    with pytest.raises(ValueError, match="continues weights"):
        detector_head.train([photos], run, steps=4, **{**args, "weights": "tasp_v1"})

    exported = detector_head.export_network(run, tmp_path / "export.pth")
    state = torch.load(exported, weights_only=False)["model"]
    weights = tmp_path / "weights.pth"
    torch.save(state, weights)
    trained, released = TaSP({"weights": str(weights)}).eval(), TaSP().eval()
    assert trained.conf["detector_head"] == "pixel"
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, b = trained.forward_dense(image), released.forward_dense(image)
    assert torch.equal(a["descriptors_dense"], b["descriptors_dense"])  # the trunk is frozen
    assert not torch.allclose(a["logits"], b["logits"])


def test_command_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        detector_head.main(["--output", str(tmp_path / "run")])
    assert "--images is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        detector_head.main(["--output", str(tmp_path / "run"), "--export", str(tmp_path / "x")])
    assert "train first" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        detector_head.main(["--images", str(tmp_path), "--output", str(tmp_path), "--size", "60"])
    assert "multiple of 8" in capsys.readouterr().err
