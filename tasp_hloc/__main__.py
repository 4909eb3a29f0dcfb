"""Command line: ``python -m tasp_hloc {extract,match,demo,export-onnx} ...`` (no hloc needed)."""

import argparse
import errno
import logging
import os
import sys
from pathlib import Path

from .assets import DEMO_DIR
from .hloc.confs import PRESETS, get_preset
from .io.h5_journal import FileBusyError
from .model.weights import WeightsError, weights_argument
from .runtime.allocator import keep_freed_memory_once


def _model_overrides(args) -> dict:
    overrides = {"weights": weights_argument(args.weights)} if args.weights is not None else {}
    for key in ("max_keypoints", "amp", "detection_threshold", "scales", "detector"):
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
    return overrides


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tasp_aachen", choices=sorted(PRESETS))
    p.add_argument(
        "--weights", help="released name, .pth path, or 'random' (untrained, tests only)"
    )
    p.add_argument("--max-keypoints", dest="max_keypoints", type=int)
    p.add_argument("--detection-threshold", dest="detection_threshold", type=float)
    p.add_argument(
        "--detector",
        choices=["tasp", "dog"],
        help="keypoints from TaSP's own detector or SIFT's DoG (TaSP descriptors either way)",
    )
    p.add_argument(
        "--scales",
        type=float,
        nargs="+",
        help="extract at these image scales, e.g. 1 0.71 0.5, for views far apart in scale",
    )
    p.add_argument("--resize-max", dest="resize_max", type=int, help="longest image side")
    p.add_argument("--amp", choices=["fp16", "bf16"], help="autocast the network")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")


def _add_commit_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--commit-every",
        dest="commit_every",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="commit the output at most this often; a kill -9 "
        "loses at most the work since (0: commit after every item; default: 1)",
    )


def _conf(args) -> dict:
    conf = get_preset(args.preset, **_model_overrides(args))
    if args.resize_max is not None:
        conf["preprocessing"]["resize_max"] = args.resize_max
    return conf


class OutputError(Exception):
    """An ``--output`` that cannot be used; the message says why and what to do."""


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _has_hdf5_signature(path: Path) -> bool:
    """The HDF5 signature at byte 0, 512, 1024, 2048... (a user block may come first). Only
    the bytes: unlike ``h5py.is_hdf5`` this accepts the file a killed run left (write flag
    still set), which the run itself recovers."""
    size, offset = path.stat().st_size, 0
    with open(path, "rb") as fd:
        while offset + len(HDF5_SIGNATURE) <= size:
            fd.seek(offset)
            if fd.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                return True
            offset = 512 if offset == 0 else offset * 2
    return False


