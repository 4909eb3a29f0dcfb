"""Mutual nearest-neighbour matching of the features in an hloc feature file into hloc's match
file, without hloc (the tensor kernel is :mod:`tasp_hloc.model.matcher`)."""

import logging
from collections import OrderedDict
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import h5py
import torch
from tqdm import tqdm

from .io.h5_journal import open_append
from .io.hloc_format import (
    feature_names,
    names_to_pair,
    read_pairs,
    stored_names,
    write_matches,
    write_pairs,  # noqa: F401 (the API's name, beside exhaustive_pairs)
)
from .model.matcher import mutual_nearest_neighbor
from .runtime.device import resolve_device

logger = logging.getLogger(__name__)


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


def unique_new_pairs(pairs: Sequence[Tuple[str, str]], done: set) -> List[Tuple[str, str]]:
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
    (mutual NN; ``max_distance`` as in
    :func:`~tasp_hloc.model.matcher.mutual_nearest_neighbor`).

    Pairs already in the file are skipped (a killed run resumes; a SIGKILL loses at most the
    pairs matched in the last ``commit_every`` seconds); pairs that name images missing from
    the feature file are reported up front, before any work is done.
    """
    todo = pending_pairs(pairs_path, feature_path, match_path, overwrite)
    if todo:
        match_into_file(
            todo, feature_path, match_path, device, batch_size, commit_every, max_distance
        )
    return match_path


def pending_pairs(
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
    todo = unique_new_pairs(pairs, done)
    unique = len(unique_new_pairs(pairs, set()))
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
def match_into_file(
    pairs: Sequence[Tuple[str, str]],
    feature_path: Path,
    match_path: Path,
    device: Optional[str] = None,
    batch_size: int = 16,
    commit_every: float = 1.0,
    max_distance: Optional[float] = None,
) -> Path:
    """Match ``pairs`` (already checked and filtered: see ``pending_pairs``) into the match
    file ``match_path``, appending."""
    device = resolve_device(device)
    with (
        h5py.File(str(feature_path), "r", libver="latest") as ffd,
        open_append(match_path, commit_every) as out,
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
