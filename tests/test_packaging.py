"""What `pip install .`, a wheel and an sdist install: every released weight, every config, every
module, the hloc hook, and not the repository's tools (tools/, the photo gatherer); and an
installed copy finds its weights and loads the training recipes outside the checkout.

The wheel and the sdist are built from a copy of the checkout (the build backend writes build/
and *.egg-info next to the sources) with setuptools' PEP 517 backend, offline.
"""

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PTH = "tasp_hloc_autoregister.pth"
SKIP = shutil.ignore_patterns(
    ".git",
    ".venv",
    "venv",
    "runs",
    "outputs",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    "*.h5",
    "*.tmp",
)

pytest.importorskip(
    "setuptools", reason="building the wheel needs setuptools (pip install -e .[dev])"
)


def _backend(source: Path, hook: str, out: Path) -> Path:
    code = f"import setuptools.build_meta as b; print(b.{hook}({str(out)!r}))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=source, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out / done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    dest = tmp_path_factory.mktemp("src") / "tasp-hloc"
    shutil.copytree(ROOT, dest, ignore=SKIP)
    return dest


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory):
    return _backend(source, "build_wheel", tmp_path_factory.mktemp("wheel"))


def expected_files():
    """Wheel path -> repository file: all of weights/, of tasp_hloc/train/configs/ and every
    module of tasp_hloc (the hook's tasp_hloc/hloc/autoregister.py among them)."""
    files = {
        f"tasp_hloc/_weights/{p.relative_to(ROOT / 'weights').as_posix()}": p
        for p in (ROOT / "weights").rglob("*")
        if p.is_file()
    }
    configs = ROOT / "tasp_hloc" / "train" / "configs"
    files.update(
        {
            f"tasp_hloc/train/configs/{p.relative_to(configs).as_posix()}": p
            for p in configs.rglob("*.yaml")
        }
    )
    files[PTH] = ROOT / PTH
    # every module, those of subpackages (tasp_hloc/data/multiview/, ...) included
    files.update(
        {
            p.relative_to(ROOT).as_posix(): p
            for p in (ROOT / "tasp_hloc").rglob("*.py")
            if "__pycache__" not in p.parts
        }
    )
    return files


def test_wheel_holds_every_weight_config_and_the_hook(wheel):
    expected = expected_files()
    assert any(k.endswith("manifest.json") for k in expected)
    assert len([k for k in expected if "/configs/" in k]) >= 10
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        missing = sorted(set(expected) - names)
        assert not missing, f"not in {wheel.name}: {missing}"
        for name, path in expected.items():
            assert z.read(name) == path.read_bytes(), name
        # the repository's own tools stay in the checkout: tests, the benchmark harness and the
        # experiments built on it are never installed
        outside = ("weights/", "tests/", "benchmarks/", "experiments/")
        assert not any(n.startswith(outside) for n in names)


def test_wheel_carries_the_package_not_the_repository_tools(wheel, source):
    # the copy the wheel is built from holds tools/ (the photo gatherer); the wheel leaves it out
    assert (source / "tools" / "photos" / "gather.py").is_file()
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"tasp_hloc", "pipelines", PTH}, top
    assert not [n for n in names if n.startswith(("tools/", "tasp_hloc/data/photos/"))]
    assert "tasp_hloc/data/gather_photos.py" not in names
    assert "tasp_hloc/data/multiview/build.py" in names  # the multiview builder stays


def test_sdist_builds_the_same_wheel(source, wheel, tmp_path):
    sdist = _backend(source, "build_sdist", tmp_path)
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(tmp_path / "unpacked", **safe)
    assert {f"weights/{p.name}" for p in (ROOT / "weights").iterdir()} <= members
    assert PTH in members
    unpacked = next((tmp_path / "unpacked").iterdir())
    again = _backend(unpacked, "build_wheel", tmp_path / "again")
    with zipfile.ZipFile(wheel) as a, zipfile.ZipFile(again) as b:
        assert set(a.namelist()) == set(b.namelist())


def test_installed_copy_finds_its_weights_outside_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    code = (
        "import tasp_hloc, tasp_hloc.model.weights as w\n"
        "from tasp_hloc import TaSP\n"
        "print('FILE', tasp_hloc.__file__)\n"
        "print('DIR', w.WEIGHTS_DIR)\n"
        "model = TaSP()\n"  # the default released weights
        "print('LOADED', model.conf['weights'], model.conf['backbone'])\n"
        "from tasp_hloc.train.config import CONFIG_DIR\n"
        "print('CONFIGS', len(list(CONFIG_DIR.rglob('*.yaml'))))\n"
        "import importlib.util\n"
        "print('HARVESTER', importlib.util.find_spec('tasp_hloc.data.photos'))\n"
        "from tasp_hloc.train.config import load_config\n"
        "print('RECIPE', load_config('photos_v3').name)\n"  # trains on the gathered folder
    )
    env = {k: v for k, v in os.environ.items() if k != "TASP_WEIGHTS_DIR"}
    env["PYTHONPATH"] = str(site)  # before the editable install's finder
    (tmp_path / "cwd").mkdir()
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path / "cwd",
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"FILE {site / 'tasp_hloc' / '__init__.py'}" in out.stdout
    assert f"DIR {site / 'tasp_hloc' / '_weights'}" in out.stdout
    from tasp_hloc.model.tasp import TaSP

    assert f"LOADED {TaSP.default_conf['weights']}" in out.stdout
    configs = len(list((ROOT / "tasp_hloc/train/configs").rglob("*.yaml")))
    assert f"CONFIGS {configs}" in out.stdout
    assert "HARVESTER None" in out.stdout
    assert "RECIPE tasp_photos_v3" in out.stdout


def test_missing_weights_say_the_installation_lacks_them(tmp_path, monkeypatch):
    from tasp_hloc.model import weights as W

    with pytest.raises(W.WeightsError, match="lacks the released weights"):
        W.resolve("tasp_v1", weights_dir=tmp_path)
    monkeypatch.setenv("TASP_WEIGHTS_DIR", str(tmp_path))
    assert W.default_weights_dir() == tmp_path
