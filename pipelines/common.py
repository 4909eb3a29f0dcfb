"""Pieces shared by the dataset pipelines.

Everything that needs hloc imports it lazily through `require_hloc()`, so this module (the results
writer/reader, pose errors, recall) imports and works without hloc.

What hloc v1.5 gets wrong with pycolmap 4.x, and where we fix it:
- `hloc.triangulation` writes two-view geometries without a configuration; COLMAP 3.12+/pycolmap 4
  skips UNDEFINED ones, so triangulation silently yields 0 points -> `triangulate_known_poses`
  marks verified pairs CALIBRATED before triangulating and fails loudly on an empty model.
- `hloc.localize_inloc` crashes when no database image keeps `skip_matches` matches or PnP fails
  -> `localize_inloc` reports such queries as not localized and keeps the results file complete.
- `hloc.pairs_from_retrieval` crashes (torch.topk) when k exceeds the database -> k is clamped.
"""

from __future__ import annotations

import copy
import logging
import os
import pickle
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

# lookup3 and clear_h5_write_flag (hloc's killed writers) are shared with tasp_hloc's own files.
from tasp_hloc.h5_journal import clear_h5_write_flag, lookup3, open_append, recover  # noqa: F401

logger = logging.getLogger("pipelines")
if not logger.handlers:
    _h = logging.StreamHandler()
    _h.setFormatter(logging.Formatter("[%(asctime)s pipelines %(levelname)s] %(message)s",
                                      "%Y/%m/%d %H:%M:%S"))
    logger.addHandler(_h)
    logger.setLevel(logging.INFO)
    logger.propagate = False

HLOC_MISSING = (
    "hloc is not installed. It is not on PyPI: install it from its repository, e.g.\n"
    "  git clone --recursive https://github.com/cvg/Hierarchical-Localization && "
    "pip install -e Hierarchical-Localization"
)


class PipelineError(RuntimeError):
    """A step produced nothing usable; the message says which file and what to do."""


def run_cli(main):
    """Run a pipeline's main(): expected failures end with their message, not a traceback."""
    import sys

    try:
        main()
    except (PipelineError, FileNotFoundError, ImportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def require_hloc():
    try:
        import hloc  # noqa: F401
    except ImportError as e:  # pragma: no cover - exercised only without hloc
        raise ImportError(HLOC_MISSING) from e
    return hloc


# --------------------------------------------------------------------------- results files

Pose = Tuple[np.ndarray, np.ndarray]  # (qvec w,x,y,z ; tvec), cam_from_world


def results_name(name: str, prepend_camera_name: bool = False) -> str:
    """The name the benchmarks expect: the file name, optionally with its camera folder."""
    parts = name.split("/")
    return "/".join(parts[-2:]) if prepend_camera_name else parts[-1]


def format_pose(name: str, q, t) -> str:
    """One results line as visuallocalization.net takes it: `name qw qx qy qz tx ty tz`, the
    quaternion unit-norm with qw >= 0, every number in fixed-point with 10 decimals (no
    exponent), fields separated by one space."""
    q = np.asarray(q, float).reshape(4)
    t = np.asarray(t, float).reshape(3)
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(t))) or np.linalg.norm(q) == 0:
        raise ValueError(f"Pose of {name} is not finite: q={q}, t={t}")
    q = q / np.linalg.norm(q)
    q = -q if q[0] < 0 else q
    numbers = (f"{x:.10f}" for x in (*q, *t))
    return " ".join([name, *(n if n.strip("-0.") else n.lstrip("-") for n in numbers)])


