import json
from pathlib import Path

import pytest
import torch

from tasp_hloc.model import weights as W
from tasp_hloc.model.tasp import TaSP


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    """A private weights folder with one released entry, wired into the loader."""
    model = TaSP({"weights": None, "backbone": "efficientnet_lite0", "descriptor_dim": 64})
    path = tmp_path / "tasp_test.pth"
    torch.save(model.state_dict(), path)
    manifest = {
        "format": 1,
        "weights": {
            "tasp_test": {
                "file": path.name,
                "sha256": W.sha256sum(path),
                "backbone": "efficientnet_lite0",
                "descriptor_dim": 64,
            }
        },
    }
    (tmp_path / W.MANIFEST_NAME).write_text(json.dumps(manifest))
    original = W.load_state_dict
    monkeypatch.setattr(
        "tasp_hloc.model.tasp.load_state_dict", lambda name: original(name, weights_dir=tmp_path)
    )
    return tmp_path, model


def test_shipped_manifest_is_valid_and_files_match():
    manifest = W.read_manifest()
    for name, entry in manifest["weights"].items():
        path = W.WEIGHTS_DIR / entry["file"]
        assert path.exists(), name
        assert W.sha256sum(path) == entry["sha256"], name
        for key in ("backbone", "descriptor_dim", "recipe", "results"):
            assert key in entry, (name, key)


def test_load_by_name_takes_architecture_from_the_file(weights_dir):
    _, reference = weights_dir
    model = TaSP({"weights": "tasp_test"})
    assert model.conf["backbone"] == "efficientnet_lite0" and model.conf["descriptor_dim"] == 64
    for k, v in reference.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_load_by_path(weights_dir):
    root, _ = weights_dir
    model = TaSP({"weights": str(root / "tasp_test.pth")})
    assert model.conf["descriptor_dim"] == 64


def test_missing_weights_say_what_to_do(weights_dir):
    with pytest.raises(W.WeightsError, match="weights=None"):
        TaSP({"weights": "tasp_v999"})
    with pytest.raises(W.WeightsError, match="does not exist"):
        TaSP({"weights": "/nonexistent/model.pth"})
    root, _ = weights_dir
    (root / "tasp_test.pth").unlink()
    with pytest.raises(W.WeightsError, match="is missing"):
        TaSP({"weights": "tasp_test"})


def test_corrupt_file_is_caught_by_sha256_and_by_unpickling(weights_dir):
    root, _ = weights_dir
    path = root / "tasp_test.pth"
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    with pytest.raises(W.WeightsError, match="sha256"):
        TaSP({"weights": "tasp_test"})
    with pytest.raises(W.WeightsError, match="corrupt"):
        TaSP({"weights": str(path)})


def test_mismatched_conf_and_foreign_state_dict(weights_dir, tmp_path):
    with pytest.raises(W.WeightsError, match="descriptor_dim"):
        TaSP({"weights": "tasp_test", "descriptor_dim": 128})
    foreign = tmp_path / "foreign.pth"
    torch.save({"conv.weight": torch.zeros(3)}, foreign)
    with pytest.raises(W.WeightsError, match="Not a TaSP state_dict"):
        TaSP({"weights": str(foreign)})
    broken = TaSP({"weights": None, "descriptor_dim": 64}).state_dict()
    del broken["detector_head.bias"]
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(W.WeightsError, match="do not fit"):
        TaSP({"weights": str(tmp_path / "broken.pth")})


@pytest.mark.parametrize(
    "value, expected",
    [
        ("none", None),
        ("None", None),
        ("RANDOM", None),
        ("tasp_v2", "tasp_v2"),
        ("weights/none.pth", "weights/none.pth"),
        (Path("a/b.pth"), "a/b.pth"),
    ],
)
def test_weights_argument_of_every_command_line(value, expected):
    from tasp_hloc.model.weights import weights_argument

    assert weights_argument(value) == expected
