"""The hloc adapter: the only module of tasp_hloc that imports hloc.

Installed with pip, tasp-hloc registers itself the first time hloc is imported (see
:mod:`tasp_hloc.hloc.autoregister`; ``TASP_HLOC_AUTOREGISTER=0`` switches that off), so hloc scripts
select ``tasp`` by name alone. Explicitly, e.g. to set the presets' weights:

    from tasp_hloc.hloc.plugin import register
    register()  # "tasp" is now an hloc extractor; "tasp_aachen", "tasp_inloc", "tasp" hloc confs
    from hloc import extract_features
    extract_features.main(extract_features.confs["tasp_aachen"], images, outputs)

hloc finds extractors with ``dynamic_load``, which imports ``hloc.extractors.<name>`` and keeps
the BaseModel subclasses whose ``__module__`` is that path; so :func:`add_extractor` (used by
``register`` and by ``pipelines.netvlad``) places a module object at
``sys.modules["hloc.extractors.<name>"]`` holding a class made for it. TaSP's is
``TaSPExtractor``, a wrapper around the network :class:`tasp_hloc.model.tasp.TaSP`.
"""

import copy
import sys
import types
from typing import Callable

import torch

from ..io.hloc_format import DETECTION_NOISE, MAX_KEYPOINTS_HLOC, to_hloc_prediction
from ..model.tasp import TaSP
from ..runtime.allocator import keep_freed_memory_once
from .confs import MATCHER_PRESETS, PRESETS

EXTRACTOR_NAME = "tasp"  # hloc.extractors.tasp


def _import_hloc():
    try:
        import hloc.extract_features
        import hloc.extractors
        from hloc.utils.base_model import BaseModel
    except ImportError as e:
        raise ImportError(
            "hloc is not installed. It is not on PyPI: clone "
            "https://github.com/cvg/Hierarchical-Localization and `pip install -e` it "
            "(tasp_hloc's own `python -m tasp_hloc extract/match` work without it)."
        ) from e
    return hloc, BaseModel


def check_model_conf(conf: dict) -> None:
    """hloc-specific limits: int16 matches and keypoints strictly inside the image."""
    k = conf.get("max_keypoints", TaSP.default_conf["max_keypoints"])
    if not 0 < k <= MAX_KEYPOINTS_HLOC:
        raise ValueError(
            f"max_keypoints={k}: hloc stores matches as int16, so set 1..{MAX_KEYPOINTS_HLOC}."
        )
    if conf.get("remove_borders", TaSP.default_conf["remove_borders"]) < 1:
        raise ValueError(
            "remove_borders must be >= 1: hloc needs keypoints strictly inside the image."
        )


def _make_extractor_class(BaseModel):
    class TaSPExtractor(BaseModel):
        """TaSP as an hloc extractor: ``data["image"]`` (1, C, H, W) -> keypoints,
        scores, descriptors (1, D, N)."""

        default_conf = {"name": "tasp", **TaSP.default_conf, "max_keypoints": 4096}
        required_inputs = ["image"]
        detection_noise = DETECTION_NOISE

        def _init(self, conf):
            check_model_conf(conf)
            # an entry point: freed activations stay for the next image (runtime/allocator.py)
            keep_freed_memory_once()
            self.net = TaSP({k: v for k, v in conf.items() if k != "name"})

        def _forward(self, data):
            pred = to_hloc_prediction(self.net({"image": data["image"]}))
            # float64 keypoints: hloc's as_half (its default) turns every float32 output into
            # float16, whose 1-2 px step above 1024-2048 px would drop the sub-pixel places
            # of big photos; it leaves float64 alone, so the file holds float64 keypoints
            # (what hloc.utils.io.get_keypoints returns; its matchers cast them to float32).
            pred["keypoints"] = pred["keypoints"].to("cpu", torch.float64)  # MPS has no float64
            return pred

    return TaSPExtractor


def fill_extractor_module(module: types.ModuleType, cls: type) -> types.ModuleType:
    """Make ``cls`` the one extractor class of ``module`` (an ``hloc.extractors.<name>``).

    hloc's ``dynamic_load`` keeps the BaseModel subclasses whose ``__module__`` is the module's
    path, so ``cls`` is marked as defined there.
    """
    cls.__module__ = module.__name__
    cls.__qualname__ = cls.__name__  # made in a function; shown as <module path>.<name>
    setattr(module, cls.__name__, cls)
    return module


def fill_tasp_module(module: types.ModuleType) -> types.ModuleType:
    """Put the TaSP extractor class in ``module`` (``hloc.extractors.tasp``)."""
    _, BaseModel = _import_hloc()
    module.__doc__ = __doc__
    return fill_extractor_module(module, _make_extractor_class(BaseModel))


def add_extractor(name: str, make_class: Callable[[type], type]) -> types.ModuleType:
    """Make ``hloc.extractors.<name>`` loadable by hloc (``dynamic_load``); idempotent.

    ``make_class(BaseModel)`` builds the extractor class, called only when no module of that
    name exists yet (from an earlier call or the automatic registration); the module is placed
    in ``sys.modules`` and as an attribute of ``hloc.extractors``. Returns the module.
    """
    hloc, BaseModel = _import_hloc()
    path = f"{hloc.extractors.__name__}.{name}"
    module = sys.modules.get(path)
    if module is None:
        module = fill_extractor_module(types.ModuleType(path), make_class(BaseModel))
        sys.modules[path] = module
    setattr(hloc.extractors, name, module)
    return module


def register(weights=None) -> types.ModuleType:
    """Make ``tasp`` loadable by hloc, add the ``tasp_*`` presets to hloc's extractor confs
    and the ``NN-tasp`` matcher preset to its matcher confs.

    Args:
        weights: if given, the presets registered in hloc use these weights (name or path).

    Idempotent; returns the ``hloc.extractors.tasp`` module.
    """
    hloc, _ = _import_hloc()
    module = add_extractor(EXTRACTOR_NAME, _make_extractor_class)
    module.__doc__ = __doc__
    for name, preset in PRESETS.items():
        conf = copy.deepcopy(preset)
        if weights is not None:
            conf["model"]["weights"] = str(weights)
        hloc.extract_features.confs[name] = conf
    import hloc.match_features

    for name, preset in MATCHER_PRESETS.items():
        hloc.match_features.confs.setdefault(name, copy.deepcopy(preset))
    return module
