"""Mutual nearest-neighbour matching of features in an hloc feature file, without hloc."""

import logging
from collections import OrderedDict
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import h5py
import torch
from tqdm import tqdm

from .device import resolve_device
from .hloc_format import (
    feature_names,
    names_to_pair,
    open_for_append,
    read_pairs,
    stored_names,
    write_matches,
)
from .hloc_format import write_pairs  # noqa: F401 (the API's name, beside exhaustive_pairs)

logger = logging.getLogger(__name__)


def mutual_nearest_neighbor(
    desc0: torch.Tensor,
    desc1: torch.Tensor,
    mask0: Optional[torch.Tensor] = None,
    mask1: Optional[torch.Tensor] = None,
    max_distance: Optional[float] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mutual nearest neighbours by cosine similarity, in hloc's ``NN-mutual`` convention.

    Args:
        desc0: :math:`(B, N0, D)` unit-norm descriptors; desc1: :math:`(B, N1, D)`.
        mask0, mask1: :math:`(B, N0)`, :math:`(B, N1)` bool, False for padding.
        max_distance: hloc's ``distance_threshold`` (``NN-tasp``: 0.6): a nearest neighbour
            farther than this (Euclidean, i.e. cosine below 1 - d^2 / 2) is no match, and its
            score is 0, as hloc stores it.

    Returns:
        ``matches0`` :math:`(B, N0)` int64, index into image 1 or -1, and ``scores0``
        :math:`(B, N0)` = (cosine of the nearest neighbour + 1) / 2 (as hloc stores it, also
        for points whose match fails the mutual check; 0 for padding).
    """
    if desc0.dim() != 3 or desc1.dim() != 3 or desc0.shape[-1] != desc1.shape[-1]:
        raise ValueError(
            f"Expected (B, N, D) descriptors, got {tuple(desc0.shape)}, {tuple(desc1.shape)}."
        )
    b, n0, n1 = desc0.shape[0], desc0.shape[1], desc1.shape[1]
    if n0 == 0 or n1 == 0:
        return desc0.new_full((b, n0), -1, dtype=torch.long), desc0.new_zeros((b, n0))
    sim = torch.einsum("bnd,bmd->bnm", desc0, desc1)
    if mask0 is not None or mask1 is not None:
        valid = torch.ones_like(sim, dtype=torch.bool)
        if mask0 is not None:
            valid &= mask0[:, :, None]
        if mask1 is not None:
            valid &= mask1[:, None, :]
        sim = sim.masked_fill(~valid, float("-inf"))
    best0, nn0 = sim.max(2)  # B x N0
    nn1 = sim.argmax(1)  # B x N1
    mutual = torch.gather(nn1, 1, nn0) == torch.arange(n0, device=sim.device)[None]
    close = torch.isfinite(best0)
    if max_distance is not None:  # on each side's nearest neighbour, as hloc's find_nn
        close &= 2 * (1 - best0) <= max_distance**2
    mutual &= close
    matches0 = torch.where(mutual, nn0, nn0.new_tensor(-1))
    scores0 = torch.where(close, (best0 + 1) / 2, best0.new_tensor(0.0))
    return matches0, scores0


class _DescriptorCache:
    """Descriptors of recently used images, on the matching device (float32, N x D)."""

    def __init__(self, fd: h5py.File, device: str, size: int = 256):
        self.fd, self.device, self.size = fd, device, size
        self.cache: "OrderedDict[str, torch.Tensor]" = OrderedDict()

    def __getitem__(self, name: str) -> torch.Tensor:
        if name in self.cache:
            self.cache.move_to_end(name)
            return self.cache[name]
        desc = torch.from_numpy(self.fd[name]["descriptors"][()]).float().T.contiguous()
        self.cache[name] = desc = desc.to(self.device)
        if len(self.cache) > self.size:
            self.cache.popitem(last=False)
        return desc


def _pad(tensors: List[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    n = max(t.shape[0] for t in tensors)
    out = tensors[0].new_zeros((len(tensors), n, tensors[0].shape[1]))
    mask = torch.zeros((len(tensors), n), dtype=torch.bool, device=out.device)
    for i, t in enumerate(tensors):
        out[i, : len(t)], mask[i, : len(t)] = t, True
    return out, mask


def pairs_to_match(pairs: Sequence[Tuple[str, str]], done: set) -> List[Tuple[str, str]]:
    """Unique pairs (either order) that are not already in the match file."""
    seen, todo = set(), []
    for n0, n1 in pairs:
        key = (n0, n1) if n0 <= n1 else (n1, n0)
        if key in seen:
            continue
        seen.add(key)
        if names_to_pair(n0, n1) not in done and names_to_pair(n1, n0) not in done:
            todo.append((n0, n1))
    return todo


def match(
    pairs_path: Path,
    feature_path: Path,
    match_path: Path,
    device: Optional[str] = None,
    batch_size: int = 16,
    overwrite: bool = False,
    commit_every: float = 1.0,
    max_distance: Optional[float] = None,
) -> Path:
    """Match every pair of ``pairs_path`` and write hloc's match file ``match_path``
    (mutual NN; ``max_distance`` as in :func:`mutual_nearest_neighbor`).

    Pairs already in the file are skipped (a killed run resumes; a SIGKILL loses at most the
    pairs matched in the last ``commit_every`` seconds); pairs that name images missing from
    the feature file are reported up front, before any work is done.
    """
    todo = pairs_left_to_match(pairs_path, feature_path, match_path, overwrite)
    if todo:
        match_pairs(todo, feature_path, match_path, device, batch_size, commit_every, max_distance)
    return match_path


def pairs_left_to_match(
    pairs_path: Path, feature_path: Path, match_path: Path, overwrite: bool = False
) -> List[Tuple[str, str]]:
    """The unique pairs of ``pairs_path`` not yet in ``match_path`` (all with ``overwrite``),
    after checking that the feature file has every image they name."""
    pairs = read_pairs(pairs_path)
    images = {n for p in pairs for n in p}
    unknown = sorted(images - feature_names(feature_path, images))
    if unknown:
        raise KeyError(
            f"{len(unknown)} images named in {pairs_path} have no features in {feature_path}, "
            f"e.g. {unknown[:3]}: extract them first or fix the pairs file."
        )
    either_order = [names_to_pair(a, b) for n0, n1 in pairs for a, b in ((n0, n1), (n1, n0))]
    done = set() if overwrite else stored_names(match_path, either_order)
    todo = pairs_to_match(pairs, done)
    unique = len(pairs_to_match(pairs, set()))
    if not todo:
        logger.info("All pairs are already matched in %s.", match_path)
    else:
        logger.info(
            "Matching %d pairs into %s (%d already there).",
            len(todo),
            match_path,
            unique - len(todo),
        )
    return todo


@torch.no_grad()
def match_pairs(
    pairs: Sequence[Tuple[str, str]],
    feature_path: Path,
    match_path: Path,
    device: Optional[str] = None,
    batch_size: int = 16,
    commit_every: float = 1.0,
    max_distance: Optional[float] = None,
) -> Path:
    """Match ``pairs`` (checked: see ``pairs_left_to_match``) into ``match_path``."""
    device = resolve_device(device)
    with (
        h5py.File(str(feature_path), "r", libver="latest") as ffd,
        open_for_append(match_path, commit_every) as out,
    ):
        cache = _DescriptorCache(ffd, device)
        for start in tqdm(range(0, len(pairs), batch_size), desc="match", unit="batch"):
            batch = pairs[start : start + batch_size]
            desc0, mask0 = _pad([cache[n0] for n0, _ in batch])
            desc1, mask1 = _pad([cache[n1] for _, n1 in batch])
            matches0, scores0 = mutual_nearest_neighbor(desc0, desc1, mask0, mask1, max_distance)
            for i, (n0, n1) in enumerate(batch):
                n, pair = int(mask0[i].sum()), names_to_pair(n0, n1)
                with out.item(pair) as fd:
                    write_matches(
                        fd, pair, matches0[i, :n].cpu().numpy(), scores0[i, :n].cpu().numpy()
                    )
    return match_path


def exhaustive_pairs(names: Sequence[str]) -> List[Tuple[str, str]]:
    names = sorted(names)
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
