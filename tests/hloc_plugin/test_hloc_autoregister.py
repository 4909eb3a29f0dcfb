"""Zero-code hloc: a fresh process whose code never mentions tasp_hloc selects ``tasp`` by name.

The hook comes from ``tasp_hloc_autoregister.pth``, installed in site-packages by
``pip install [-e] .``. Each check runs in a subprocess, against a stand-in package with hloc's
module layout (always) and against the real hloc where it is installed.
"""

import importlib.metadata
import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import cv2
import pytest

from conftest import render_scene, requires_hloc
from hloc_standin import write_hloc_standin

ROOT = Path(__file__).resolve().parents[2]
PTH = "tasp_hloc_autoregister.pth"


def _site_dirs():
    dirs = set(site.getsitepackages()) | {sysconfig.get_paths()["purelib"]}
    if site.ENABLE_USER_SITE:
        dirs.add(site.getusersitepackages())
    return [Path(d) for d in dirs]


def _installed_pth():
    for d in _site_dirs():
        if (d / PTH).is_file():
            return d / PTH
    return None


try:
    importlib.metadata.distribution("tasp-hloc")
    PIP_INSTALLED = True
except importlib.metadata.PackageNotFoundError:
    PIP_INSTALLED = False

pytestmark = pytest.mark.skipif(
    not PIP_INSTALLED,
    reason="tasp-hloc is not pip-installed here (the hook comes with "
    "`pip install -e .`), e.g. tests run from a bare checkout",
)


def run(code, tmp_path, pythonpath=(), env=None, argv=(), zero_code=True):
    """`python -c code argv...` (or `python argv...` without code) from an empty folder, so
    the checkout is not on sys.path; PYTHONPATH is exactly `pythonpath`."""
    assert not zero_code or code is None or "tasp_hloc" not in code
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    full_env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TASP_HLOC_AUTOREGISTER")
    }
    full_env.update({"PYTHONPATH": os.pathsep.join(map(str, pythonpath)), **(env or {})})
    cmd = [sys.executable, *(["-c", code] if code is not None else []), *map(str, argv)]
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def standin(tmp_path):
    return write_hloc_standin(tmp_path / "standin")


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    cv2.imwrite(str(root / "a.png"), render_scene(96, 128, 0))
    return root


ZERO_CODE = (Path(__file__).parents[1] / "hloc_zero_code.py").read_text()


def _check_zero_code(out):
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MODEL hloc.extractors.tasp TaSPExtractor" in out.stdout
    assert "CONFS ['tasp', 'tasp_aachen', 'tasp_dog', 'tasp_inloc']" in out.stdout
    line = next(l for l in out.stdout.splitlines() if l.startswith("KEYPOINTS"))
    assert line.startswith("KEYPOINTS a.png ") and line.endswith(
        " feats-tasp-n4096-r1024-s1-0.71-0.5.h5"
    )


def test_pth_is_installed_and_current():
    pth = _installed_pth()
    assert pth is not None, (
        f"{PTH} is in no site-packages of {sys.executable}: reinstall "
        "(pip install -e .) to get the hloc hook"
    )
    assert pth.read_text() == (ROOT / PTH).read_text(), f"{pth} is stale: reinstall"


def test_standin_hloc_selects_tasp_with_no_code(standin, images, tmp_path):
    _check_zero_code(run(ZERO_CODE, tmp_path, [standin], argv=[images, tmp_path / "out"]))


@requires_hloc
def test_real_hloc_selects_tasp_with_no_code(images, tmp_path):
    """The real hloc, found as in this process (installed, or on PYTHONPATH)."""
    path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    _check_zero_code(run(ZERO_CODE, tmp_path, path, argv=[images, tmp_path / "out"]))


def test_startup_imports_neither_torch_nor_hloc(tmp_path):
    code = (
        "import sys\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'hloc', 'numpy', 'cv2', 'h5py'))\n"
        "print('HEAVY', heavy)\n"
        "print('HOOK', 'HlocFinder' in [type(f).__name__ for f in sys.meta_path])\n"
    )
    out = run(code, tmp_path)
    assert out.returncode == 0 and "HEAVY []" in out.stdout, out
    assert "HOOK True" in out.stdout
    off = run(code, tmp_path, env={"TASP_HLOC_AUTOREGISTER": "0"})
    assert "HEAVY []" in off.stdout and "HOOK False" in off.stdout


