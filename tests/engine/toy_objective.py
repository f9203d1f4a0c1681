"""A tiny objective on random Batches for engine tests (no detector needed): a deterministic dataset of Batch
samples and a small regression model with a 'backbone', a 'sampling_offset' layer, a LayerNorm and dropout; and how
a `torch.multiprocessing.spawn` DDP worker leaves (`leave_worker`)."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ftkd.data.samplers import ShardedBatchSampler
from ftkd.engine.objective import Objective
from ftkd.structures import Batch, Detections, SampleMeta

T, N, H, W = 1, 6, 4, 4


class ToyDataset(Dataset):
    """Sample i is a function of i only (so any order/sharding sees the same data)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.sample_tokens = [f"token{i:04d}" for i in range(size)]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: int | tuple) -> dict:
        index = int(key[0]) if isinstance(key, tuple) else int(key)  # ftkd samplers yield SampleKey(index, ...)
        generator = torch.Generator().manual_seed(1000 + index)
        images = torch.randint(0, 256, (T, N, 3, H, W), generator=generator, dtype=torch.uint8)
        box = torch.randn(1, 9, generator=generator)
        return {"index": index, "images": images, "box": box}


def collate(samples: list[dict]) -> Batch:
    B = len(samples)
    return Batch(
        images=torch.stack([s["images"] for s in samples]),  # [B, T, N, 3, H, W]
        lidar2img=torch.eye(4).expand(B, T, N, 4, 4).clone(),
        intrinsics=torch.eye(3).expand(B, T, N, 3, 3).clone(),
        time_offsets=torch.zeros(B, T),
        frame_valid=torch.ones(B, T, dtype=torch.bool),
        ego_pose=torch.eye(4, dtype=torch.float64).expand(B, 4, 4).clone(),
        timestamp=torch.zeros(B, dtype=torch.float64),
        scene_start=torch.zeros(B, dtype=torch.bool),
        gt_boxes=[s["box"] for s in samples],
        gt_labels=[torch.zeros(1, dtype=torch.int64) for _ in samples],
        meta=[SampleMeta(f"token{s['index']:04d}", "scene", 0.0, np.eye(4)) for s in samples],
    )


def toy_loader(
    size: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0, sampler: str = "torch"
) -> DataLoader:
    """sampler "torch": DistributedSampler + BatchSampler; "ftkd": the project's ShardedBatchSampler."""
    dataset = ToyDataset(size)
    generator = torch.Generator().manual_seed(seed)
    if sampler == "ftkd":
        batch_sampler = ShardedBatchSampler(size, batch_size, shuffle=True, seed=seed, rank=rank, world_size=world_size)
        return DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate, generator=generator)
    shard = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=shard, collate_fn=collate, generator=generator)


class ToyModel(nn.Module):
    def __init__(self, dropout: float = 0.1) -> None:
        super().__init__()
        self.backbone = nn.Linear(T * N * 3, 16)
        self.norm = nn.LayerNorm(16)
        self.dropout = nn.Dropout(dropout)
        self.sampling_offset = nn.Linear(16, 16)
        self.head = nn.Linear(16, 9)

    def forward(self, batch: Batch) -> Tensor:
        x = batch.images.float().mean(dim=(-1, -2)) / 255.0  # [B, T, N, 3]
        x = x.flatten(1)  # [B, T*N*3]
        x = self.dropout(torch.relu(self.norm(self.backbone(x))))
        return self.head(x + self.sampling_offset(x))  # [B, 9]


    def postprocess(self, output: Tensor) -> list[Detections]:
        """One 'box' per sample: the regression output itself."""
        return [Detections(boxes=o[None], scores=o.new_ones(1), labels=torch.zeros(1, dtype=torch.int64)) for o in output]


def toy_eval_loader(size: int, batch_size: int, rank: int = 0, world_size: int = 1) -> DataLoader:
    """Test-time order, each sample once over all processes (the project's sampler)."""
    batch_sampler = ShardedBatchSampler(size, batch_size, shuffle=False, rank=rank, world_size=world_size)
    return DataLoader(ToyDataset(size), batch_sampler=batch_sampler, collate_fn=collate)


class StreamingToyModel(ToyModel):
    """Carries a memory from batch to batch (like StreamPETR): the engine must checkpoint and restore it."""

    def __init__(self, dropout: float = 0.1) -> None:
        super().__init__(dropout)
        self.memory_proj = nn.Linear(9, 9)
        self.memory: Tensor | None = None

    def forward(self, batch: Batch) -> Tensor:
        out = super().forward(batch)  # [B, 9]
        if self.memory is not None and self.memory.shape == out.shape:
            out = out + self.memory_proj(self.memory)
        self.memory = out.detach()
        return out

    def reset_memory(self) -> None:
        self.memory = None

    def memory_state_dict(self) -> dict[str, Tensor]:
        return {} if self.memory is None else {"memory": self.memory}

    def load_memory_state_dict(self, state: dict[str, Tensor]) -> None:
        self.memory = state.get("memory")


class ToyObjective(Objective):
    """MSE of one box per sample (a per-sample mean, so a global batch split over processes gives the same loss).

    `nan_calls`: forward calls (0-based) whose loss is made NaN, for the non-finite guard tests.
    """

    def __init__(
        self, dropout: float = 0.1, nan_calls: set[int] | None = None, streaming: bool = False, seconds: float = 0.0
    ) -> None:
        super().__init__()
        self.model = StreamingToyModel(dropout) if streaming else ToyModel(dropout)
        self.weight_dict = {"loss_box": 1.0, "loss_small": 0.5}
        self.nan_calls = nan_calls or set()
        self.calls = 0
        self.seconds = seconds  # a slow step, so that a test can kill the process mid-run

    def forward(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        time.sleep(self.seconds)
        pred = self.model(batch)
        target = torch.stack([b[0] for b in batch.gt_boxes])  # [B, 9]
        loss_box = ((pred - target) ** 2).mean()
        if self.calls in self.nan_calls:
            loss_box = loss_box * float("nan")
        self.calls += 1
        losses = {"loss_box": loss_box, "loss_small": pred.abs().mean(), "pred_norm": pred.detach().norm()}
        return losses, pred


def leave_worker() -> None:
    """End a spawned DDP worker whose work succeeded and whose process group is destroyed, skipping interpreter
    finalization: there a background thread of the gloo process group occasionally aborts the process ("terminate
    called without an active exception", SIGABRT, about one run in four on this project's CI machine), which
    `mp.spawn` reports as a failure of work that was done and checked. A failing worker raises before this."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
