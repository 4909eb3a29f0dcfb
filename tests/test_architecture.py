"""The layer rules of ARCHITECTURE.md, read from the source: which part of the package may
import which, that only ``tasp_hloc/hloc/`` imports hloc, that the benchmark harness never imports
the experiments built on it, and that no module outgrows 500 lines."""

import ast
from pathlib import Path
from typing import Dict, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tasp_hloc"

# part -> the parts of tasp_hloc it may import (a part is a subpackage or a top-level module)
TRAINING = {"data", "labels", "losses", "train"}
ALLOWED: Dict[str, Set[str]] = {
    "runtime": set(),
    "options": set(),
    "grid": set(),
    "assets": set(),
    "io": {"grid", "options"},
    "model": {"grid", "options", "runtime", "assets"},
    "hloc": {"model", "io", "runtime"},
    "extract": {"model", "io", "runtime"},
    "match": {"model", "io", "runtime"},
    "sharding": {"extract", "match", "io", "runtime"},
    "demo": {"extract", "match", "model", "io"},
    "onnx_export": {"model"},
    "__main__": {
        "assets",
        "demo",
        "onnx_export",
        "extract",
        "match",
        "sharding",
        "hloc",
        "io",
        "model",
        "runtime",
    },
    "hloc_extract_features": {"hloc"},
    "data": {"grid", "io", "labels", "options"},
    "losses": {"grid", "model", "options"},
    "labels": {"grid", "io", "model", "options"},
    "train": {"data", "labels", "losses", "model", "io", "runtime"},
}


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path):
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = (
        module.rsplit(".", 1)[0] if path.name != "__init__.py" else module[: -len(".__init__")]
    )
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            if target == "tasp_hloc":  # from tasp_hloc import extract, ...
                yield from (f"tasp_hloc.{a.name}" for a in node.names)
            else:
                yield target


MODULES = sorted(PACKAGE.rglob("*.py"))
# outside the package, which it never imports
OUTSIDE = ("pipelines", "benchmarks", "experiments", "tools")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_layers_import_only_what_they_may(path):
    part = part_of(".".join(path.relative_to(ROOT).with_suffix("").parts))
    if part == "__init__":
        return  # the lazy public names
    assert part in ALLOWED, f"{path}: a new part of the package; add it to ARCHITECTURE.md"
    for name in imports_of(path):
        assert name.split(".")[0] not in OUTSIDE, f"{path} imports {name}"
        if name.split(".")[0] == "hloc":
            assert part == "hloc", f"{path} imports hloc; only tasp_hloc/hloc/ may"
        if name.startswith("tasp_hloc."):
            other = part_of(name)
            assert other == part or other in ALLOWED[part], f"{path} imports {name}"


def test_inference_never_imports_training():
    inference_side = {p for p in ALLOWED if p not in TRAINING}
    for part in inference_side:
        assert not ALLOWED[part] & TRAINING, part


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "benchmarks").rglob("*.py")) + sorted((ROOT / "pipelines").rglob("*.py")),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_harness_and_pipelines_never_import_the_experiments(path):
    """experiments/ uses the harness (benchmarks/) and the pipelines; never the reverse."""
    for name in imports_of(path):
        assert name.split(".")[0] != "experiments", f"{path} imports {name}"


def test_experiments_stay_out_of_the_harness():
    """Every study is a module of experiments/, run as ``python -m experiments.NAME``, and
    experiments/README.md lists each with its command."""
    studies = sorted(p.stem for p in (ROOT / "experiments").glob("*.py") if p.stem != "__init__")
    assert studies
    readme = (ROOT / "experiments" / "README.md").read_text()
    for name in studies:
        assert f"`{name}.py`" in readme and f"python -m experiments.{name}" in readme, name
        assert not (ROOT / "benchmarks" / f"{name}.py").exists(), name


def test_no_module_over_500_lines():
    """One concept per module: past ~500 lines a module holds more than one; split it."""
    roots = [PACKAGE, ROOT / "pipelines", ROOT / "benchmarks", ROOT / "experiments", ROOT / "tools"]
    long = {
        str(p.relative_to(ROOT)): n
        for root in roots
        for p in root.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 500
    }
    assert not long, long
