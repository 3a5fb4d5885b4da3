"""Training batches that depend only on (seed, epoch, position), never on how many processes or restarts.

Each epoch's order is a permutation drawn from (seed, epoch); process r of W takes positions r, r + W, ...
so W processes with batch B see, step by step, the same global batches as one process with batch W * B.
Each item's random crop and time reversal are drawn from a generator seeded by (seed, epoch, index), so
they do not depend on the process or the worker either. A run resumed in the middle of an epoch skips
the batches it had already taken.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from functions.distributed import DistributedContext
from utils.config import ConfigError

_MIX = 0x9E3779B97F4A7C15
_MASK = (1 << 63) - 1


def item_seed(seed: int, epoch: int, index: int) -> int:
    return ((seed * _MIX + epoch) * _MIX + index) & _MASK


class EpochSampler(Sampler):
    """Yields (dataset index, item seed) for this process's share of the epoch's permutation."""

    def __init__(
        self, num_items: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, max_batches: int = 0
    ) -> None:
        if num_items < batch_size * world_size:
            raise ConfigError(
                f"{num_items} training items are fewer than one global batch "
                f"({batch_size} x {world_size} processes); lower TRAIN.BATCH_SIZE"
            )
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world_size, self.max_batches = rank, world_size, max_batches
        self.epoch, self.skip_batches = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        full = (self.num_items // self.world_size) // self.batch_size
        return min(full, self.max_batches) if self.max_batches > 0 else full

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip_batches = epoch, skip_batches

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.skip_batches) * self.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(item_seed(self.seed, self.epoch, -1))
        order = torch.randperm(self.num_items, generator=generator).tolist()
        usable = self.batches_per_epoch * self.batch_size * self.world_size
        mine = order[:usable][self.rank :: self.world_size]
        for index in mine[self.skip_batches * self.batch_size :]:
            yield index, item_seed(self.seed, self.epoch, index)


class SeededItems(Dataset):
    """Draws each item of `dataset` under torch's RNG seeded with the sampler's item seed."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def training_loader(
    dataset: Dataset, batch_size: int, seed: int, ctx: DistributedContext, num_workers: int, max_batches: int = 0
) -> DataLoader:
    """Batches of `batch_size` per process; `max_batches` > 0 caps the batches of an epoch."""
    sampler = EpochSampler(len(dataset), batch_size, seed, ctx.rank, ctx.world_size, max_batches)
    return DataLoader(
        SeededItems(dataset),
        batch_size=batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=num_workers,
        pin_memory=ctx.device.type == "cuda",
        # Its own generator: starting an epoch's iterator must not draw from the global RNG a resume restores.
        generator=torch.Generator().manual_seed(seed),
    )
