"""torch.hub: ``torch.hub.load(<checkout>, "tasp", source="local")`` builds TaSP offline with
the released weights and the caller's options; hubconf.py stays out of the installed package."""

from pathlib import Path

import torch

from tasp_hloc import load_image
from tasp_hloc.assets import DEMO_DIR
from tasp_hloc.model.tasp import TaSP

ROOT = Path(__file__).resolve().parents[2]


def test_hub_load_gives_the_released_model_with_overrides():
    model = torch.hub.load(str(ROOT), "tasp", source="local", max_keypoints=100, subpixel=None)
    assert isinstance(model, TaSP) and not model.training
    assert model.conf["weights"] == "tasp_v2"
    assert model.conf["max_keypoints"] == 100 and model.conf["subpixel"] is None
    features = model.extract(load_image(DEMO_DIR / "box.png"))
    assert features["keypoints"].shape == (1, 100, 2)
    assert features["descriptors"].shape[:2] == (1, 100)
    assert torch.allclose(features["descriptors"].norm(dim=-1), torch.ones(1, 100), atol=1e-5)


def test_hub_load_without_pretrained_weights_is_random():
    model = torch.hub.load(str(ROOT), "tasp", source="local", pretrained=False)
    assert isinstance(model, TaSP) and model.conf["weights"] is None


def test_hubconf_is_not_a_module_of_the_package():
    setup = (ROOT / "setup.py").read_text() + (ROOT / "setup.cfg").read_text()
    assert "py_modules" not in setup and "hubconf" not in setup  # packages only
