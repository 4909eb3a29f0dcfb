"""Aachen Day-Night v1.1 with TaSP features through hloc.

    python -m pipelines.aachen --dataset datasets/aachen_v1.1 --outputs outputs/aachen_v1.1

Steps (each skipped when its output exists, so a rerun after a crash resumes):
 1. local features of the database (SIFT model) and query images;
 2. covisibility pairs (top --num-covis) from the provided SIFT model; mutual-NN matching;
 3. triangulation with the known poses (fixed for pycolmap 4.x, fails loudly on 0 points);
 4. NetVLAD global descriptors and top --num-loc retrieval (or --retrieval exhaustive), for
    the queries that --query-pairs does not cover (the paper's protocol: night queries against
    the official list of database images, day queries with NetVLAD top-20; see docs/pipelines.md);
 5. query matching, localization (hloc's localize_sfm), and a results file in the format of
    visuallocalization.net (`name qw qx qy qz tx ty tz`, world-to-camera, file names only).
"""

from __future__ import annotations

from pathlib import Path

from pipelines.common import PipelineError, cli_parser, done, logger, require_hloc
from pipelines.hloc_steps import (
    check_features,
    check_pairs,
    extract,
    feature_conf_from_args,
    match,
    matcher_conf,
)
from pipelines.localization_args import add_localization_args
from pipelines.poses import rigid_to_pose
from pipelines.results import complete_results, read_results, write_results
from pipelines.retrieval import localization_paths, query_pairs, read_given_pairs
from pipelines.triangulate import load_model, triangulate_known_poses
from tasp_hloc.io.files import atomic_path, read_rows, write_text_atomic

SIFT_MODEL = "3D-models/aachen_v_1_1"
QUERY_LISTS = "queries/*_time_queries_with_intrinsics.txt"


def check_layout(dataset: Path):
    """Fail early, naming what is missing, if `dataset` is not the Aachen v1.1 layout."""
    dataset = Path(dataset)
    need = [dataset / "images_upright", dataset / SIFT_MODEL]
    missing = [str(p) for p in need if not p.exists()]
    lists = sorted((dataset / "queries").glob("*_time_queries_with_intrinsics.txt"))
    if not lists:
        missing.append(str(dataset / QUERY_LISTS))
    if missing:
        raise FileNotFoundError(
            f"{dataset} is not an Aachen Day-Night v1.1 dataset; missing: {', '.join(missing)}. "
            "Expected images_upright/{db,query}, 3D-models/aachen_v_1_1/{cameras,images,points3D}"
            ".bin and queries/{day,night}_time_queries_with_intrinsics.txt."
        )
    return lists


def read_query_list(path: Path):
    """[(name, pycolmap.Camera)] from a `name MODEL w h params...` file."""
    import pycolmap

    out = []
    for i, cols in read_rows(path, 4, "`name MODEL width height params...`"):
        name, model, w, h, *params = cols
        line = " ".join(cols)
        try:
            cam = pycolmap.Camera(
                model=model, width=int(w), height=int(h), params=[float(p) for p in params]
            )
        except Exception as e:
            raise ValueError(f"{path}:{i}: bad intrinsics line {line!r}: {e}") from None
        out.append((name, cam))
    return out


