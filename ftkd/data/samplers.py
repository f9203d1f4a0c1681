"""Batch samplers that shard over DDP ranks and yield `SampleKey`s (position, epoch, sequence start).

- `ShardedBatchSampler`: independent samples (SparseBEV). Training shuffles with (seed, epoch) and pads by wrapping
  so that every rank runs the same number of steps; a global step's samples are the same for any world size with
  the same global batch. Testing keeps the order and visits every sample exactly once over all ranks.
- `SequentialBatchSampler`: streaming models (StreamPETR). Each batch slot walks its own sequence in temporal
  order, one keyframe per step, and sets `scene_start` on the first sample of each sequence it starts.

Both take `set_epoch(epoch, start_batch)`: the epoch seeds the order and the augmentation, `start_batch` skips
the first batches of that epoch (exact resume).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

from ftkd.data.dataset import SampleKey


def distributed_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world size): given values, else torch.distributed's when initialised, else (0, 1)."""
    initialised = dist.is_available() and dist.is_initialized()
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if world_size is None:
        world_size = dist.get_world_size() if initialised else 1
    if not 0 <= rank < world_size:
        raise ValueError(f"expected 0 <= rank < world_size, got rank {rank} and world_size {world_size}")
    return rank, world_size


class ShardedBatchSampler(Sampler[list[SampleKey]]):
    """Batches of independent samples for this rank (DistributedSampler + BatchSampler in one)."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if num_samples < 1 or batch_size < 1:
            raise ValueError(f"expected num_samples >= 1 and batch_size >= 1, got {num_samples} and {batch_size}")
        self.num_samples, self.batch_size, self.shuffle, self.seed = num_samples, batch_size, shuffle, seed
        self.rank, self.world_size = distributed_info(rank, world_size)
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def _indices(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_samples)[self.rank :: self.world_size]
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        global_batch = self.batch_size * self.world_size
        total = math.ceil(self.num_samples / global_batch) * global_batch
        order = np.resize(order, total)  # pad by wrapping around, so every rank runs the same number of steps
        return order[self.rank :: self.world_size]

    def _num_batches(self) -> int:
        return math.ceil(len(self._indices()) / self.batch_size)

    def __iter__(self) -> Iterator[list[SampleKey]]:
        indices = self._indices()
        for start in range(self.start_batch * self.batch_size, len(indices), self.batch_size):
            yield [SampleKey(int(i), self.epoch, True) for i in indices[start : start + self.batch_size]]

    def __len__(self) -> int:
        return max(0, self._num_batches() - self.start_batch)


class SequentialBatchSampler(Sampler[list[SampleKey]]):
    """Streaming batches: slot b of this rank's batch follows one sequence in temporal order.

    Training: scenes are cut into `sequence_splits` consecutive sub-sequences (StreamPETR's seq_split_num); the
    sequences are shuffled per epoch into one global queue; all `world_size * batch_size` slots start on the first
    ones, and a slot that finishes its sequence takes the next from the queue. An epoch has
    ceil(num_samples / global batch) steps, so each keyframe is seen about once; sequences still running at the end
    of an epoch are cut, and the next epoch starts fresh sequences.

    Testing: whole scenes, dealt to the slots longest first (balanced lengths), each visited exactly once. Slots are
    ordered by their total length, so when a slot runs out the batch shrinks from its end and slot b stays at
    position b (a streaming model's per-slot memory stays aligned).
    """

    def __init__(
        self,
        scene_ranges: list[range],
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        sequence_splits: int = 1,
    ) -> None:
        if not scene_ranges or batch_size < 1 or sequence_splits < 1:
            raise ValueError(
                f"expected scenes, batch_size >= 1 and sequence_splits >= 1, got {len(scene_ranges)} scenes, "
                f"batch_size {batch_size}, sequence_splits {sequence_splits}"
            )
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.rank, self.world_size = distributed_info(rank, world_size)
        self.epoch, self.start_batch = 0, 0
        if train:
            parts = (np.array_split(np.array(scene), sequence_splits) for scene in scene_ranges)
            self.sequences = [[int(i) for i in part] for split in parts for part in split if len(part)]
        else:
            self.sequences = [list(scene) for scene in scene_ranges]
        self.num_samples = sum(len(s) for s in self.sequences)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def _train_steps(self) -> list[list[SampleKey]]:
        slots = self.world_size * self.batch_size
        num_steps = math.ceil(self.num_samples / slots)
        rng = np.random.default_rng([self.seed, self.epoch])
        queue: list[int] = []
        current: list[list[int]] = [[] for _ in range(slots)]  # remaining positions of each slot's sequence
        steps = []
        for _ in range(num_steps):
            keys = []  # every rank simulates all slots, so the queue is consumed identically everywhere
            for g in range(slots):
                start = not current[g]
                if start:
                    if not queue:
                        queue = [int(s) for s in rng.permutation(len(self.sequences))]
                    current[g] = list(self.sequences[queue.pop(0)])
                keys.append(SampleKey(int(current[g].pop(0)), self.epoch, start))
            steps.append(keys[self.rank * self.batch_size : (self.rank + 1) * self.batch_size])
        return steps

    def _test_steps(self) -> list[list[SampleKey]]:
        slots = self.world_size * self.batch_size
        loads = [0] * slots
        assigned: list[list[int]] = [[] for _ in range(slots)]
        for s in sorted(range(len(self.sequences)), key=lambda s: (-len(self.sequences[s]), s)):
            g = min(range(slots), key=lambda g: (loads[g], g))
            assigned[g].append(s)
            loads[g] += len(self.sequences[s])
        mine = sorted(range(self.rank, slots, self.world_size), key=lambda g: (-loads[g], g))
        streams = []
        for g in mine:
            keys = []
            for s in assigned[g]:
                keys.extend(SampleKey(int(i), self.epoch, j == 0) for j, i in enumerate(self.sequences[s]))
            streams.append(keys)
        num_steps = max(len(keys) for keys in streams)
        return [[keys[t] for keys in streams if t < len(keys)] for t in range(num_steps)]

    def _steps(self) -> list[list[SampleKey]]:
        steps = self._train_steps() if self.train else self._test_steps()
        return [batch for batch in steps[self.start_batch :] if batch]

    def __iter__(self) -> Iterator[list[SampleKey]]:
        yield from self._steps()

    def __len__(self) -> int:
        return len(self._steps())
