"""hloc's triangulation from known poses, fixed for pycolmap 4.x.

`hloc.triangulation` writes two-view geometries without a configuration; COLMAP 3.12+/pycolmap 4
skips UNDEFINED ones, so triangulation silently yields 0 points -> `triangulate_known_poses`
marks verified pairs CALIBRATED before triangulating and fails loudly on an empty model.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipelines.common import PipelineError, logger, require_hloc
from tasp_hloc.io.hloc_format import read_pairs


def fix_two_view_geometries(database: Path) -> int:
    """Mark verified pairs CALIBRATED (pycolmap 4 skips UNDEFINED ones). Returns their count."""
    import pycolmap

    n = 0
    with pycolmap.Database.open(str(database)) as db:
        pair_ids, geoms = db.read_two_view_geometries()
        for pid, g in zip(pair_ids, geoms):
            if len(g.inlier_matches) == 0:
                continue
            if g.config == pycolmap.TwoViewGeometryConfiguration.UNDEFINED:
                g.config = pycolmap.TwoViewGeometryConfiguration.CALIBRATED
                id0, id1 = pycolmap.pair_id_to_image_pair(pid)
                db.update_two_view_geometry(id0, id1, g)
            n += 1
    return n


def load_model(path: Path, what: str, min_points: int = 1):
    """Read a COLMAP model and fail loudly if it is empty."""
    import pycolmap

    path = Path(path)
    if not any((path / f"images{e}").exists() for e in (".bin", ".txt")):
        raise PipelineError(
            f"{what}: no COLMAP model in {path} (need cameras/images/points3D .bin or .txt)."
        )
    rec = pycolmap.Reconstruction(str(path))
    if rec.num_images() == 0:
        raise PipelineError(f"{what}: the model in {path} has no images.")
    if rec.num_points3D() < min_points:
        raise PipelineError(
            f"{what}: the model in {path} has {rec.num_points3D()} 3D points. With pycolmap 4.x "
            "this is what hloc's triangulation gives for unconfigured two-view geometries; here it "
            "means no match survived verification: check features, matches and pairs, then "
            f"delete {path} and rerun."
        )
    return rec


def count_matches(pairs: Path, matches: Path) -> int:
    """Total number of matches over the pairs listed in `pairs`."""
    require_hloc()
    import h5py
    from hloc.utils.io import find_pair

    n = 0
    with h5py.File(str(matches), "r") as fd:
        for a, b in read_pairs(pairs):
            key, _ = find_pair(fd, a, b)
            n += int(np.count_nonzero(fd[key]["matches0"][()] > -1))
    return n


def triangulate_known_poses(
    sfm_dir: Path,
    reference_model: Path,
    image_dir: Path,
    pairs: Path,
    features: Path,
    matches: Path,
    verbose: bool = False,
):
    """hloc's triangulation from a reference model with known poses, working on pycolmap 4.

    Uses hloc's own steps (database from the model, feature and match import, epipolar
    verification with the known poses) and adds the one missing piece: a configuration on the
    verified two-view geometries. Skipped when `sfm_dir` already holds a non-empty model.
    """
    require_hloc()
    import pycolmap
    from hloc import triangulation

    sfm_dir = Path(sfm_dir)
    if (sfm_dir / "points3D.bin").exists():
        try:
            rec = load_model(sfm_dir, "triangulation")
            logger.info(
                "Skipping triangulation: %s exists (%d points).", sfm_dir, rec.num_points3D()
            )
            return rec
        except PipelineError:
            logger.warning("Model in %s is empty; triangulating again.", sfm_dir)
    if count_matches(pairs, matches) == 0:  # (hloc's verification also crashes on this)
        raise PipelineError(
            f"No image pair of {pairs} kept any match in {matches}: nothing to "
            "triangulate; check the features and the matcher."
        )
    sfm_dir.mkdir(parents=True, exist_ok=True)
    database = sfm_dir / "database.db"
    reference = pycolmap.Reconstruction(str(reference_model))
    image_ids = triangulation.create_db_from_model(reference, database)
    with pycolmap.Database.open(str(database)) as db:
        triangulation.import_features(image_ids, db, features)
        triangulation.import_matches(image_ids, db, pairs, matches)
    with pycolmap.Database.open(str(database)) as db:
        triangulation.geometric_verification(image_ids, reference, db, features, pairs, matches)
    n = fix_two_view_geometries(database)
    if n == 0:
        raise PipelineError(
            f"No image pair of {pairs} kept any match after verification "
            f"against the known poses ({matches}); check features/matches."
        )
    # Write to a temporary folder and move into place so a crash never leaves a partial model.
    tmp = sfm_dir / "tmp_model"
    tmp.mkdir(exist_ok=True)
    rec = triangulation.run_triangulation(tmp, database, image_dir, reference, verbose)
    for f in tmp.iterdir():
        os.replace(f, sfm_dir / f.name)
    tmp.rmdir()
    logger.info("Triangulated model:\n%s", rec.summary())
    return load_model(sfm_dir, "triangulation")