def write_results(poses: Mapping[str, Pose], path: Path, prepend_camera_name: bool = False,
                  order: Optional[Sequence[str]] = None):
    """Write `name qw qx qy qz tx ty tz` lines (cam_from_world), atomically: the submission file
    of visuallocalization.net for Aachen v1.1 and InLoc (see :func:`format_pose`).

    `poses` maps image names (any path prefix) to (qvec wxyz, tvec); the file names only (as
    hloc writes them, or camera/file with `prepend_camera_name`) are written, in the order of
    `order` (e.g. the query list) if given, else in the order of `poses`.
    """
    names = list(order) if order is not None else list(poses)
    missing = [n for n in names if n not in poses]
    if missing:
        raise ValueError(f"No pose for {len(missing)} queries, e.g. {missing[:3]}; fill them in "
                         "first (complete_results).")
    names += [n for n in poses if n not in set(names)]
    lines, seen = [], set()
    for name in names:
        out = results_name(name, prepend_camera_name)
        if out in seen:
            raise ValueError(f"Two queries map to the same results name {out!r}; "
                             "use prepend_camera_name to disambiguate.")
        seen.add(out)
        lines.append(format_pose(out, *poses[name]))
    write_text_atomic(Path(path), "\n".join(lines) + ("\n" if lines else ""))


def read_results(path: Path) -> Dict[str, Pose]:
    """Parse a results file back; raises ValueError naming the file and line on bad input."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Results file {path} does not exist.")
    poses = {}
    with open(path) as fd:
        for i, line in enumerate(fd, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            cols = line.split()
            if len(cols) < 8:
                raise ValueError(f"{path}:{i}: expected `name qw qx qy qz tx ty tz`, got {line!r}")
            try:
                vals = np.array(cols[1:8], float)
            except ValueError:
                raise ValueError(f"{path}:{i}: non-numeric pose in {line!r}") from None
            if not np.all(np.isfinite(vals)):
                raise ValueError(f"{path}:{i}: non-finite pose in {line!r}")
            if abs(np.linalg.norm(vals[:4]) - 1) > 1e-3:
                raise ValueError(f"{path}:{i}: quaternion is not unit-norm in {line!r}")
            if cols[0] in poses:
                raise ValueError(f"{path}:{i}: duplicate entry for {cols[0]}")
            poses[cols[0]] = (vals[:4], vals[4:7])
    return poses


def write_text_atomic(path: Path, text: str):
    """Write via a temporary file so a crash never leaves a truncated file that looks done."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def done(path: Path, what: str) -> bool:
    """True (and a log line) when `path` exists and is non-empty: the step is skipped."""
    path = Path(path)
    if path.exists() and path.stat().st_size > 0:
        logger.info("Skipping %s: %s exists.", what, path)
        return True
    return False


# --------------------------------------------------------------------------- pose maths


def qvec_to_R(q) -> np.ndarray:
    w, x, y, z = np.asarray(q, float) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def R_to_qvec(R) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(np.asarray(R, float)).as_quat()
    q = np.array([w, x, y, z])
    return -q if q[0] < 0 else q


def pose_error(est: Pose, gt: Pose) -> Tuple[float, float]:
    """(camera-centre distance, rotation angle in degrees) between two cam_from_world poses."""
    Re, Rg = qvec_to_R(est[0]), qvec_to_R(gt[0])
    ce = -Re.T @ np.asarray(est[1], float)
    cg = -Rg.T @ np.asarray(gt[1], float)
    cos = np.clip((np.trace(Re.T @ Rg) - 1) / 2, -1.0, 1.0)
    return float(np.linalg.norm(ce - cg)), float(np.rad2deg(np.arccos(cos)))


def rigid_to_pose(rigid) -> Pose:
    """pycolmap.Rigid3d -> (qvec wxyz, tvec)."""
    xyzw = np.asarray(rigid.rotation.quat, float)
    return np.array([xyzw[3], *xyzw[:3]]), np.asarray(rigid.translation, float)


# --------------------------------------------------------------------------- crash-safe h5 files
# hloc's extract/match steps write their files themselves (reopened per image or pair): a kill
# loses the item in flight or, mid-flush, the file's structure; `repair_h5` resumes from either.


