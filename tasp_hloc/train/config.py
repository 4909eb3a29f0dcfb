"""Experiment configs: YAML files that may name a ``base`` file, plus ``key=value`` overrides."""

import importlib
from pathlib import Path
from typing import List, Sequence

import omegaconf
from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).parent / "configs"


def module_dir(name: str) -> str:
    """``${module_dir:skimage.data}``: the folder of an installed package (its bundled data)."""
    return str(Path(importlib.import_module(name).__file__).parent)


# omegaconf 2.4 renamed register_new_resolver to register_resolver (2.3's register_resolver is
# an older, different API), so pick by version.
_NEW_API = tuple(int(x) for x in omegaconf.__version__.split(".")[:2]) >= (2, 4)
_register = OmegaConf.register_resolver if _NEW_API else OmegaConf.register_new_resolver
_register("module_dir", module_dir, replace=True)

DEFAULTS = {
    "name": "tasp",
    "seed": 0,
    "output_dir": "runs/${name}",
    "model": {"backbone": "efficientnet_b0", "descriptor_dim": 128, "pretrained_backbone": False},
    "loss": {},  # overrides of tasp_hloc.losses.TaSPLoss.default_conf
    "data": {},  # a tasp_hloc.data.build_dataset conf
    "labels": {  # tasp_hloc.labels.Labeler conf, plus where to cache the labels
        "detector": "shi_tomasi",
        "adaptation": {"num_homographies": 100},
        "resize_max": 640,
        "cache_dir": "outputs/labels",
    },
    "train": {
        "batch_size": 4,
        "steps": 1000,
        "lr": 1.0e-3,  # Adam, decaying linearly to 0 at `steps`
        "backbone_lr_scale": 1.0,
        "freeze_blocks": 0,  # the stem and this many MBConv blocks stay fixed (budget)
        "grid_anchors": 256,  # extra random anchors at 4x4 spacing
        "num_workers": 2,
        "device": "auto",
        "amp": "bf16",  # on CUDA only
        # On CPU: None (float32), "bf16" (autocast), "bf16-dw-fp32" (autocast, depthwise
        # convolutions in float32) or "auto": bf16-dw-fp32 where the CPU has native bf16, else
        # float32; see tasp_hloc/train/precision.py for the measured step times.
        "cpu_precision": "auto",
        "compile": False,  # torch.compile the network (minutes of compiling at the start)
        "clip_grad": None,
        "log_every": 10,
        "checkpoint_every": 200,
        # Also keep checkpoint_stepNNNNNN.pth every this many steps (None: only the last), for a
        # learning curve: python -m experiments.learning_curve runs/NAME/checkpoint_step*.pth
        "keep_every": None,
        "resume": True,
        # Several processes (torchrun): DDP's find_unused_parameters, for a network with
        # trainable parameters that get no gradient (frozen blocks are not such parameters).
        "find_unused_parameters": False,
    },
}


def resolve_path(name: str) -> Path:
    """A config file by path, or by name inside ``tasp_hloc/train/configs``."""
    for candidate in (Path(name), CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    known = sorted(str(p.relative_to(CONFIG_DIR)) for p in CONFIG_DIR.rglob("*.yaml"))
    raise FileNotFoundError(f"No config {name!r}; give a path or one of {known}.")


def _load_chain(path: Path, seen: List[Path]) -> DictConfig:
    path = path.resolve()
    if path in seen:
        raise ValueError(f"Config inheritance loops through {path}.")
    conf = OmegaConf.load(path)
    base = conf.pop("base", None)
    if base is None:
        return conf
    return OmegaConf.merge(_load_chain((path.parent / base), seen + [path]), conf)


def _apply_override(conf: DictConfig, override: str) -> None:
    """``key=value`` into ``conf``; a number in the key indexes a list (``data.sources.0.weight=6``)."""
    key, sep, _ = override.partition("=")
    if not sep or not key:
        raise ValueError(f"Override {override!r} is not key=value.")
    # from_dotlist parses the value as OmegaConf does (numbers, lists, ${...}); update places it,
    # where a plain merge would turn a list index into a dict key and fail.
    value = OmegaConf.select(OmegaConf.from_dotlist([override]), key)
    try:
        OmegaConf.update(conf, key, value, merge=True)
    except (IndexError, KeyError, ValueError) as error:
        raise ValueError(
            f"Override {override!r} does not fit the config: {str(error).splitlines()[0]}"
        ) from None


def load_config(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """DEFAULTS <- base files <- the file <- ``key=value`` overrides, applied in order."""
    conf = OmegaConf.merge(OmegaConf.create(DEFAULTS), _load_chain(resolve_path(name), []))
    for override in overrides:
        _apply_override(conf, override)
    OmegaConf.resolve(conf)
    missing = sorted(OmegaConf.missing_keys(conf))
    if missing:
        raise ValueError(
            f"Config {name!r} needs values for {missing}: add e.g. "
            f"{missing[0]}=... to the command line."
        )
    return conf
