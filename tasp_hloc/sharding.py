"""Extraction and matching split across the processes that ``torchrun`` starts.

The command line goes through here with one process too: it then merges the shards a killed
run left and runs ``extract`` / ``match`` straight into the output.

    torchrun --nproc_per_node=N -m tasp_hloc extract --images DIR --output feats.h5
    torchrun --nproc_per_node=N -m tasp_hloc match --features feats.h5 --pairs P --output m.h5

Rank 0 lists the work left (names or pairs not yet in the output); rank r takes every N-th
item from r on and writes it to its own shard, ``<output>.part<r>-of-<N>.h5``, with the same
crash-safe, resumable writer as one process; then rank 0 copies the shards into the output, in
the order of the list, and deletes them. The output holds exactly the groups and arrays of a
one-process run (with the same threads per process). A rank that fails reports the items it
did not finish; every finished item stays in its shard, and the next run (any number of
processes) merges what the shards hold before it lists the work left.
"""

import logging
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import h5py
import torch
import torch.distributed as dist

from .extract import extract
from .io.h5_journal import journal_path, open_append, recover
from .io.hloc_format import list_h5_names, names_to_pair, stored_names
from .io.images import ImageDataset
from .match import match, match_into_file, pending_pairs
from .runtime.device import resolve_device
from .runtime.distributed import cleanup, setup, world_size_from_env

logger = logging.getLogger(__name__)


def single_process() -> bool:
    """Not under torchrun with several processes (nor in a process group already joined)."""
    return world_size_from_env() <= 1 and not (dist.is_available() and dist.is_initialized())


def shard_path(output: Path, rank: int, world: int) -> Path:
    return output.with_name(f"{output.name}.part{rank}-of-{world}.h5")


def leftover_shards(output: Path) -> List[Path]:
    return sorted(output.parent.glob(f"{output.name}.part*-of-*.h5"))


def merge_shards(output: Path, order: Sequence[str] = (), commit_every: float = 1.0) -> int:
    """Copy every group of the shards of ``output`` into it (those named in ``order`` first, in
    that order), then delete the shards. Returns the number of groups copied."""
    shards = leftover_shards(output)
    if not shards:
        return 0
    where: Dict[str, Path] = {}
    for shard in shards:
        recover(shard)  # a shard whose writer was killed: back to its last commit
        where.update((name, shard) for name in list_h5_names(shard))
    rank_of = {name: i for i, name in enumerate(order)}
    names = sorted(where, key=lambda n: (rank_of.get(n, len(rank_of)), n))
    files = {shard: h5py.File(str(shard), "r", libver="latest") for shard in shards}
    try:
        with open_append(output, commit_every) as out:
            for name in names:
                with out.item(name) as fd:
                    if name in fd:
                        del fd[name]
                    parent, _, leaf = name.rpartition("/")
                    files[where[name]].copy(
                        files[where[name]][name], fd.require_group(parent) if parent else fd, leaf
                    )
    finally:
        for f in files.values():
            f.close()
    for shard in shards:  # only once the output is committed
        shard.unlink()
        journal_path(shard).unlink(missing_ok=True)
    logger.info("Merged %d groups from %d shard files into %s.", len(names), len(shards), output)
    return len(names)


def run_sharded(
    output: Path,
    list_work: Callable[[], List],
    group_name: Callable[[object], str],
    work: Callable[[List, Path, str], List],
    device: Optional[str],
) -> List:
    """The protocol of the module docstring, for any kind of item.

    Args:
        list_work: on rank 0, the items left to do, in order.
        group_name: the output group an item becomes (for the merge order).
        work: ``work(items, shard, device)`` writes ``items`` into ``shard`` and returns the
            items it skipped, as ``(name, reason)``.

    Returns:
        the skipped items of every rank.
    """
    output = Path(output)
    rank, world, device, created = setup(torch.device(resolve_device(device)))
    try:
        box = [None]
        if rank == 0:
            merge_shards(output)  # what a killed run left, before listing the work left
            box = [list_work()]
        dist.broadcast_object_list(box, src=0)
        todo = box[0]
        mine = todo[rank::world]
        shard = shard_path(output, rank, world)
        try:
            skipped = work(mine, shard, str(device)) if mine else []
        except BaseException as e:
            done = stored_names(shard, [group_name(i) for i in mine]) if shard.exists() else set()
            left = [group_name(i) for i in mine if group_name(i) not in done]
            logger.error(
                "Rank %d of %d stopped (%s: %s) with %d of its %d items not done: %s. Its "
                "finished items are kept in %s and the other ranks' in their shards: run the "
                "same command again (any number of processes) to merge them and finish.",
                rank,
                world,
                type(e).__name__,
                e,
                len(left),
                len(mine),
                ", ".join(left[:20]) + (", ..." if len(left) > 20 else ""),
                shard,
            )
            raise
        gathered: List = [None] * world
        dist.all_gather_object(gathered, skipped)
        if rank == 0:
            merge_shards(output, [group_name(i) for i in todo])
        dist.barrier()
        return [s for part in gathered for s in part]
    finally:
        if created:
            cleanup()


def extract_sharded(
    conf: Dict,
    image_dir: Path,
    feature_path: Path,
    names: Optional[Sequence[str]] = None,
    overwrite: bool = False,
    device: Optional[str] = None,
    **kwargs,
) -> Tuple[Path, List]:
    """``extract.extract`` over the processes of torchrun (same arguments)."""

    if single_process():  # straight into the output, after what shards a killed run left
        merge_shards(Path(feature_path))
        return extract(
            conf, image_dir, feature_path, names, overwrite=overwrite, device=device, **kwargs
        )

    def list_work():
        all_names = ImageDataset(image_dir, conf.get("preprocessing", {}), names).names
        done = set() if overwrite else stored_names(feature_path, all_names)
        return [n for n in all_names if n not in done]

    def work(items, shard, device):
        return extract(
            conf, image_dir, shard, names=items, overwrite=overwrite, device=device, **kwargs
        )[1]

    return feature_path, run_sharded(feature_path, list_work, str, work, device)


def match_sharded(
    pairs_path: Path,
    feature_path: Path,
    match_path: Path,
    device: Optional[str] = None,
    batch_size: int = 16,
    overwrite: bool = False,
    commit_every: float = 1.0,
    max_distance: Optional[float] = None,
) -> Path:
    """``match.match`` over the processes of torchrun (same arguments)."""
    if single_process():
        merge_shards(Path(match_path))
        return match(
            pairs_path,
            feature_path,
            match_path,
            device,
            batch_size,
            overwrite,
            commit_every,
            max_distance,
        )

    def work(pairs, shard, device):
        match_into_file(pairs, feature_path, shard, device, batch_size, commit_every, max_distance)
        return []

    run_sharded(
        match_path,
        lambda: pending_pairs(pairs_path, feature_path, match_path, overwrite),
        lambda pair: names_to_pair(*pair),
        work,
        device,
    )
    return match_path
