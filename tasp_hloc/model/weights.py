"""Released TaSP weights: plain state_dicts in ``weights/`` described by ``weights/manifest.json``.

``weights/`` at the top of the repository is where the files live; an editable install reads it
there, and ``pip install .``, wheels and sdists install it as ``tasp_hloc/_weights/`` (see
setup.py). ``TASP_WEIGHTS_DIR`` overrides both.

The manifest maps a name to ``{"file", "sha256", "backbone", "descriptor_dim", "recipe",
"results", ...}``. Weights are loaded by name (from the manifest) or by path (any state_dict
exported by ``tasp_hloc.train``). Every failure says what to do next.
"""

import hashlib
import json
import os
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch

MANIFEST_NAME = "manifest.json"
_PACKAGE = Path(__file__).resolve().parents[1]  # tasp_hloc/
# Installed copy first, so a stray ``weights/`` next to site-packages' packages is never read.
SEARCH_DIRS = (_PACKAGE / "_weights", _PACKAGE.parent / "weights")


def default_weights_dir() -> Path:
    """``TASP_WEIGHTS_DIR``, else the first of :data:`SEARCH_DIRS` holding a manifest."""
    env = os.environ.get("TASP_WEIGHTS_DIR")
    if env:
        return Path(env)
    for folder in SEARCH_DIRS:
        if (folder / MANIFEST_NAME).is_file():
            return folder
    return SEARCH_DIRS[-1]


WEIGHTS_DIR = default_weights_dir()


class WeightsError(RuntimeError):
    """A weights file is missing, corrupt or does not fit the model."""


def sha256sum(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(weights_dir: Path = WEIGHTS_DIR) -> Dict:
    path = Path(weights_dir) / MANIFEST_NAME
    if not path.exists():
        return {"weights": {}}
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise WeightsError(f"{path} is not valid JSON ({e}); restore it from git.") from e
    manifest.setdefault("weights", {})
    return manifest


def weights_argument(value: Union[str, Path]) -> Optional[str]:
    """A ``--weights`` value of any command line as TaSP takes it: "none" or "random" (any
    case) is a randomly initialised network (``None``, for plumbing checks), anything else a
    released name or a path."""
    return None if str(value).lower() in ("none", "random") else str(value)


def resolve(
    name_or_path: Union[str, Path], weights_dir: Path = WEIGHTS_DIR
) -> Tuple[Path, Optional[Dict]]:
    """Return the file of a released name or an explicit path, and its manifest entry if any."""
    manifest = read_manifest(weights_dir)
    entry = manifest["weights"].get(str(name_or_path))
    if entry is not None:
        path = Path(weights_dir) / entry["file"]
        if not path.exists():
            raise WeightsError(
                f"Weights '{name_or_path}' are listed in {Path(weights_dir) / MANIFEST_NAME} "
                f"but {path} is missing: restore it with `git checkout -- {path.name}` in "
                f"{weights_dir}, or re-export it with `python -m tasp_hloc.train.export`."
            )
        return path, entry
    path = Path(name_or_path).expanduser()
    if path.suffix in (".pth", ".pt") or path.exists():
        if not path.exists():
            raise WeightsError(f"Weights file {path} does not exist; check the path.")
        return path, None
    known = ", ".join(sorted(manifest["weights"])) or "none yet"
    hint = ""
    if not (Path(weights_dir) / MANIFEST_NAME).is_file():
        hint = (
            f" No {MANIFEST_NAME} was found in {weights_dir}: this installation lacks the "
            f"released weights; reinstall tasp-hloc (pip install . or the wheel), or set "
            f"TASP_WEIGHTS_DIR to a folder holding them."
        )
    raise WeightsError(
        f"Unknown weights '{name_or_path}': it is neither a released name (released: {known}) "
        f"nor a .pth file. Pass a path to a checkpoint exported by tasp_hloc.train, or "
        f"weights=None for a randomly initialised network (for tests only).{hint}"
    )


def infer_architecture(state_dict: Dict[str, torch.Tensor]) -> Dict:
    """Backbone, descriptor size and detector head from the keys and shapes of a TaSP
    state_dict."""
    key = "descriptor_head.1.weight"
    if key not in state_dict:
        raise WeightsError(f"Not a TaSP state_dict: no '{key}'.")
    backbone = "efficientnet_b0" if any(".se." in k for k in state_dict) else "efficientnet_lite0"
    head = "pixel" if any(k.startswith("pixel_head.") for k in state_dict) else "paper"
    return {
        "backbone": backbone,
        "descriptor_dim": int(state_dict[key].shape[0]),
        "detector_head": head,
    }


def load_state_dict(name_or_path: Union[str, Path], weights_dir: Path = WEIGHTS_DIR):
    """Load and verify a state_dict. Returns ``(state_dict, architecture, manifest_entry)``."""
    path, entry = resolve(name_or_path, weights_dir)
    if entry is not None and entry.get("sha256") and sha256sum(path) != entry["sha256"]:
        raise WeightsError(
            f"{path} does not match the sha256 in the manifest (corrupt or partial file): "
            f"restore it from git (`git lfs pull` / `git checkout -- {path.name}`)."
        )
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise WeightsError(
            f"Cannot read weights {path} ({type(e).__name__}: {e}). The file is corrupt or "
            f"not a state_dict; re-export it with `python -m tasp_hloc.train.export`."
        ) from e
    if not isinstance(state_dict, dict):
        raise WeightsError(f"{path} holds a {type(state_dict).__name__}, not a state_dict.")
    state_dict = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    return state_dict, infer_architecture(state_dict), entry
