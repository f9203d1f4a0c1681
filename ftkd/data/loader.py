"""`build_dataloader`: dataset + DDP-aware batch sampler + collate, tuned so that the GPU does not wait.

Images stay uint8 (normalised on the device), only the needed frames are decoded, batches are pinned when CUDA is
available and workers persist across epochs. The epoch reaches the workers through the sampler's `SampleKey`s, so
persistent workers still augment with the right epoch, and the same (seed, epoch, index) gives the same sample for
any number of workers.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader

from ftkd.data.collate import collate
from ftkd.data.config import DataConfig
from ftkd.data.dataset import TemporalDataset
from ftkd.data.samplers import SequentialBatchSampler, ShardedBatchSampler, distributed_info


def seed_worker(worker_id: int) -> None:
    """Seed the global RNGs of a loader worker from its torch seed (base seed of the loader's generator + id).

    ftkd's own draws do not use them (they are keyed by seed, epoch and index); third-party code might.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_dataloader(
    config: DataConfig,
    split: str,
    train: bool,
    *,
    sequential: bool = False,
    seed: int = 0,
    batch_size: int | None = None,
    num_workers: int | None = None,
) -> DataLoader:
    """A DataLoader yielding `ftkd.structures.Batch` for this process's shard of `split`.

    Args:
        config: data section of the experiment config.
        split: split name (splits.json or devkit).
        train: shuffled order, random frame interval and augmentation; False: deterministic order, no augmentation.
        sequential: streaming batches (`SequentialBatchSampler`) instead of independent samples.
        seed: seeds the order and every augmentation draw (with the epoch and the sample index).
        batch_size, num_workers: per process; default to the config's.

    Call `set_epoch(loader, epoch, start_batch)` before each epoch (the order and augmentation depend on it).
    """
    dataset = TemporalDataset(config, split, train, seed)
    rank, world_size = distributed_info()
    batch_size = config.batch_size if batch_size is None else batch_size
    num_workers = config.num_workers if num_workers is None else num_workers
    if sequential:
        sampler = SequentialBatchSampler(
            dataset.scene_ranges,
            batch_size,
            train=train,
            seed=seed,
            rank=rank,
            world_size=world_size,
            sequence_splits=config.sequence_splits if train else 1,
        )
    else:
        sampler = ShardedBatchSampler(
            len(dataset), batch_size, shuffle=train, seed=seed, rank=rank, world_size=world_size
        )
    generator = torch.Generator()
    generator.manual_seed(seed * 1000 + rank)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        prefetch_factor=2 if num_workers > 0 else None,
        worker_init_fn=seed_worker,
        generator=generator,
    )


def set_epoch(loader: DataLoader, epoch: int, start_batch: int = 0) -> None:
    """Set the epoch (order + augmentation) and the number of batches to skip at its start (exact resume)."""
    loader.batch_sampler.set_epoch(epoch, start_batch)
    loader.dataset.set_epoch(epoch)
