"""hloc's extraction and matching steps as the pipelines run them: presets by name (TaSP's
included) with overrides, resumption after a killed run, and loud checks of what they wrote."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Iterable, Optional, Sequence

from pipelines.common import PipelineError, logger, require_hloc
from pipelines.h5_repair import FEATURE_KEYS, MATCH_KEYS, repair_h5
from tasp_hloc.hloc.confs import MATCHER_PRESETS, matcher_warning
from tasp_hloc.model.weights import weights_argument


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

    warning = matcher_warning(feature_conf_, conf)
    if warning:
        logger.warning(warning)

    out = Path(export_dir, f'{feature_conf_["output"]}_{conf["output"]}_{Path(pairs).stem}.h5')
    repair_h5(out, MATCH_KEYS)
    return match_features.main(
        conf, Path(pairs), feature_conf_["output"], Path(export_dir), matches=out
    )


def feature_conf(
    name: str,
    resize_max: Optional[int] = None,
    max_keypoints: Optional[int] = None,
    resize_force: Optional[bool] = None,
    weights: Optional[str] = None,
    scales: Optional[Sequence[float]] = None,
) -> dict:
    """An hloc extractor conf by preset name (TaSP presets included), with overrides.

    Overrides change the output name too, so features of different presets never share a file
    (hloc skips names already present in a feature file).
    """
    require_hloc()
    from hloc import extract_features

    if name.startswith("tasp"):
        try:
            from tasp_hloc.hloc.plugin import register
        except ImportError as e:
            raise ImportError(f"Feature preset {name!r} needs tasp_hloc.hloc.plugin ({e}).") from e
        register()
    if name not in extract_features.confs:
        raise ValueError(
            f"Unknown feature preset {name!r}; known: {sorted(extract_features.confs)}"
        )
    conf = copy.deepcopy(extract_features.confs[name])
    overrides = (resize_max, max_keypoints, resize_force, weights, scales)
    if all(x is None for x in overrides):
        return conf
    if scales is not None and conf["model"].get("name") != "tasp":
        raise ValueError(f"--scales is a TaSP option; preset {name!r} is not TaSP.")
    model, pre = conf["model"], conf["preprocessing"]
    if resize_max is not None:
        pre["resize_max"] = int(resize_max)
    if resize_force is not None:
        pre["resize_force"] = bool(resize_force)
    if max_keypoints is not None:
        model["max_keypoints"] = int(max_keypoints)
    if weights is not None:
        model["weights"] = weights_argument(weights)
    if scales is not None:
        model["scales"] = [float(x) for x in scales]
    parts = [f"feats-{name}"]
    if model.get("max_keypoints") not in (None, -1):
        parts.append(f"n{model['max_keypoints']}")
    if pre.get("resize_max"):
        parts.append(f"r{pre['resize_max']}" + ("force" if pre.get("resize_force") else ""))
    if weights is not None:
        parts.append(f"w{Path(str(weights)).stem}")
    if scales is not None and list(scales) != [1.0]:
        parts.append("s" + "-".join(f"{x:g}" for x in scales))
    conf["output"] = "-".join(parts)
    return conf


def matcher_conf(name: str = "NN-mutual") -> dict:
    """An hloc matcher conf by preset name (``NN-tasp`` included)."""
    require_hloc()
    from hloc import match_features

    if name in MATCHER_PRESETS and name not in match_features.confs:
        return copy.deepcopy(MATCHER_PRESETS[name])
    if name not in match_features.confs:
        raise ValueError(f"Unknown matcher preset {name!r}; known: {sorted(match_features.confs)}")
    return copy.deepcopy(match_features.confs[name])


def check_features(path: Path, names: Iterable[str]):
    """Fail loudly if any image has no feature group or the file has no keypoints at all."""
    import h5py

    names = list(names)
    with h5py.File(str(path), "r") as fd:
        missing = [n for n in names if n not in fd]
        total = sum(
            fd[n]["keypoints"].shape[0] for n in names if n not in missing and "keypoints" in fd[n]
        )
    if missing:
        raise PipelineError(
            f"{path} has no features for {len(missing)} images, e.g. "
            f"{missing[:3]}; delete the file and rerun."
        )
    if total == 0:
        raise PipelineError(
            f"{path}: no keypoints were detected in any image; check the "
            "feature preset (weights, thresholds) and the images."
        )


def check_pairs(path: Path, what: str):
    path = Path(path)
    if not path.exists() or not path.read_text().split():
        raise PipelineError(f"{what}: pairs file {path} is empty; check the inputs of this step.")


def add_feature_args(parser, default_features: str) -> None:
    """The feature flags every pipeline takes: preset, resize, keypoints, weights."""
    parser.add_argument(
        "--features",
        default=default_features,
        help="hloc feature preset (TaSP presets: tasp_aachen, tasp_inloc, tasp, tasp_dog; any of "
        "hloc.extract_features.confs), default: %(default)s",
    )
    parser.add_argument("--resize-max", type=int, help="override the preset's resize_max")
    parser.add_argument("--max-keypoints", type=int, help="override the preset's max_keypoints")
    parser.add_argument(
        "--scales",
        type=float,
        nargs="+",
        help="TaSP: extract at these image scales, e.g. 1 0.71 0.5, for views far apart in "
        "scale (cost: the sum of the scales' areas); default: the preset's (1)",
    )
    parser.add_argument(
        "--weights",
        help="feature weights (name or path) for the preset, e.g. "
        "trained TaSP weights, or 'random' for an untrained "
        "network (plumbing checks); default: the preset's",
    )


def feature_conf_from_args(args) -> dict:
    """:func:`feature_conf` from the flags of :func:`add_feature_args`."""
    return feature_conf(
        args.features,
        args.resize_max,
        args.max_keypoints,
        weights=getattr(args, "weights", None),
        scales=getattr(args, "scales", None),
    )
