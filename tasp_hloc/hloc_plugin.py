"""The hloc adapter: the only module of tasp_hloc that imports hloc.

Installed with pip, tasp-hloc registers itself the first time hloc is imported (see
:mod:`tasp_hloc._autoregister`; ``TASP_HLOC_AUTOREGISTER=0`` switches that off), so hloc scripts
select ``tasp`` by name alone. Explicitly, e.g. to set the presets' weights:

    from tasp_hloc.hloc_plugin import register
    register()  # "tasp" is now an hloc extractor, "tasp_aachen" / "tasp_inloc" hloc confs
    from hloc import extract_features
    extract_features.main(extract_features.confs["tasp_aachen"], images, outputs)

hloc finds extractors with ``dynamic_load``, which imports ``hloc.extractors.<name>`` and keeps
the BaseModel subclasses whose ``__module__`` is that path; so ``register`` places a module
object at ``sys.modules["hloc.extractors.tasp"]`` holding a class made for it.
"""

import copy
import sys
import types

from .confs import MAX_KEYPOINTS_HLOC, PRESETS
from .extract import DETECTION_NOISE
from .hloc_format import to_hloc_prediction
from .tasp import TaSP

MODULE_NAME = "hloc.extractors.tasp"


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
        raise ValueError("remove_borders must be >= 1: hloc needs keypoints strictly inside the image.")


def _make_extractor_class(BaseModel):
    class TaSPExtractor(BaseModel):
        """TaSP as an hloc extractor: ``data["image"]`` (1, C, H, W) -> keypoints,
        scores, descriptors (1, D, N)."""

        default_conf = {"name": "tasp", **TaSP.default_conf, "max_keypoints": 4096}
        required_inputs = ["image"]
        detection_noise = DETECTION_NOISE

        def _init(self, conf):
            check_model_conf(conf)
            self.net = TaSP({k: v for k, v in conf.items() if k != "name"})

        def _forward(self, data):
            return to_hloc_prediction(self.net({"image": data["image"]}))

    TaSPExtractor.__module__ = MODULE_NAME
    TaSPExtractor.__qualname__ = TaSPExtractor.__name__ = "TaSP"
    return TaSPExtractor


def fill_extractor_module(module: types.ModuleType) -> types.ModuleType:
    """Put the TaSP extractor class in ``module`` (``hloc.extractors.tasp``)."""
    _, BaseModel = _import_hloc()
    module.__doc__ = __doc__
    module.TaSP = _make_extractor_class(BaseModel)
    return module


def register(weights=None) -> types.ModuleType:
    """Make ``tasp`` loadable by hloc and add the ``tasp_*`` presets to hloc's confs.

    Args:
        weights: if given, the presets registered in hloc use these weights (name or path).

    Idempotent; returns the ``hloc.extractors.tasp`` module.
    """
    hloc, _ = _import_hloc()
    module = sys.modules.get(MODULE_NAME)  # also made by the automatic registration
    if module is None:
        module = fill_extractor_module(types.ModuleType(MODULE_NAME))
        sys.modules[MODULE_NAME] = module
    hloc.extractors.tasp = module
    for name, preset in PRESETS.items():
        conf = copy.deepcopy(preset)
        if weights is not None:
            conf["model"]["weights"] = str(weights)
        hloc.extract_features.confs[name] = conf
    return module
