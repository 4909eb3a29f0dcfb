"""Label a folder of images: ``python -m tasp_hloc.labels --images DIR --output OUT``.

OUT is a cache folder (one atomic .npz per image, resumable), or a ``.h5`` file: then the cache
lives in ``OUT.cache/`` next to it and is packed into OUT (atomically) at the end. Rerunning
skips images already labelled with the same conf. Image ids are paths relative to ``--images``.
"""

import argparse
import json
from pathlib import Path

from tqdm import tqdm

from ..io.images import IMAGE_EXTENSIONS
from .detectors import DETECTORS
from .labeler import Labeler


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--images", type=Path, required=True, help="folder of images (searched recursively)"
    )
    parser.add_argument(
        "--output", type=Path, required=True, help="cache folder, or a .h5 file to pack into"
    )
    parser.add_argument("--detector", default="shi_tomasi", choices=list(DETECTORS))
    parser.add_argument(
        "--checkpoint", help="weights (name or .pth) of the TaSP net for --detector model"
    )
    parser.add_argument("--num_homographies", type=int, default=None)
    parser.add_argument(
        "--threshold", type=float, default=None, help="detection threshold on the averaged map"
    )
    parser.add_argument(
        "--resize_max",
        type=int,
        default=Labeler.default_conf["resize_max"],
        help="detect at this longer side (0 = full size)",
    )
    parser.add_argument("--conf", type=json.loads, default={}, help="extra Labeler conf as JSON")
    args = parser.parse_args(argv)

    if not args.images.is_dir():
        parser.error(f"--images {args.images} is not a folder.")
    paths = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        parser.error(f"No images ({', '.join(IMAGE_EXTENSIONS)}) under {args.images}.")

    adaptation = dict(args.conf.pop("adaptation", {}))
    if args.num_homographies is not None:
        adaptation["num_homographies"] = args.num_homographies
    if args.threshold is not None:
        adaptation["detection_threshold"] = args.threshold
    conf = {
        "detector": args.detector,
        "resize_max": args.resize_max or None,
        "adaptation": adaptation,
        **args.conf,
    }

    if args.detector == "model":
        if args.checkpoint is None:
            parser.error("--detector model needs --checkpoint.")
        conf["detector_conf"] = {**conf.get("detector_conf", {}), "weights": args.checkpoint}

    pack = args.output.suffix == ".h5"
    cache_dir = args.output.with_name(args.output.name + ".cache") if pack else args.output
    labeler = Labeler(conf, cache_dir=cache_dir)
    labeler.cache.clean_tmp()  # leftovers of an interrupted run
    done = 0
    for path in tqdm(paths, desc="labelling", unit="img"):
        image_id = path.relative_to(args.images).as_posix()
        labeler.label_file(path, image_id)
        done += 1
    print(f"Labels for {done} images in {labeler.cache.dir} (conf {labeler.cache.hash}).")
    if pack:
        n = labeler.cache.pack_h5(args.output)
        print(f"Packed {n} images into {args.output}.")


if __name__ == "__main__":
    main()