def repair_h5(path: Path, required: Sequence[str]) -> None:
    """Make an .h5 left by a killed run usable again, so the step resumes instead of failing.

    First what `tasp_hloc` applies to its own files (undo an interrupted journaled write; clear
    the write flag that a killed hloc writer leaves on libver="latest" files), then deletes
    groups whose datasets are incomplete (the one hloc was writing); hloc recomputes exactly
    those. The deletions are journaled too. An unreadable file is moved aside.
    """
    import h5py

    path = Path(path)
    if not path.exists():
        return
    broken = []

    def visit(name, obj):
        if isinstance(obj, h5py.Group):
            keys = set(obj.keys())
            if (keys & set(required) and not set(required) <= keys) or (not keys and name):
                broken.append(name)

    try:
        recover(path)
        with h5py.File(str(path), "r") as fd:  # read-only: a healthy file is left untouched
            fd.visititems(visit)
        if broken:
            with open_append(path) as out:
                for name in broken:
                    del out.h5[name]
            logger.warning("Removed %d incomplete entries from %s; they will be recomputed.",
                           len(broken), path)
    except OSError as e:
        bad = path.with_name(path.name + ".corrupt")
        os.replace(path, bad)
        logger.warning("%s is unreadable (%s); moved to %s and recomputing it.", path, e, bad)


FEATURE_KEYS = ("keypoints", "descriptors", "image_size")
MATCH_KEYS = ("matches0", "matching_scores0")


def extract(conf: dict, image_dir: Path, export_dir: Path, names: Sequence[str]) -> Path:
    """hloc's extract_features for `names`, resuming safely after a killed run."""
    require_hloc()
    from hloc import extract_features

    required = ("global_descriptor",) if "global" in conf["output"] else FEATURE_KEYS
    repair_h5(Path(export_dir, conf["output"] + ".h5"), required)
    return extract_features.main(conf, Path(image_dir), Path(export_dir), image_list=list(names))


def match(conf: dict, pairs: Path, feature_conf_: dict, export_dir: Path) -> Path:
    """hloc's match_features, resuming safely after a killed run."""
    require_hloc()
    from hloc import match_features

    out = Path(export_dir, f'{feature_conf_["output"]}_{conf["output"]}_{Path(pairs).stem}.h5')
    repair_h5(out, MATCH_KEYS)
    return match_features.main(conf, Path(pairs), feature_conf_["output"], Path(export_dir),
                               matches=out)


# --------------------------------------------------------------------------- features & matching


def feature_conf(name: str, resize_max: Optional[int] = None, max_keypoints: Optional[int] = None,
                 resize_force: Optional[bool] = None, weights: Optional[str] = None) -> dict:
    """An hloc extractor conf by preset name (TaSP presets included), with overrides.

    Overrides change the output name too, so features of different presets never share a file
    (hloc skips names already present in a feature file).
    """
    require_hloc()
    from hloc import extract_features

    if name.startswith("tasp"):
        try:
            from tasp_hloc.hloc_plugin import register
        except ImportError as e:
            raise ImportError(f"Feature preset {name!r} needs tasp_hloc.hloc_plugin ({e}).") from e
        register()
    if name not in extract_features.confs:
        raise ValueError(f"Unknown feature preset {name!r}; known: "
                         f"{sorted(extract_features.confs)}")
    conf = copy.deepcopy(extract_features.confs[name])
    if resize_max is None and max_keypoints is None and resize_force is None and weights is None:
        return conf
    model, pre = conf["model"], conf["preprocessing"]
    if resize_max is not None:
        pre["resize_max"] = int(resize_max)
    if resize_force is not None:
        pre["resize_force"] = bool(resize_force)
    if max_keypoints is not None:
        model["max_keypoints"] = int(max_keypoints)
    if weights is not None:
        # "none"/"random": a randomly initialised network (plumbing checks only).
        model["weights"] = None if str(weights).lower() in ("none", "random") else str(weights)
    parts = [f"feats-{name}"]
    if model.get("max_keypoints") not in (None, -1):
        parts.append(f"n{model['max_keypoints']}")
    if pre.get("resize_max"):
        parts.append(f"r{pre['resize_max']}" + ("force" if pre.get("resize_force") else ""))
    if weights is not None:
        parts.append(f"w{Path(str(weights)).stem}")
    conf["output"] = "-".join(parts)
    return conf