def test_env_var_switches_it_off(standin, tmp_path):
    code = (
        "import sys\n"
        "import hloc.extractors\n"
        "from hloc import extract_features\n"
        "from hloc.utils.base_model import dynamic_load\n"
        "print('CONFS', [k for k in extract_features.confs if k.startswith('tasp')])\n"
        "print('LOADED', any(m.startswith('tasp') for m in sys.modules))\n"
        "try:\n    dynamic_load(hloc.extractors, 'tasp')\n"
        "except ImportError as e:\n    print('MISSING', type(e).__name__)\n"
    )
    for value in ("0", "off", "false"):
        out = run(code, tmp_path, [standin], env={"TASP_HLOC_AUTOREGISTER": value})
        assert out.returncode == 0, out.stderr
        assert "CONFS []" in out.stdout and "LOADED False" in out.stdout
        assert "MISSING ModuleNotFoundError" in out.stdout


@pytest.mark.parametrize("broken", ["hloc", "torch", "tasp_hloc"])
def test_nothing_broken_ever_breaks_startup(broken, standin, tmp_path):
    """A broken hloc, torch or tasp_hloc first on the path: Python still starts, silently."""
    shadow = tmp_path / "shadow" / broken
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise RuntimeError('broken on purpose')\n")
    out = run("print('STARTED')", tmp_path, [tmp_path / "shadow", standin])
    assert out.returncode == 0 and out.stdout == "STARTED\n" and out.stderr == "", out
    if broken == "tasp_hloc":  # hloc still imports, just without TaSP
        out = run(
            "from hloc import extract_features; print(sorted(extract_features.confs))",
            tmp_path,
            [tmp_path / "shadow", standin],
        )
        assert out.returncode == 0 and "['superpoint_aachen']" in out.stdout, out


def test_hloc_without_torch_fails_with_its_own_error(standin, tmp_path):
    shadow = tmp_path / "shadow" / "torch"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('no torch here')\n")
    out = run("import hloc.extract_features", tmp_path, [tmp_path / "shadow", standin])
    assert out.returncode == 1 and "no torch here" in out.stderr
    assert "tasp_hloc" not in out.stderr.split("ImportError: no torch here")[-1]


def test_explicit_register_and_the_equivalent_command(standin, images, tmp_path):
    code = (
        "from tasp_hloc.hloc.plugin import register\n"
        "import hloc.extractors\n"
        "from hloc import extract_features\n"
        "from hloc.utils.base_model import dynamic_load\n"
        "m = register(weights='w.pth')\n"
        "print('SAME', m is hloc.extractors.tasp, dynamic_load(hloc.extractors, 'tasp') is m.TaSPExtractor)\n"
        "print('W', extract_features.confs['tasp_aachen']['model']['weights'])\n"
        "from hloc import match_features\n"
        "print('M', match_features.confs['NN-tasp']['model']['distance_threshold'])\n"
    )
    out = run(code, tmp_path, [standin], zero_code=False)
    assert out.returncode == 0, out.stderr
    assert "SAME True True" in out.stdout and "W w.pth" in out.stdout and "M 0.6" in out.stdout
    # hloc's own command line cannot list plugins; ours takes the same flags.
    cli = run(
        None,
        tmp_path,
        [standin],
        argv=[
            "-m",
            "tasp_hloc.hloc_extract_features",
            "--conf",
            "tasp_inloc",
            "--image_dir",
            images,
            "--export_dir",
            tmp_path / "cli",
        ],
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert (tmp_path / "cli" / "feats-tasp-n4096-r1600.h5").is_file()
    theirs = run(
        None,
        tmp_path,
        [standin],
        argv=[
            "-m",
            "hloc.extract_features",
            "--conf",
            "tasp_inloc",
            "--image_dir",
            "x",
            "--export_dir",
            "y",
        ],
    )
    assert theirs.returncode == 2 and "invalid choice: 'tasp_inloc'" in theirs.stderr
