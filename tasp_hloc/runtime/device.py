"""The one rule for picking a torch device: a name as given, or the GPU when there is one."""

from typing import Optional


def resolve_device(name: Optional[str] = None) -> str:
    """``name`` as given, or for ``None``/``"auto"`` ``"cuda"`` when available, else ``"cpu"``."""
    if name not in (None, "auto"):
        return str(name)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
