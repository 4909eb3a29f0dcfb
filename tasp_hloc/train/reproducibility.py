"""What makes a run repeatable and resumable: the epoch-seeded sampler and the random streams."""

import random
from typing import Dict, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler):
    """A seeded permutation per epoch that can start mid-epoch (for resuming).

    Several processes: with ``batch_size`` (the global batch B) and ``world_size`` N > 1, the
    permutation (from ``start`` on) is cut into global batches of B and process ``rank`` gets
    rows ``rank*B/N:(rank+1)*B/N`` of each whole one, so the union over processes of their
    k-th batches of B/N is the k-th global batch of one process.
    """

    def __init__(
        self,
        n: int,
        seed: int,
        epoch: int = 0,
        start: int = 0,
        batch_size: Optional[int] = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        if world_size > 1 and (batch_size is None or batch_size % world_size):
            raise ValueError(
                f"A global batch of {batch_size} does not split over {world_size} processes."
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size}).")
        self.n, self.seed, self.epoch, self.start = n, seed, epoch, start
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(self.n, generator=g)[self.start :]
        if self.world_size > 1:
            B, b = self.batch_size, self.batch_size // self.world_size
            k = len(order) // B
            order = order[: k * B].view(k, B)[:, self.rank * b : (self.rank + 1) * b].reshape(-1)
        return iter(order.tolist())

    def __len__(self):
        if self.world_size > 1:
            return (self.n - self.start) // self.batch_size * (self.batch_size // self.world_size)
        return self.n - self.start


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """A seed for the global random streams of process ``rank`` (> 0) of a run."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def rng_state() -> Dict:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: Dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
