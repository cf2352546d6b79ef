"""A distributed sampler that resumes mid-epoch exactly."""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor
from torch.utils.data import Sampler


class ResumableSampler(Sampler):
    """Disjoint, equal shards per rank of a permutation fixed by (seed, epoch).

    Yields ``(epoch, index)`` pairs. The training loop reports what it consumed with
    :meth:`advance` (DataLoader workers prefetch, so the sampler cannot know); ``state_dict``
    then records where to continue, and a sampler given that state yields exactly the rest
    of the epoch an uninterrupted run would have seen.
    """

    def __init__(self, size: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True) -> None:
        if size < world_size:
            raise ValueError(f"dataset of {size} examples is smaller than the world size {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.size, self.rank, self.world_size, self.seed, self.shuffle = size, rank, world_size, seed, shuffle
        self.epoch = 0
        self.offset = 0  # examples of this rank's shard already consumed in this epoch

    def __len__(self) -> int:
        return self.size // self.world_size - self.offset

    def shard(self, epoch: int) -> Tensor:
        """This rank's indices of ``epoch``, in order: a tensor (8 bytes an index, not a Python list's 36)."""
        usable = self.size - self.size % self.world_size  # equal shards: the tail is dropped
        if not self.shuffle:
            return torch.arange(self.rank, usable, self.world_size)
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch))
        return order[self.rank:usable:self.world_size].clone()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        rest = self.shard(epoch)[self.offset:]
        for start in range(0, len(rest), 4096):  # a few thousand Python ints at a time
            for index in rest[start: start + 4096].tolist():
                yield epoch, index

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.offset = epoch, 0

    def advance(self, examples: int) -> None:
        self.offset += examples

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset, "seed": self.seed, "size": self.size,
                "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "size"):
            if state[key] != getattr(self, key):
                raise ValueError(f"sampler state has {key}={state[key]}, this run has {getattr(self, key)}")
        if state["world_size"] != self.world_size:
            # another data-parallel size: continue from the same global position
            consumed = state["offset"] * state["world_size"]
            self.epoch, self.offset = state["epoch"], consumed // self.world_size
        else:
            self.epoch, self.offset = state["epoch"], state["offset"]
