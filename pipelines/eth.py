"""ETH local-feature benchmark (Schönberger et al., CVPR 2017): reconstruction statistics.

    python -m pipelines.eth --dataset datasets/Fountain --outputs outputs/eth/Fountain

The dataset folder holds `images/`; pairs come from `--pairs`, else the dataset's
`match_list.txt` (the benchmark's list for the large internet sets), else all pairs. Features and
matching (mutual nearest neighbours, with a 0.9 ratio test for features other than TaSP's,
whose matches a ratio test removes) go through hloc, reconstruction
through pycolmap's incremental mapper (hloc's `reconstruction`, whose verification sets two-view
configurations, so it is unaffected by the pycolmap-4 triangulation issue). Reported: registered
images, 3D points, mean track length, mean reprojection error, observations.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.common import PipelineError, cli_parser, done, logger, require_hloc
from pipelines.hloc_steps import (
    add_feature_args,
    check_features,
    check_pairs,
    extract,
    feature_conf_from_args,
    match,
)
from tasp_hloc.hloc.confs import matcher_warning
from tasp_hloc.io.files import write_text_atomic
from tasp_hloc.io.hloc_format import read_pairs, write_pairs
from tasp_hloc.io.images import IMAGE_EXTENSIONS

# The benchmark's own recipe for SIFT-like features; TaSP's features get mutual NN alone,
# since a ratio test keeps almost none of their matches (``confs.matcher_warning``).
ETH_MATCHER = {
    "output": "matches-NN-mutual-ratio.9",
    "model": {"name": "nearest_neighbor", "do_mutual_check": True, "ratio_threshold": 0.9},
}
TASP_MATCHER = {
    "output": "matches-NN-mutual",
    "model": {"name": "nearest_neighbor", "do_mutual_check": True},
}


def eth_matcher(feature_conf: dict) -> dict:
    """The matcher for a feature conf: mutual NN for TaSP, the 0.9 ratio test for the rest."""
    return TASP_MATCHER if matcher_warning(feature_conf, ETH_MATCHER) else ETH_MATCHER


def reconstruction_stats(rec) -> dict:
    return {
        "registered_images": int(rec.num_reg_images()),
        "points3D": int(rec.num_points3D()),
        "observations": int(rec.compute_num_observations()),
        "mean_track_length": float(rec.compute_mean_track_length()),
        "mean_reprojection_error": float(rec.compute_mean_reprojection_error()),
    }


def run(args):
    require_hloc()
    import pycolmap
    from hloc import reconstruction

    dataset, outputs = Path(args.dataset), Path(args.outputs)
    image_dir = dataset / "images"
    names = (
        sorted(
            p.relative_to(image_dir).as_posix()
            for p in image_dir.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if image_dir.is_dir()
        else []
    )
    if not names:
        raise FileNotFoundError(
            f"No images in {image_dir}: the ETH benchmark layout is <dataset>/images/*.jpg."
        )
    outputs.mkdir(parents=True, exist_ok=True)
    fconf = feature_conf_from_args(args)
    features = extract(fconf, image_dir, outputs, names)
    check_features(features, names)

    pairs = outputs / "pairs.txt"
    if not done(pairs, "pairs"):
        src = args.pairs or (dataset / "match_list.txt")
        if Path(src).exists():
            pairs_list = read_pairs(src)
            unknown = {n for p in pairs_list for n in p} - set(names)
            if unknown:
                raise ValueError(f"{src} names images not in {image_dir}: {sorted(unknown)[:3]}")
        else:
            pairs_list = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
        write_pairs(pairs_list, pairs)
    check_pairs(pairs, "ETH pairs")
    matches = match(eth_matcher(fconf), pairs, fconf, outputs)

    sfm_dir = outputs / f"sfm_{fconf['output']}"
    stats_path = outputs / f"eth_stats_{fconf['output']}.json"
    if (sfm_dir / "points3D.bin").exists():
        rec = pycolmap.Reconstruction(str(sfm_dir))
        logger.info("Skipping reconstruction: %s exists.", sfm_dir)
    else:
        rec = reconstruction.main(
            sfm_dir,
            image_dir,
            pairs,
            features,
            matches,
            camera_mode=getattr(pycolmap.CameraMode, args.camera_mode),
            image_list=names,
        )
    if rec is None or rec.num_points3D() == 0:
        raise PipelineError(
            f"Reconstruction in {sfm_dir} failed (no model or 0 points); see "
            f"{sfm_dir}/colmap.LOG.* and check the features and matches."
        )
    stats = {
        "dataset": str(dataset),
        "images": len(names),
        "features": fconf["output"],
        **reconstruction_stats(rec),
    }
    write_text_atomic(stats_path, json.dumps(stats, indent=1))
    for k, v in stats.items():
        print(f"{k:>24}: {v:.3f}" if isinstance(v, float) else f"{k:>24}: {v}")
    return stats


def main(argv=None):
    p = cli_parser(__doc__, "folder with images/")
    add_feature_args(p, "tasp")
    p.add_argument("--pairs", type=Path, help="image pairs (default: match_list.txt or all)")
    p.add_argument(
        "--camera-mode", default="AUTO", choices=["AUTO", "SINGLE", "PER_FOLDER", "PER_IMAGE"]
    )
    return run(p.parse_args(argv))


if __name__ == "__main__":
    from pipelines.common import run_cli

    run_cli(main)
