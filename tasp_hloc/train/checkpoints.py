"""Checkpoint files of a run: the last one (replaced atomically), kept copies, and a digest."""

import hashlib
import os
import shutil
from pathlib import Path
from typing import Dict

import torch

from ..io.files import atomic_write

CHECKPOINT = "checkpoint_last.pth"


def state_digest(model_state: Dict[str, torch.Tensor], pdf: torch.Tensor) -> str:
    """SHA-1 of a network's state dict and a DIW histogram, bit for bit."""
    digest = hashlib.sha1()
    for name, t in sorted(model_state.items()) + [("pdf", pdf)]:
        digest.update(name.encode())
        digest.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def atomic_save(obj, path: Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def keep_copy(path: Path, step: int) -> Path:
    """``checkpoint_stepNNNNNN.pth`` beside ``path``: a hard link (the next save replaces
    ``path``'s name, not its bytes), or a copy where the file system has no links."""
    kept = path.with_name(f"checkpoint_step{step:06d}.pth")
    kept.unlink(missing_ok=True)
    try:
        os.link(path, kept)
    except OSError:
        shutil.copyfile(path, kept)
    return kept
