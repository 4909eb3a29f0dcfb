"""What every pipeline shares: its logger, its error type, the command-line wrapper, the lazy
hloc import and the "step already done" test.

Everything that needs hloc imports it lazily through `require_hloc()`, so the pipelines' modules
import and their hloc-free parts work without hloc. The pieces live by concern beside this file:
`results` (submission files), `poses` (quaternions, pose errors), `h5_repair` (files of killed
runs), `hloc_steps` (extraction and matching through hloc), `retrieval` (query pairs),
`triangulate` (the pycolmap-4 fix) and `inloc_localize` (InLoc localization).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger("pipelines")
if not logger.handlers:
    _h = logging.StreamHandler()
    _h.setFormatter(
        logging.Formatter("[%(asctime)s pipelines %(levelname)s] %(message)s", "%Y/%m/%d %H:%M:%S")
    )
    logger.addHandler(_h)
    logger.setLevel(logging.INFO)
    logger.propagate = False

HLOC_MISSING = (
    "hloc is not installed. It is not on PyPI: install it from its repository, e.g.\n"
    "  git clone --recursive https://github.com/cvg/Hierarchical-Localization && "
    "pip install -e Hierarchical-Localization"
)


class PipelineError(RuntimeError):
    """A step produced nothing usable; the message says which file and what to do."""


def run_cli(main):
    """Run a pipeline's main(): expected failures end with their message, not a traceback."""
    import sys

    try:
        main()
    except (PipelineError, FileNotFoundError, ImportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def cli_parser(doc: str, dataset_help: str) -> argparse.ArgumentParser:
    """A pipeline's command line: its module docstring as help, --dataset and --outputs."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", type=Path, required=True, help=dataset_help)
    p.add_argument("--outputs", type=Path, required=True, help="output folder")
    return p


def require_hloc():
    try:
        import hloc  # noqa: F401
    except ImportError as e:  # pragma: no cover - exercised only without hloc
        raise ImportError(HLOC_MISSING) from e
    return hloc


def done(path: Path, what: str) -> bool:
    """True (and a log line) when `path` exists and is non-empty: the step is skipped."""
    path = Path(path)
    if path.exists() and path.stat().st_size > 0:
        logger.info("Skipping %s: %s exists.", what, path)
        return True
    return False
