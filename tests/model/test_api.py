"""The Python API: `from tasp_hloc import TaSP, ...`, and the README's five lines run as shown."""

import re
import subprocess
import sys
from pathlib import Path

import torch

import tasp_hloc
from tasp_hloc import TaSP, load_image, match_pair

ROOT = Path(__file__).resolve().parents[2]


def readme_api_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_top_level_names_are_the_real_objects():
    from tasp_hloc import (
        PRESETS,
        extract,
        extract_features,
        get_preset,
        match,
        match_features,
        register,
    )
    from tasp_hloc.hloc import confs
    from tasp_hloc.hloc import plugin as hloc_plugin
    from tasp_hloc.model import tasp

    assert TaSP is tasp.TaSP and extract_features is extract.extract
    assert match_features is match.match and register is hloc_plugin.register
    assert get_preset is confs.get_preset and PRESETS is confs.PRESETS
    assert set(tasp_hloc.__all__) <= set(dir(tasp_hloc))


def test_import_tasp_hloc_is_light():
    code = (
        "import sys, tasp_hloc\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'hloc', 'cv2')))\n"
        "tasp_hloc.TaSP\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert out.stdout.split("\n")[:2] == ["[]", "True"], out


def test_readme_snippet_runs_and_matches_the_demo_pair():
    scope = {}
    exec(compile(readme_api_snippet(), "README.md", "exec"), scope)  # paths are from the root
    matches, feats0 = scope["matches"], scope["feats0"]
    assert matches.shape[1] == 2 and len(matches) > 20
    assert scope["points0"].shape == scope["points1"].shape == (len(matches), 2)
    assert feats0["descriptors"].shape[-1] == 128
    assert feats0["image_size"].tolist() == [[324, 223]]


def test_extract_resize_returns_input_pixels():
    torch.manual_seed(0)
    model = TaSP({"weights": None, "max_keypoints": 50, "subpixel": None}).eval()
    image = load_image(ROOT / "tasp_hloc/assets/demo/box_in_scene.png")
    assert image.shape == (3, 384, 512) and image.dtype == torch.float32 and image.max() <= 1
    small = model.extract(image, resize=256)
    assert small["image_size"].tolist() == [[512, 384]]
    kp = small["keypoints"][0]
    assert (kp >= 0).all() and (kp[:, 0] <= 511).all() and (kp[:, 1] <= 383).all()
    assert kp[:, 0].max() > 300  # spans the full-size image, not the 256-px one
    same = model.extract(image[None], resize=1024)  # not enlarged: the plain forward
    with torch.no_grad():
        plain = model({"image": image[None]})
    assert torch.equal(same["keypoints"], plain["keypoints"])
    m = match_pair(same, same)
    assert torch.equal(m["matches"][0][:, 0], m["matches"][0][:, 1])
    valid = m["matches0"][0] > -1
    assert torch.equal(torch.nonzero(valid)[:, 0], m["matches"][0][:, 0])
    assert len(m["scores"][0]) == int(valid.sum()) >= 1