def run(args):
    require_hloc()
    from hloc import localize_sfm, pairs_from_covisibility

    dataset, outputs = Path(args.dataset), Path(args.outputs)
    lists = check_layout(dataset)
    images = dataset / "images_upright"
    sift_sfm = dataset / SIFT_MODEL
    outputs.mkdir(parents=True, exist_ok=True)

    queries = [q for f in lists for q in read_query_list(f)]
    query_names = [n for n, _ in queries]
    missing = [n for n in query_names if not (images / n).exists()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} query images listed in {dataset / 'queries'} "
            f"are not under {images}, e.g. {missing[:3]}."
        )
    sift = load_model(sift_sfm, "reference SIFT model")
    db_names = sorted(im.name for im in sift.images.values())

    fconf = feature_conf_from_args(args)
    mconf = matcher_conf(args.matcher)
    tag = f"{fconf['output']}_{mconf['output']}"
    sfm_pairs = outputs / f"pairs-db-covis{args.num_covis}.txt"
    reference_sfm = outputs / f"sfm_{tag}"
    given = read_given_pairs(args.query_pairs, query_names, db_names) if args.query_pairs else {}
    loc_pairs, results = localization_paths(
        args, outputs, tag, "Aachen-v1.1", retrieval_needed=len(given) < len(query_names)
    )
    # 1. Local features (only the images we use: the sequences are not part of the benchmark).
    features = extract(fconf, images, outputs, db_names + query_names)
    check_features(features, db_names + query_names)

    # 2. Covisibility pairs from the SIFT model, matching.
    if not done(sfm_pairs, "covisibility pairs"):
        with atomic_path(sfm_pairs) as tmp:
            pairs_from_covisibility.main(sift_sfm, tmp, num_matched=args.num_covis)
    check_pairs(sfm_pairs, "covisibility")
    sfm_matches = match(mconf, sfm_pairs, fconf, outputs)

    # 3. Triangulation with the known poses.
    reference = triangulate_known_poses(
        reference_sfm, sift_sfm, images, sfm_pairs, features, sfm_matches
    )

    # 4. Retrieval (for the queries without given pairs).
    query_pairs(args, images, outputs, loc_pairs, query_names, db_names, given)

    # 5. Matching and localization.
    loc_matches = match(mconf, loc_pairs, fconf, outputs)
    if done(results, "localization"):
        read_results(results)  # a results file that does not parse is not "done"
        return results
    raw = results.with_name(results.stem + "_hloc.txt")
    localize_sfm.main(
        reference,
        dataset / QUERY_LISTS,
        loc_pairs,
        features,
        loc_matches,
        raw,
        ransac_thresh=args.ransac_thresh,
        covisibility_clustering=args.covis_clustering,
    )
    # hloc writes the nearest database pose for a failed query and nothing for a query without
    # retrieved images: rebuild the file from its logs so every query has a line and failures
    # are listed.
    import pickle

    with open(f"{raw}_logs.pkl", "rb") as fd:
        logs = pickle.load(fd)["loc"]
    poses, failed = {}, []
    for name in query_names:
        log = logs.get(name)
        if log is None:
            failed.append(name)
            continue
        ret = (
            log["log_clusters"][log["best_cluster"]]["PnP_ret"]
            if log.get("covisibility_clustering") and log.get("best_cluster") is not None
            else log.get("PnP_ret")
        )
        if ret is None:
            failed.append(name)
        else:
            poses[name] = rigid_to_pose(ret["cam_from_world"])
    fallback = {}
    for name in failed:  # like hloc: the pose of the top retrieved database image
        db = (logs.get(name) or {}).get("db") or []
        if db:
            fallback[name] = rigid_to_pose(reference.images[db[0]].cam_from_world())
    complete_results(poses, query_names, fallback)
    write_results(poses, results, order=query_names)
    write_text_atomic(Path(f"{results}_not_localized.txt"), "".join(f"{q}\n" for q in failed))
    logger.info(
        "Localized %d / %d queries; results in %s",
        len(query_names) - len(failed),
        len(query_names),
        results,
    )
    if len(failed) == len(query_names):
        raise PipelineError(
            f"No query was localized (see {raw}_logs.pkl); results in {results} "
            "hold only fallback poses."
        )
    return results


def main(argv=None):
    p = cli_parser(__doc__, "Aachen Day-Night v1.1 root")
    add_localization_args(p, "tasp_aachen", 20)
    p.add_argument(
        "--num-covis",
        type=int,
        default=20,
        help="covisible database pairs per image for triangulation, default: %(default)s",
    )
    p.add_argument(
        "--ransac-thresh",
        type=float,
        default=12.0,
        help="PnP RANSAC threshold in pixels, default: %(default)s",
    )
    p.add_argument(
        "--covis-clustering",
        action="store_true",
        help="localize against covisibility clusters (hloc's option for weak matchers)",
    )
    args = p.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    from pipelines.common import run_cli

    run_cli(main)