def matcher_conf(name: str = "NN-mutual") -> dict:
    require_hloc()
    from hloc import match_features

    if name not in match_features.confs:
        raise ValueError(f"Unknown matcher preset {name!r}; known: {sorted(match_features.confs)}")
    return copy.deepcopy(match_features.confs[name])


def check_features(path: Path, names: Iterable[str]):
    """Fail loudly if any image has no feature group or the file has no keypoints at all."""
    import h5py

    names = list(names)
    with h5py.File(str(path), "r") as fd:
        missing = [n for n in names if n not in fd]
        total = sum(fd[n]["keypoints"].shape[0] for n in names if n not in missing
                    and "keypoints" in fd[n])
    if missing:
        raise PipelineError(f"{path} has no features for {len(missing)} images, e.g. "
                            f"{missing[:3]}; delete the file and rerun.")
    if total == 0:
        raise PipelineError(f"{path}: no keypoints were detected in any image; check the "
                            "feature preset (weights, thresholds) and the images.")


def check_pairs(path: Path, what: str):
    path = Path(path)
    if not path.exists() or not path.read_text().split():
        raise PipelineError(f"{what}: pairs file {path} is empty; check the inputs of this step.")


def write_pairs(pairs: Sequence[Tuple[str, str]], path: Path):
    write_text_atomic(path, "\n".join(f"{a} {b}" for a, b in pairs) + "\n")


def read_pairs(path: Path) -> List[Tuple[str, str]]:
    return [tuple(line.split()) for line in Path(path).read_text().splitlines() if line.strip()]


def retrieval_pairs(descriptors: Path, output: Path, k: int, query_names: Sequence[str],
                    db_names: Sequence[str]):
    """Top-k retrieval with hloc's `pairs_from_retrieval` (k clamped to the database size)."""
    require_hloc()
    from hloc import pairs_from_retrieval

    k = min(k, len(db_names))
    tmp = Path(output).with_name(Path(output).name + ".hloc.tmp")
    pairs_from_retrieval.main(descriptors, tmp, k, query_list=list(query_names),
                              db_list=list(db_names))
    # hloc writes no trailing newline; normalise and move into place atomically.
    write_pairs(read_pairs(tmp), output)
    tmp.unlink()


def exhaustive_pairs(query_names: Sequence[str], db_names: Sequence[str], output: Path):
    write_pairs([(q, d) for q in query_names for d in db_names], output)


def read_given_pairs(files: Sequence[Path], query_names: Sequence[str],
                     db_names: Sequence[str]) -> Dict[str, List[str]]:
    """{query: [database images]} from given pairs files (`name0 name1` per line, either order).

    Made for lists such as the official one of the Aachen v1.1 local-feature evaluation
    (`image_pairs_to_match_v1_1.txt`): its database-database lines are skipped (triangulation
    has its own pairs), every query-database line is kept. A name that is neither a query of the
    dataset nor a database image, or a line pairing two queries, stops with the file and line.
    """
    queries, dbs = set(query_names), set(db_names)
    given: Dict[str, List[str]] = {}
    skipped = 0
    for f in files:
        f = Path(f)
        if not f.is_file():
            raise FileNotFoundError(f"Query pairs file {f} does not exist.")
        for i, line in enumerate(f.read_text().splitlines(), 1):
            cols = line.split()
            if not cols or cols[0].startswith("#"):
                continue
            if len(cols) < 2:
                raise ValueError(f"{f}:{i}: expected `query_name database_name`, got {line!r}.")
            a, b = cols[:2]
            if a in queries and b in dbs:
                q, d = a, b
            elif b in queries and a in dbs:
                q, d = b, a
            elif a in dbs and b in dbs:
                skipped += 1
                continue
            elif a in queries and b in queries:
                raise ValueError(f"{f}:{i}: pairs two query images ({a}, {b}); each line needs "
                                 "a query and a database image.")
            else:
                raise ValueError(_unknown_name_message(f, i, [n for n in (a, b) if n not in
                                                              queries | dbs][0], query_names,
                                                       db_names))
            if d not in given.setdefault(q, []):
                given[q].append(d)
    if skipped:
        logger.info("Skipped %d database-database pairs of %s (triangulation uses its own).",
                    skipped, ", ".join(map(str, files)))
    if not given:
        raise ValueError(f"{', '.join(map(str, files))}: no line pairs a query with a database "
                         "image.")
    return given


