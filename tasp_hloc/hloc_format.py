"""hloc's feature and match file formats, written without importing hloc.

Feature file: one group per image name (slashes nest groups) with ``keypoints`` (N, 2) in
original-image pixels, ``descriptors`` (D, N), ``scores`` (N,), ``image_size`` (W, H) int64 and
``keypoints.attrs["uncertainty"]``. Match file: group ``names_to_pair(n0, n1)`` with
``matches0`` (N0,) int16 (-1 = unmatched) and ``matching_scores0`` (N0,) float16.
"""

import os
import shutil
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import h5py
import numpy as np
import torch


def names_to_pair(name0: str, name1: str, separator: str = "/") -> str:
    return separator.join((name0.replace("/", "-"), name1.replace("/", "-")))


def list_h5_names(path: Path) -> Set[str]:
    """Names of the groups that hold datasets (image names, or pairs in a match file)."""
    names = set()
    with h5py.File(str(path), "r", libver="latest") as fd:
        def visit(_, obj):
            if isinstance(obj, h5py.Dataset):
                names.add(obj.parent.name.strip("/"))
        fd.visititems(visit)
    return names


def to_hloc_prediction(pred: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """TaSP's output (B = 1) in hloc's extractor convention: descriptors (B, D, N)."""
    if pred["keypoints"].shape[0] != 1:
        raise ValueError("hloc extracts one image at a time; got a batch of "
                         f"{pred['keypoints'].shape[0]}.")
    return {
        "keypoints": pred["keypoints"],
        "scores": pred["keypoint_scores"],
        "descriptors": pred["descriptors"].transpose(1, 2),
    }


def rescale_prediction(pred: Dict[str, np.ndarray], resized_size: np.ndarray,
                       original_size: np.ndarray, detection_noise: float, as_half: bool):
    """Keypoints to original pixels, as hloc does: ``(kp + .5) * scale - .5``.

    Args:
        pred: numpy arrays of one image (``keypoints`` N x 2, ``scores``, ``descriptors`` D x N).
        resized_size, original_size: (W, H) of the network input and of the file on disk.

    Returns:
        ``(pred, uncertainty)``; ``pred`` gains ``image_size`` and, with ``as_half``, every
        float32 array becomes float16 (keypoints too, exactly like hloc).
    """
    pred = dict(pred)
    scales = (original_size / resized_size).astype(np.float32)
    pred["keypoints"] = (pred["keypoints"] + 0.5) * scales[None] - 0.5
    pred["image_size"] = original_size
    uncertainty = detection_noise * scales.mean()
    if as_half:
        pred = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in pred.items()}
    return pred, uncertainty


def write_features(fd: h5py.File, name: str, pred: Dict[str, np.ndarray], uncertainty) -> None:
    if name in fd:
        del fd[name]
    group = fd.create_group(name)
    for key, value in pred.items():
        group.create_dataset(key, data=value)
    group["keypoints"].attrs["uncertainty"] = uncertainty


def write_matches(fd: h5py.File, pair: str, matches0: np.ndarray, scores0: np.ndarray) -> None:
    if pair in fd:
        del fd[pair]
    group = fd.create_group(pair)
    group.create_dataset("matches0", data=matches0.astype(np.int16))
    group.create_dataset("matching_scores0", data=scores0.astype(np.float16))


def read_pairs(path: Path) -> List[Tuple[str, str]]:
    """``name0 name1`` per line; blank lines and ``#`` comments are skipped."""
    pairs = []
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2:
            raise ValueError(f"{path}:{i}: expected 'name0 name1', got {line!r}.")
        pairs.append((parts[0], parts[1]))
    return pairs


def _readable(path: Path) -> bool:
    try:
        list_h5_names(path)
        return True
    except Exception:  # a file cut short by a killed process fails in many ways
        return False


@contextmanager
def _sigterm_as_interrupt():
    """Let ``kill`` (SIGTERM) unwind like Ctrl-C, so the work done so far is committed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def open_for_append(path: Path) -> Iterator[h5py.File]:
    """Append to an HDF5 file so that ``path`` is never seen half-written.

    Work goes to ``<path>.tmp`` (a copy of ``path`` if it exists) and is moved onto ``path``
    when the block ends, normally or by an exception or SIGTERM, so nothing done is lost.
    If the process is killed outright, ``path`` keeps its previous content and the next run
    resumes from the leftover ``.tmp`` when it is readable (else from ``path``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists() and not _readable(tmp):
        tmp.unlink()
    if not tmp.exists() and path.exists():
        shutil.copyfile(path, tmp)
    with _sigterm_as_interrupt():
        fd = h5py.File(str(tmp), "a", libver="latest")
        try:
            yield fd
        finally:
            fd.close()
            os.replace(tmp, path)


def resume_names(path: Path) -> Set[str]:
    """Names already stored in ``path`` or in a readable leftover ``.tmp`` of a killed run."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists() and _readable(tmp):
        return list_h5_names(tmp)
    return list_h5_names(path) if path.exists() else set()
