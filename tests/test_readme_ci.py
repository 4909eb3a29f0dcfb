"""The README's set-up and test commands are exactly what CI runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ci_commands():
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    marks = {l.strip(): i for i, l in enumerate(lines)}
    setup = lines[marks["# --- README: set-up ---"] + 1].strip()
    test = lines[marks["# --- README: test ---"] + 1].strip()
    return setup, test


def test_readme_shows_the_ci_commands():
    readme = (ROOT / "README.md").read_text()
    setup, test = _ci_commands()
    assert f"\n{setup}\n" in readme
    assert f"\n{test}\n" in readme
    assert "torch==2.13.0" in setup  # an unpinned torch pulls a CUDA build


def test_ci_script_is_executable():
    assert (ROOT / ".ci" / "run").stat().st_mode & 0o111