def _unknown_name_message(path, line, name, query_names, db_names) -> str:
    base = name.split("/")[-1]
    close = [n for n in list(query_names) + list(db_names) if n.split("/")[-1] == base]
    hint = f" Did you mean {close[0]!r}?" if len(close) == 1 else ""
    examples = ", ".join(repr(n) for n in (list(query_names)[:1] + list(db_names)[:1]))
    return (f"{path}:{line}: {name!r} is neither a query of the dataset's query list nor a "
            f"database image.{hint} Names are relative to the image folder, e.g. {examples}.")


def localization_paths(args, outputs: Path, tag: str, dataset_name: str,
                       retrieval_needed: bool = True) -> Tuple[Path, Path]:
    """(query pairs file, results file), named after the retrieval (and the given pairs files,
    `--query-pairs`); checks NetVLAD's weights before any work when they will be needed."""
    retrieval = f"netvlad{args.num_loc}" if args.retrieval == "netvlad" else "exhaustive"
    given = getattr(args, "query_pairs", None) or []
    if given:
        stem = "+".join(Path(f).stem for f in given)
        method = f"{stem}+{retrieval}" if retrieval_needed else stem
    else:
        method = retrieval
    loc_pairs = outputs / f"pairs-query-{method}.txt"
    results = Path(args.results) if args.results else (
        outputs / f"{dataset_name}_{tag}_{method}.txt")
    if retrieval_needed and args.retrieval == "netvlad" and not loc_pairs.exists():
        from pipelines.netvlad import check_weights

        check_weights(args.netvlad_weights, outputs)
    return loc_pairs, results


def query_pairs(args, image_dir: Path, outputs: Path, loc_pairs: Path,
                query_names: Sequence[str], db_names: Sequence[str],
                given: Optional[Mapping[str, Sequence[str]]] = None) -> Path:
    """The query-to-database pairs: NetVLAD top-k or exhaustive, computed once.

    With `given` ({query: [database images]}, from `--query-pairs`), those queries keep their
    given images and only the others are retrieved; the file lists the queries in the order of
    `query_names`.
    """
    given = dict(given or {})
    if not given:
        _retrieve(args, image_dir, outputs, loc_pairs, query_names, db_names)
        check_pairs(loc_pairs, "retrieval")
        return loc_pairs
    rest = [q for q in query_names if q not in given]
    retrieved: Dict[str, List[str]] = {}
    if rest:
        method = f"netvlad{args.num_loc}" if args.retrieval == "netvlad" else "exhaustive"
        given_part = loc_pairs.stem.replace("pairs-query-", "", 1)
        rest_pairs = loc_pairs.with_name(f"pairs-query-{method}-rest-of-{given_part}.txt")
        if rest_pairs.exists() and {q for q, _ in read_pairs(rest_pairs)} != set(rest):
            logger.info("%s was made for other queries; retrieving again.", rest_pairs)
            rest_pairs.unlink()
        _retrieve(args, image_dir, outputs, rest_pairs, rest, db_names)
        for q, d in read_pairs(rest_pairs):
            retrieved.setdefault(q, []).append(d)
    pairs = [(q, d) for q in query_names for d in (given.get(q) or retrieved.get(q, []))]
    if not loc_pairs.exists() or read_pairs(loc_pairs) != pairs:
        write_pairs(pairs, loc_pairs)
    logger.info("Query pairs: %d queries from %s, %d retrieved (%s).", len(given),
                ", ".join(map(str, args.query_pairs)), len(rest), args.retrieval)
    check_pairs(loc_pairs, "query pairs")
    return loc_pairs


