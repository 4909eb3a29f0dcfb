"""TaSP (Task-aligned SuperPoint) local features for hloc.

    from tasp_hloc import TaSP, load_image, match_pair

    extractor = TaSP({"max_keypoints": 2048}).eval()  # the released weights (tasp_v2)
    feats0 = extractor.extract(load_image("a.jpg"), resize=1024)
    feats1 = extractor.extract(load_image("b.jpg"), resize=1024)
    matches = match_pair(feats0, feats1)["matches"][0]  # (K, 2) indices into the keypoints

Folders of images and hloc's files: ``extract_features`` (images -> feature .h5) and
``match_features`` (pairs + features -> match .h5), the functions behind
``python -m tasp_hloc extract/match``. hloc: ``register`` (also automatic once installed).
``keep_freed_memory()``, called once, gives a script of your own the command line's CPU speed
(freed memory stays in the process; the command line, hloc's extractor and torch.hub set it).

The names are loaded on first use (PEP 562), so ``import tasp_hloc`` imports neither torch nor
hloc: the hloc hook that runs at interpreter start (``tasp_hloc.hloc.autoregister``) stays free.
"""

__version__ = "0.1.0"

# public name -> (module, attribute)
_LAZY = {
    "TaSP": ("tasp_hloc.model.tasp", "TaSP"),
    "load_image": ("tasp_hloc.io.images", "load_image"),
    "match_pair": ("tasp_hloc.model.matcher", "match_pair"),
    "extract_features": ("tasp_hloc.extract", "extract"),
    "match_features": ("tasp_hloc.match", "match"),
    "get_preset": ("tasp_hloc.hloc.confs", "get_preset"),
    "PRESETS": ("tasp_hloc.hloc.confs", "PRESETS"),
    "register": ("tasp_hloc.hloc.plugin", "register"),
    "keep_freed_memory": ("tasp_hloc.runtime.allocator", "keep_freed_memory"),
    "WeightsError": ("tasp_hloc.model.weights", "WeightsError"),
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'tasp_hloc' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(target[0]), target[1])
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
