"""Zero-code hloc integration: ``tasp`` becomes an hloc extractor without ``register()``.

Installing tasp-hloc puts ``tasp_hloc_autoregister.pth`` in site-packages. At interpreter start
its one line imports this module and calls :func:`install`, unless the environment variable
``TASP_HLOC_AUTOREGISTER`` is ``0`` (or ``false``/``no``/``off``). Any error there is swallowed,
so a broken or missing hloc, torch or tasp_hloc can never break Python's start-up.

:func:`install` only puts a finder at the front of ``sys.meta_path``; it imports nothing (this
module needs only ``sys``), so a process that never imports hloc pays a dictionary look-up per
import and nothing else. The finder answers two module names, and only when they are imported:

- ``hloc.extract_features``: found as usual by the other finders; once hloc's module has run,
  the ``tasp_*`` presets of :mod:`tasp_hloc.hloc.confs` are added to its ``confs`` (existing keys
  are left alone);
- ``hloc.extractors.tasp``: when no file provides it, a module holding the TaSP extractor
  class (built by :mod:`tasp_hloc.hloc.plugin`), so hloc's ``dynamic_load(extractors, "tasp")``
  finds it.

No file of hloc is touched. :func:`tasp_hloc.hloc.plugin.register` stays for explicit use (it
also sets the presets' weights). hloc's own command line, ``python -m hloc.extract_features``,
builds its ``--conf`` choices from a dict literal in the same run, which no import hook can
reach: use ``python -m tasp_hloc.hloc_extract_features`` (the same flags) instead.
"""

import sys
from _thread import get_ident

ENV_VAR = "TASP_HLOC_AUTOREGISTER"
EXTRACTOR_MODULE = "hloc.extractors.tasp"
CONFS_MODULE = "hloc.extract_features"
_WATCHED = (EXTRACTOR_MODULE, CONFS_MODULE)


def enabled(environ=None) -> bool:
    """False when ``TASP_HLOC_AUTOREGISTER`` switches the hook off."""
    import os

    value = (os.environ if environ is None else environ).get(ENV_VAR, "1")
    return value.strip().lower() not in ("0", "false", "no", "off")


def add_presets(module) -> None:
    """Add the ``tasp_*`` presets to ``module.confs`` (hloc.extract_features) if absent."""
    import copy

    from tasp_hloc.hloc.confs import PRESETS

    confs = getattr(module, "confs", None)
    if isinstance(confs, dict):
        for name, preset in PRESETS.items():
            confs.setdefault(name, copy.deepcopy(preset))


def _warn(what: str, error: BaseException) -> None:
    import warnings

    warnings.warn(
        f"tasp_hloc could not {what} ({type(error).__name__}: {error}); set "
        f"{ENV_VAR}=0 to switch its hloc hook off, or call "
        "tasp_hloc.hloc.plugin.register() to see the full error.",
        RuntimeWarning,
        stacklevel=3,
    )


class _PresetsLoader:
    """Wraps the loader of ``hloc.extract_features``: runs it, then adds the presets."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        # Leave hloc's module as if imported without us.
        module.__loader__ = self.loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self.loader
        try:
            add_presets(module)
        except Exception as e:  # never break hloc's own import
            _warn("add its presets to hloc.extract_features.confs", e)

    def __getattr__(self, name):  # get_code, get_source, get_filename, is_package...
        if name == "loader":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)


class _ExtractorLoader:
    """Creates ``hloc.extractors.tasp``: the module with the TaSP extractor class."""

    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module):
        from tasp_hloc.hloc.plugin import fill_tasp_module

        fill_tasp_module(module)


class HlocFinder:
    """A ``sys.meta_path`` finder that answers only for hloc's extractor and conf modules."""

    def __init__(self):
        self._busy = set()  # (thread, module name) being looked up through the other finders

    def _find_elsewhere(self, fullname, path, target):
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _WATCHED:
            return None
        key = (get_ident(), fullname)
        if key in self._busy:  # a finder below called importlib.util.find_spec: no recursion
            return None
        self._busy.add(key)
        try:
            spec = self._find_elsewhere(fullname, path, target)
            if fullname == EXTRACTOR_MODULE:
                if spec is not None:  # hloc ships its own "tasp": it wins
                    return None
                from importlib.machinery import ModuleSpec

                return ModuleSpec(fullname, _ExtractorLoader(), origin="tasp_hloc.hloc.plugin")
            if spec is None or spec.loader is None:
                return None
            spec.loader = _PresetsLoader(spec.loader)
            return spec
        except Exception as e:  # a broken finder must not make hloc unimportable
            _warn(f"prepare {fullname}", e)
            return None
        finally:
            self._busy.discard(key)

    def invalidate_caches(self):
        pass


def installed() -> bool:
    return any(isinstance(f, HlocFinder) for f in sys.meta_path)


def install() -> None:
    """Put the finder first in ``sys.meta_path`` (idempotent). If hloc's modules were already
    imported, register right away."""
    if installed():
        return
    sys.meta_path.insert(0, HlocFinder())
    module = sys.modules.get(CONFS_MODULE)
    if module is not None:
        add_presets(module)


def uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, HlocFinder)]