def _retrieve(args, image_dir, outputs, output, query_names, db_names):
    if done(output, "retrieval"):
        return
    if args.retrieval == "netvlad":
        from pipelines import netvlad

        desc = netvlad.extract(image_dir, outputs, list(db_names) + list(query_names),
                               args.netvlad_weights)
        retrieval_pairs(desc, output, args.num_loc, query_names, db_names)
    else:
        exhaustive_pairs(query_names, db_names, output)


# --------------------------------------------------------------------------- triangulation


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
        raise PipelineError(f"{what}: no COLMAP model in {path} (need cameras/images/points3D "
                            ".bin or .txt).")
    rec = pycolmap.Reconstruction(str(path))
    if rec.num_images() == 0:
        raise PipelineError(f"{what}: the model in {path} has no images.")
    if rec.num_points3D() < min_points:
        raise PipelineError(
            f"{what}: the model in {path} has {rec.num_points3D()} 3D points. With pycolmap 4.x "
            "this is what hloc's triangulation gives for unconfigured two-view geometries; here it "
            "means no match survived verification: check features, matches and pairs, then "
            f"delete {path} and rerun.")
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


def triangulate_known_poses(sfm_dir: Path, reference_model: Path, image_dir: Path, pairs: Path,
                            features: Path, matches: Path, verbose: bool = False):
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
            logger.info("Skipping triangulation: %s exists (%d points).", sfm_dir,
                        rec.num_points3D())
            return rec
        except PipelineError:
            logger.warning("Model in %s is empty; triangulating again.", sfm_dir)
    if count_matches(pairs, matches) == 0:  # (hloc's verification also crashes on this)
        raise PipelineError(f"No image pair of {pairs} kept any match in {matches}: nothing to "
                            "triangulate; check the features and the matcher.")
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
        raise PipelineError(f"No image pair of {pairs} kept any match after verification "
                            f"against the known poses ({matches}); check features/matches.")
    # Write to a temporary folder and move into place so a crash never leaves a partial model.
    tmp = sfm_dir / "tmp_model"
    tmp.mkdir(exist_ok=True)
    rec = triangulation.run_triangulation(tmp, database, image_dir, reference, verbose)
    for f in tmp.iterdir():
        os.replace(f, sfm_dir / f.name)
    tmp.rmdir()
    logger.info("Triangulated model:\n%s", rec.summary())
    return load_model(sfm_dir, "triangulation")


# --------------------------------------------------------------------------- localization


def complete_results(poses: Dict[str, Pose], query_names: Sequence[str],
                     fallback: Optional[Mapping[str, Pose]] = None) -> List[str]:
    """Give every query a line: missing ones get `fallback[name]` or the identity pose.

    Returns the names that were filled in (not localized).
    """
    missing = [q for q in query_names if q not in poses]
    for q in missing:
        poses[q] = (fallback or {}).get(q, (np.array([1.0, 0, 0, 0]), np.zeros(3)))
    return missing


INLOC_FOCAL = 4032.0 * 28.0 / 36.0  # hloc's fixed iPhone 7 focal length (pixels at 4032 wide)