def _check_output(path: Path) -> None:
    """Fail early, in one line, on an ``--output`` that HDF5 would reject with a cryptic
    error: a folder, an existing file that is not HDF5, a folder we may not write in."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(
            f"{path} is a folder; give a file name for --output, e.g. {path / 'out.h5'}"
        )
    if path.exists():
        if not path.is_file() or not _has_hdf5_signature(path):
            raise OutputError(
                f"{path} exists but is not an HDF5 file; delete it or choose another --output"
            )
        if not os.access(path, os.R_OK | os.W_OK):
            raise OutputError(
                f"{path} is not writable (permission denied); change its permissions "
                "or choose another --output"
            )
        return
    _check_folder(path)


def _check_folder(path: Path) -> None:
    """The folder of a new ``--output`` file is one we may write in (or may create)."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # created by the run
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(
            f"cannot create {path}: {folder} is not a folder; choose another --output"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(
            f"cannot create {path}: no permission to write in folder {folder}; "
            "choose another --output or make the folder writable"
        )


def cmd_extract(args) -> int:
    _check_output(args.output)
    from .io.images import read_image_list
    from .sharding import extract_sharded

    names = read_image_list(args.image_list) if args.image_list else None
    _, failures = extract_sharded(  # one process, or shards under torchrun
        _conf(args),
        args.images,
        args.output,
        names=names,
        as_half=not args.no_half,
        overwrite=args.overwrite,
        device=args.device,
        num_workers=args.workers,
        fail_fast=args.fail_fast,
        commit_every=args.commit_every,
        batch_size=args.batch_size,
    )
    return 1 if failures else 0


def cmd_match(args) -> int:
    from .io.hloc_format import feature_names, write_pairs
    from .match import exhaustive_pairs
    from .sharding import match_sharded

    _check_output(args.output)
    pairs = args.pairs
    if pairs is None:
        pairs = Path(args.output).with_suffix(".pairs.txt")
        if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reads the pairs
            write_pairs(exhaustive_pairs(feature_names(args.features)), pairs)
            print(f"No --pairs given: matching all pairs, listed in {pairs}")
    match_sharded(
        pairs,
        args.features,
        args.output,
        device=args.device,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        commit_every=args.commit_every,
        max_distance=args.max_distance,
    )
    return 0


def _check_onnx_output(path: Path) -> None:
    """Fail early, in one line, on an ``--output`` the export could not write."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(
            f"{path} is a folder; give a file name for --output, e.g. {path / 'tasp.onnx'}"
        )
    if path.exists() and not (path.is_file() and os.access(path, os.W_OK)):
        raise OutputError(f"{path} exists and cannot be replaced; choose another --output")
    _check_folder(path)


def cmd_export_onnx(args) -> int:
    from . import onnx_export

    _check_onnx_output(args.output)
    if args.size is not None and (min(args.size) <= 0 or args.size[0] % 8 or args.size[1] % 8):
        raise ValueError(
            f"--size takes H W, positive multiples of 8 (e.g. 480 640), got {args.size}"
        )
    try:
        conf = {} if args.weights is None else {"weights": weights_argument(args.weights)}
        info = onnx_export.export_onnx(
            args.output,
            onnx_export.build_model(**conf),
            size=args.size,
            opset=args.opset or onnx_export.OPSET,
        )
    except onnx_export.MissingDependency as e:
        return _report(e)
    size = "H x W (multiples of 8)" if info["size"] is None else "%d x %d" % info["size"]
    check = info["max_abs_diff"]
    check = "not checked (no onnxruntime)" if check is None else f"max |diff| {check:.1e}"
    print(
        f"Wrote {info['output']}: weights {info['weights']}, images {size}, opset "
        f"{info['opset']}; onnxruntime against torch: {check}"
    )
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(_conf(args), DEMO_DIR, Path(args.output), device=args.device)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasp_hloc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("extract", help="images -> hloc feature file (.h5)")
    p.add_argument("--images", type=Path, required=True, help="folder searched recursively")
    p.add_argument("--image-list", dest="image_list", type=Path, help="names relative to --images")
    p.add_argument("--output", type=Path, required=True, help="feature file, e.g. feats.h5")
    _add_model_args(p)
    p.add_argument("--no-half", action="store_true", help="store float32 instead of float16")
    p.add_argument("--overwrite", action="store_true", help="re-extract images already stored")
    p.add_argument(
        "--fail-fast",
        dest="fail_fast",
        action="store_true",
        help="stop at the first unreadable image instead of skipping it",
    )
    p.add_argument("--workers", type=int, default=2, help="image decoding processes")
    p.add_argument(
        "--batch-size",
        dest="batch_size",
        type=int,
        default=1,
        help="images of one size per network call (for GPUs; default 1)",
    )
    _add_commit_arg(p)
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("match", help="pairs + feature file -> hloc match file (mutual NN)")
    p.add_argument("--features", type=Path, required=True)
    p.add_argument("--pairs", type=Path, help="'name0 name1' per line (default: all pairs)")
    p.add_argument("--output", type=Path, required=True, help="match file, e.g. matches.h5")
    p.add_argument("--device")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=16)
    p.add_argument(
        "--max-distance",
        dest="max_distance",
        type=float,
        help="drop matches farther apart (hloc's distance_threshold; NN-tasp: 0.6, for "
        "matching against many images); default: none (hloc's NN-mutual)",
    )
    p.add_argument("--overwrite", action="store_true")
    _add_commit_arg(p)
    p.set_defaults(func=cmd_match)

    p = sub.add_parser("demo", help="extract + match the bundled image pair, draw the matches")
    _add_model_args(p)
    p.add_argument("--output", default="outputs/demo", help="folder for the .h5 files and PNG")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "export-onnx", help="the network (dense outputs) as an ONNX file, for onnxruntime"
    )
    p.add_argument("--output", type=Path, required=True, help="the file, e.g. tasp.onnx")
    p.add_argument(
        "--weights", help="released name or .pth path (default: TaSP's), or 'random' (tests)"
    )
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="a file for this image size only (multiples of 8); default: any size",
    )
    p.add_argument("--opset", type=int, help="ONNX opset (default: 18)")
    p.set_defaults(func=cmd_export_onnx)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    keep_freed_memory_once()  # process-wide, so set here (runtime/allocator.py)
    try:  # every error of a run surfaces here: one line on stderr, exit code 2
        return args.func(args)
    except OutputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno != errno.ENOSPC and "No space left on device" not in str(e):
            return _report(e)
        target = getattr(args, "output", None) or e.filename
        print(
            f"error: no space left on device while writing {target}; free space and run "
            "the same command again (finished "
            + {"extract": "images", "match": "pairs"}.get(args.command, "files")
            + " are kept)",
            file=sys.stderr,
        )
        return 2
    except (WeightsError, FileBusyError, KeyError, ValueError) as e:
        return _report(e)


def _report(e: Exception) -> int:
    message = e.args[0] if isinstance(e, KeyError) and e.args else e  # no repr quotes
    print(f"error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
