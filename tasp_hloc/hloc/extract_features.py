"""hloc's ``extract_features`` command line, with the TaSP presets among its ``--conf`` choices.

    python -m tasp_hloc.hloc_extract_features --conf tasp_aachen --image_dir IMAGES --export_dir OUT

``python -m hloc.extract_features --conf tasp_aachen`` cannot work without changing hloc: that
command builds its ``--conf`` choices from the dict literal of the module it is running, after
every import, where no plugin can add to it. This command takes hloc's flags, registers TaSP,
and calls hloc's own ``extract_features.main``; any of hloc's confs works too.
"""

import argparse
from pathlib import Path


def main(argv=None):
    from .plugin import register

    register()
    from hloc import extract_features

    parser = argparse.ArgumentParser(
        prog="python -m tasp_hloc.hloc_extract_features",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--image_dir", type=Path, required=True)
    parser.add_argument("--export_dir", type=Path, required=True)
    parser.add_argument(
        "--conf", type=str, default="tasp_aachen", choices=list(extract_features.confs.keys())
    )
    parser.add_argument("--as_half", action="store_true")
    parser.add_argument("--image_list", type=Path)
    parser.add_argument("--feature_path", type=Path)
    args = parser.parse_args(argv)
    return extract_features.main(
        extract_features.confs[args.conf],
        args.image_dir,
        args.export_dir,
        args.as_half,
        args.image_list,
        args.feature_path,
    )


if __name__ == "__main__":
    main()