def inloc_query_camera(dataset_dir: Path, name: str, focal="hloc"):
    """The intrinsics hloc's localize_inloc assumes (SIMPLE_PINHOLE, principal point at centre).

    focal: "hloc" (hloc's constant, right for the original 4032x3024 images), "scaled" (the same
    28 mm-equivalent lens at the image's actual size) or a number in pixels.
    """
    import cv2
    import pycolmap

    img = cv2.imread(str(Path(dataset_dir) / name), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        raise FileNotFoundError(f"Cannot read query image {Path(dataset_dir) / name}.")
    h, w = img.shape[:2]
    if focal == "hloc":
        f = INLOC_FOCAL
    elif focal == "scaled":
        f = max(w, h) * 28.0 / 36.0
    else:
        f = float(focal)
    return pycolmap.Camera(model="SIMPLE_PINHOLE", width=w, height=h,
                           params=[f, 0.5 * w, 0.5 * h])


def localize_inloc(dataset_dir: Path, retrieval: Path, features: Path, matches: Path,
                   results: Path, skip_matches: Optional[int] = 20, focal="hloc",
                   ransac_thresh: Optional[float] = None, min_inliers: int = 6):
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
                logger.warning("Query %s is %dx%d, not 4032x3024: hloc's fixed focal %.1f px is "
                               "only right for the original images; pass --query-focal if they "
                               "were resized.", q, cam.width, cam.height, INLOC_FOCAL)
                warned = True
            # hloc's 48 px is for its 3136 px focal; keep the same angle for other focals.
            opts.ransac.max_error = (ransac_thresh if ransac_thresh is not None
                                     else 48.0 * cam.params[0] / INLOC_FOCAL)
            kpq = ff[q]["keypoints"][()].astype(np.float64)
            p2d, p3d, used = [], [], []
            for r in retrieval_dict[q]:
                pair = names_to_pair(q, r)
                if pair not in mf:
                    raise PipelineError(f"{matches} has no matches for pair {q} {r}; delete it "
                                        "and rerun the matching step.")
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
                    raise PipelineError(f"{mat} is missing: every InLoc cutout needs its "
                                        "XYZcut .mat file next to it.")
                scan = loadmat(str(mat))["XYZcut"]
                h, w = scan.shape[:2]
                inside = (mkpr[:, 0] > 0) & (mkpr[:, 0] < w - 1) & (mkpr[:, 1] > 0) & (
                    mkpr[:, 1] < h - 1)
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
                    np.concatenate(p2d), np.concatenate(p3d), cam, opts)
            if ret is None or ret["num_inliers"] < min_inliers:
                failed.append(q)
                logs[q] = {"db": used, "num_matches": n, "localized": False}
                continue
            poses[q] = rigid_to_pose(ret["cam_from_world"])
            logs[q] = {"db": used, "num_matches": n, "num_inliers": int(ret["num_inliers"]),
                       "localized": True}
    complete_results(poses, list(retrieval_dict))
    write_results(poses, results, order=list(retrieval_dict))
    write_text_atomic(Path(f"{results}_not_localized.txt"), "".join(f"{q}\n" for q in failed))
    with open(f"{results}_logs.pkl", "wb") as fd:
        pickle.dump(logs, fd)
    logger.info("Localized %d / %d queries; results in %s.", len(retrieval_dict) - len(failed),
                len(retrieval_dict), results)
    if failed:
        logger.warning("Not localized (identity pose written): %s", ", ".join(failed))
    return poses, failed


def add_feature_args(parser, default_features: str) -> None:
    """The feature flags every pipeline takes: preset, resize, keypoints, weights."""
    parser.add_argument("--features", default=default_features,
                        help="hloc feature preset (TaSP presets: tasp_aachen, tasp_inloc; any of "
                             "hloc.extract_features.confs), default: %(default)s")
    parser.add_argument("--resize-max", type=int, help="override the preset's resize_max")
    parser.add_argument("--max-keypoints", type=int, help="override the preset's max_keypoints")
    parser.add_argument("--weights", help="feature weights (name or path) for the preset, e.g. "
                                          "trained TaSP weights, or 'random' for an untrained "
                                          "network (plumbing checks); default: the preset's")


def feature_conf_from_args(args) -> dict:
    """:func:`feature_conf` from the flags of :func:`add_feature_args`."""
    return feature_conf(args.features, args.resize_max, args.max_keypoints,
                        weights=getattr(args, "weights", None))
