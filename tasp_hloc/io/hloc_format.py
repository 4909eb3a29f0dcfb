"""hloc's feature and match file formats, written without importing hloc.

Feature file: one group per image name (slashes nest groups) with ``keypoints`` (N, 2) in
original-image pixels, ``descriptors`` (D, N), ``scores`` (N,), ``image_size`` (W, H) int64 and
``keypoints.attrs["uncertainty"]``. Keypoints are always float32 (float64 when written by hloc's
``extract_features.main``, see :mod:`.hloc_plugin`); descriptors and scores are float16 when
half precision is asked for (float16 has a 2 px step above 2048, too coarse for keypoints).
Match file: group ``names_to_pair(n0, n1)`` with
``matches0`` (N0,) int16 (-1 = unmatched) and ``matching_scores0`` (N0,) float16. Pairs file:
``name0 name1`` per line.
"""

from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set, Tuple

import h5py
import numpy as np
import torch

from ..grid import rescale_keypoints
from .files import read_rows, write_text_atomic
from .h5_journal import recover

# hloc stores matches as int16, so a feature file may hold at most 32767 keypoints per image.
MAX_KEYPOINTS_HLOC = 32767

# About a pixel of localisation noise (as hloc assumes for SuperPoint), refinement or not: the
# ``uncertainty`` of every feature file, from our extraction and from hloc's.
DETECTION_NOISE = 1.0


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
        raise ValueError(
            f"hloc extracts one image at a time; got a batch of {pred['keypoints'].shape[0]}."
        )
    return {
        "keypoints": pred["keypoints"],
        "scores": pred["keypoint_scores"],
        "descriptors": pred["descriptors"].transpose(1, 2),
    }


def rescale_prediction(
    pred: Dict[str, np.ndarray],
    resized_size: np.ndarray,
    original_size: np.ndarray,
    detection_noise: float,
    as_half: bool,
):
    """Keypoints to original pixels, as hloc does: ``(kp + .5) * scale - .5``.

    Args:
        pred: numpy arrays of one image (``keypoints`` N x 2, ``scores``, ``descriptors`` D x N).
        resized_size, original_size: (W, H) of the network input and of the file on disk.

    Returns:
        ``(pred, uncertainty)``; ``pred`` gains ``image_size``; keypoints are float32 (computed
        in float64 like hloc's path through :mod:`.hloc_plugin`, so they equal that file's
        float64 keypoints rounded to float32) and, with ``as_half``, every other float32 array
        becomes float16. Keypoints never do: float16 steps by 1 px above 1024 and 2 px above
        2048, which would drop the sub-pixel places of big photos.
    """
    pred = dict(pred)
    scales = (original_size / resized_size).astype(np.float32)
    keypoints = rescale_keypoints(pred["keypoints"].astype(np.float64), scales[None])
    pred["image_size"] = original_size
    uncertainty = detection_noise * scales.mean()
    if as_half:
        pred = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in pred.items()}
    pred["keypoints"] = keypoints.astype(np.float32)
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


def write_pairs(pairs: Iterable[Tuple[str, str]], path: Path) -> Path:
    """``name0 name1`` per line, written atomically (a killed run never leaves half a list)."""
    return write_text_atomic(path, "".join(f"{a} {b}\n" for a, b in pairs))


def read_pairs(path: Path) -> List[Tuple[str, str]]:
    """``name0 name1`` per line; blank lines and ``#`` comments are skipped."""
    return [(cols[0], cols[1]) for _, cols in read_rows(path, 2, "'name0 name1'")]


def stored_names(path: Path, names: Iterable[str]) -> Set[str]:
    """Which of ``names`` are already in ``path``, after undoing what a killed run left.

    One link look-up per name (every committed group is complete): nothing is copied or
    listed, so starting a resumed run costs the same for a file of 10 or 100,000 groups.
    """
    path = Path(path)
    if not path.exists():
        return set()
    recover(path)
    found = set()
    with h5py.File(str(path), "r", libver="latest") as fd:
        exists = fd.id.links.exists
        for name in names:
            try:
                if exists(name.encode()):
                    found.add(name)
            except (KeyError, ValueError, RuntimeError):  # e.g. a path through a dataset
                pass
    return found


def feature_names(path: Path, names: Optional[Iterable[str]] = None) -> Set[str]:
    """Images of a feature file that must exist: all of them, or those of ``names``.

    A file whose extraction was killed is brought back to its last commit first.
    """
    if not Path(path).exists():
        raise FileNotFoundError(f"Feature file {path} does not exist: run extract first.")
    if names is not None:
        return stored_names(path, names)
    recover(path)
    return list_h5_names(path)
