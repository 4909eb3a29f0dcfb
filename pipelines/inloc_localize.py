"""InLoc localization like hloc's `localize_inloc`, without its crashes.

`hloc.localize_inloc` crashes when no database image keeps `skip_matches` matches or PnP fails
-> `localize_inloc` reports such queries as not localized and keeps the results file complete.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Optional

import numpy as np

from pipelines.common import PipelineError, logger, require_hloc
from pipelines.poses import rigid_to_pose
from pipelines.results import complete_results, write_results
from tasp_hloc.io.files import atomic_write, write_text_atomic
from tasp_hloc.io.images import ImageReadError, read_image

INLOC_FOCAL = 4032.0 * 28.0 / 36.0  # hloc's fixed iPhone 7 focal length (pixels at 4032 wide)


def inloc_query_camera(dataset_dir: Path, name: str, focal="hloc"):
    """The intrinsics hloc's localize_inloc assumes (SIMPLE_PINHOLE, principal point at centre).

    focal: "hloc" (hloc's constant, right for the original 4032x3024 images), "scaled" (the same
    28 mm-equivalent lens at the image's actual size) or a number in pixels.
    """
    import pycolmap

    path = Path(dataset_dir) / name
    try:  # the size hloc's reader sees (EXIF orientation ignored)
        h, w = read_image(path, grayscale=True).shape[:2]
    except ImageReadError:
        raise FileNotFoundError(f"Cannot read query image {path}.") from None
    if focal == "hloc":
        f = INLOC_FOCAL
    elif focal == "scaled":
        f = max(w, h) * 28.0 / 36.0
    else:
        f = float(focal)
    return pycolmap.Camera(model="SIMPLE_PINHOLE", width=w, height=h, params=[f, 0.5 * w, 0.5 * h])


def localize_inloc(
    dataset_dir: Path,
    retrieval: Path,
    features: Path,
    matches: Path,
    results: Path,
    skip_matches: Optional[int] = 20,
    focal="hloc",
    ransac_thresh: Optional[float] = None,
    min_inliers: int = 6,
):
    """InLoc localization like hloc's `localize_inloc`, but never crashing on a hard query.

    Per query: 2D-3D matches from every retrieved cutout with at least `skip_matches` matches
    (3D from the cutout's `XYZcut` via hloc's `interpolate_scan`, moved to the world by the
    scan's alignment via hloc's `get_scan_pose`), then LO-RANSAC PnP + refinement. A query with
    no usable cutout, no valid 3D point or a failed PnP is written as not localized (identity
    pose) so the results file still lists every query; their names go to the log and to
    `<results>_not_localized.txt`. The PnP threshold defaults to hloc's 48 px scaled by
    focal / 3136 px. Returns {name: Pose} and the list of failures.
    """
    require_hloc()
    import h5py
    import pycolmap
    from hloc.localize_inloc import get_scan_pose, interpolate_scan
    from hloc.utils.parsers import names_to_pair, parse_retrieval
    from scipy.io import loadmat
    from tqdm import tqdm

    dataset_dir = Path(dataset_dir)
    retrieval_dict = parse_retrieval(retrieval)
    poses, failed, logs = {}, [], {}
    opts = pycolmap.AbsolutePoseEstimationOptions()
    warned = False
    with h5py.File(str(features), "r") as ff, h5py.File(str(matches), "r") as mf:
        for q in tqdm(list(retrieval_dict), desc="localize InLoc"):
            cam = inloc_query_camera(dataset_dir, q, focal)
            if focal == "hloc" and not warned and cam.width not in (4032, 3024):
                logger.warning(
                    "Query %s is %dx%d, not 4032x3024: hloc's fixed focal %.1f px is "
                    "only right for the original images; pass --query-focal if they "
                    "were resized.",
                    q,
                    cam.width,
                    cam.height,
                    INLOC_FOCAL,
                )
                warned = True
            # hloc's 48 px is for its 3136 px focal; keep the same angle for other focals.
            opts.ransac.max_error = (
                ransac_thresh if ransac_thresh is not None else 48.0 * cam.params[0] / INLOC_FOCAL
            )
            kpq = ff[q]["keypoints"][()].astype(np.float64)
            p2d, p3d, used = [], [], []
            for r in retrieval_dict[q]:
                pair = names_to_pair(q, r)
                if pair not in mf:
                    raise PipelineError(
                        f"{matches} has no matches for pair {q} {r}; delete it "
                        "and rerun the matching step."
                    )
                m = mf[pair]["matches0"][()]
                v = m > -1
                if skip_matches and np.count_nonzero(v) < skip_matches:
                    continue
                kpr = ff[r]["keypoints"][()].astype(np.float64)
                mkpq, mkpr = kpq[v], kpr[m[v]]
                if len(mkpr) == 0:
                    continue
                # interpolate_scan asserts keypoints strictly inside the cutout: clip the border.
                mat = dataset_dir / (r + ".mat")
                if not mat.exists():
                    raise PipelineError(
                        f"{mat} is missing: every InLoc cutout needs its "
                        "XYZcut .mat file next to it."
                    )
                scan = loadmat(str(mat))["XYZcut"]
                h, w = scan.shape[:2]
                inside = (
                    (mkpr[:, 0] > 0)
                    & (mkpr[:, 0] < w - 1)
                    & (mkpr[:, 1] > 0)
                    & (mkpr[:, 1] < h - 1)
                )
                mkpq, mkpr = mkpq[inside], mkpr[inside]
                if len(mkpr) == 0:
                    continue
                xyz, valid = interpolate_scan(scan, mkpr)
                T = get_scan_pose(dataset_dir, r)
                xyz = xyz @ T[:3, :3].T + T[:3, 3]
                p2d.append(mkpq[valid] + 0.5)  # hloc keypoints -> COLMAP pixel coordinates
                p3d.append(xyz[valid])
                used.append(r)
            n = sum(len(p) for p in p2d)
            ret = None
            if n >= min_inliers:
                ret = pycolmap.estimate_and_refine_absolute_pose(
                    np.concatenate(p2d), np.concatenate(p3d), cam, opts
                )
            if ret is None or ret["num_inliers"] < min_inliers:
                failed.append(q)
                logs[q] = {"db": used, "num_matches": n, "localized": False}
                continue
            poses[q] = rigid_to_pose(ret["cam_from_world"])
            logs[q] = {
                "db": used,
                "num_matches": n,
                "num_inliers": int(ret["num_inliers"]),
                "localized": True,
            }
    complete_results(poses, list(retrieval_dict))
    write_results(poses, results, order=list(retrieval_dict))
    write_text_atomic(Path(f"{results}_not_localized.txt"), "".join(f"{q}\n" for q in failed))
    atomic_write(Path(f"{results}_logs.pkl"), lambda f: pickle.dump(logs, f))
    logger.info(
        "Localized %d / %d queries; results in %s.",
        len(retrieval_dict) - len(failed),
        len(retrieval_dict),
        results,
    )
    if failed:
        logger.warning("Not localized (identity pose written): %s", ", ".join(failed))
    return poses, failed
