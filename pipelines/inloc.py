"""InLoc with TaSP features through hloc.

    python -m pipelines.inloc --dataset datasets/inloc --outputs outputs/inloc

Steps (each skipped when its output exists, so a rerun after a crash resumes):
 1. local features of the queries (query/iphone7/*.JPG) and cutouts (database/cutouts/**/*.jpg);
 2. NetVLAD retrieval of the top --num-loc cutouts per query (or --retrieval exhaustive);
 3. mutual-NN matching;
 4. localization as hloc's localize_inloc (3D from the cutouts' XYZcut and the scans'
    alignments, PnP with hloc's fixed iPhone 7 focal), but a query that cannot be localized is
    reported as such instead of crashing, and the results file lists every query.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.common import PipelineError, cli_parser, done, require_hloc
from pipelines.hloc_steps import (
    check_features,
    extract,
    feature_conf_from_args,
    match,
    matcher_conf,
)
from pipelines.inloc_localize import localize_inloc
from pipelines.localization_args import add_localization_args
from pipelines.results import read_results
from pipelines.retrieval import localization_paths, query_pairs, read_given_pairs

QUERY_GLOB = "query/iphone7/*.JPG"
CUTOUT_GLOB = "database/cutouts/*/*/*.jpg"


def dataset_images(dataset: Path):
    """(query names, cutout names) relative to the dataset root; checks the layout."""
    dataset = Path(dataset)
    queries = sorted(p.relative_to(dataset).as_posix() for p in dataset.glob(QUERY_GLOB))
    cutouts = sorted(p.relative_to(dataset).as_posix() for p in dataset.glob(CUTOUT_GLOB))
    problems = []
    if not queries:
        problems.append(f"no query images {dataset / QUERY_GLOB}")
    if not cutouts:
        problems.append(f"no cutouts {dataset / CUTOUT_GLOB}")
    if not (dataset / "database/alignments").is_dir():
        problems.append(f"no {dataset / 'database/alignments'}")
    if problems:
        raise FileNotFoundError(f"{dataset} is not an InLoc dataset: {'; '.join(problems)}.")
    no_mat = [c for c in cutouts if not (dataset / (c + ".mat")).exists()]
    if no_mat:
        raise FileNotFoundError(
            f"{len(no_mat)} cutouts have no XYZcut file next to them, e.g. "
            f"{dataset / (no_mat[0] + '.mat')}."
        )
    for c in cutouts:
        floor, scan, name = c.split("/")[2:5]
        align = dataset / f"database/alignments/{floor}/transformations/{name[:3]}_trans_{scan}.txt"
        if not align.exists():
            raise FileNotFoundError(f"Cutout {c} has no scan alignment {align}.")
    return queries, cutouts


def parse_focal(value: str):
    if value in ("hloc", "scaled"):
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError("--query-focal: 'hloc', 'scaled' or pixels") from None


def run(args):
    require_hloc()

    dataset, outputs = Path(args.dataset), Path(args.outputs)
    queries, cutouts = dataset_images(dataset)
    outputs.mkdir(parents=True, exist_ok=True)
    fconf = feature_conf_from_args(args)
    mconf = matcher_conf(args.matcher)
    tag = f"{fconf['output']}_{mconf['output']}"
    given = read_given_pairs(args.query_pairs, queries, cutouts) if args.query_pairs else {}
    loc_pairs, results = localization_paths(
        args, outputs, tag, "InLoc", retrieval_needed=len(given) < len(queries)
    )
    features = extract(fconf, dataset, outputs, queries + cutouts)
    check_features(features, queries + cutouts)

    query_pairs(args, dataset, outputs, loc_pairs, queries, cutouts, given)

    loc_matches = match(mconf, loc_pairs, fconf, outputs)
    if done(results, "localization"):
        read_results(results)
        return results
    _, failed = localize_inloc(
        dataset,
        loc_pairs,
        features,
        loc_matches,
        results,
        skip_matches=args.skip_matches,
        focal=args.query_focal,
        ransac_thresh=args.ransac_thresh,
    )
    if len(failed) == len(queries):
        raise PipelineError(
            f"No query was localized; {results} holds only identity poses. "
            f"See {results}_logs.pkl (matches per query)."
        )
    return results


def main(argv=None):
    p = cli_parser(__doc__, "InLoc root (query/, database/)")
    add_localization_args(p, "tasp_inloc", 40)
    p.add_argument(
        "--skip-matches",
        type=int,
        default=20,
        help="ignore retrieved cutouts with fewer matches, default: %(default)s",
    )
    p.add_argument(
        "--query-focal",
        type=parse_focal,
        default="hloc",
        help="query focal: 'hloc' (4032*28/36 px, hloc's constant for the original "
        "4032x3024 images), 'scaled' (same lens at the actual image size) or "
        "pixels; default: %(default)s",
    )
    p.add_argument(
        "--ransac-thresh",
        type=float,
        default=None,
        help="PnP RANSAC threshold in pixels; default: hloc's 48 px, scaled by the "
        "query focal / 3136 px",
    )
    args = p.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    from pipelines.common import run_cli

    run_cli(main)
