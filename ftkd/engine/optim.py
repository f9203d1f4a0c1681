"""Optimiser and learning-rate schedule, stated in samples and epochs rather than iterations.

Batch arithmetic (one optimiser step = one *global* batch):
    global_batch = per_device_batch * world_size * grad_accum
With `train.global_batch > 0` the global batch is fixed and the per-device batch follows from the world size and
the accumulation, so the same config on 1, 2 or 4 GPUs (or with accumulation) takes the same optimiser steps at the
same learning rates. With `train.global_batch = 0` the per-device batch is `data.batch_size` and the learning rate
follows `train.lr_scaling` in the global batch: lr = train.lr * s(global_batch / train.reference_batch) with
s(r) = r ("linear"), sqrt(r) ("sqrt") or 1 ("none").

Schedule (mmcv's CosineAnnealing + linear warmup, as in the official recipes), per optimiser step t of T:
    cosine(t) = min_lr_ratio + (1 - min_lr_ratio) * (1 + cos(pi * t / T)) / 2
    warmup(t) = 1 - (1 - warmup_ratio) * (1 - t / W)   for t < W, else 1
    lr(t)     = base_lr * lr_mult(group) * cosine(t) * warmup(t)
T = ceil(epochs * steps_per_epoch). The warmup is given as `warmup_iters` iterations of the reference batch (the
official 500 iterations at batch 8 = 4000 samples) and converted to W = round(warmup_iters * reference_batch /
global_batch) steps, so it always covers the same number of samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ftkd.engine.config import TrainConfig

# Parameters of these modules count as normalisation parameters (no weight decay if decay_norm_and_bias=False).
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


@dataclass(frozen=True)
class BatchPlan:
    """How a global batch is split over processes and accumulation steps."""

    per_device_batch: int
    world_size: int
    grad_accum: int

    @property
    def global_batch(self) -> int:
        return self.per_device_batch * self.world_size * self.grad_accum


def plan_batches(train: TrainConfig, data_batch_size: int, world_size: int) -> BatchPlan:
    """The per-device batch for this world size (see the module docstring)."""
    if train.global_batch == 0:
        return BatchPlan(data_batch_size, world_size, train.grad_accum)
    divisor = world_size * train.grad_accum
    if train.global_batch % divisor != 0:
        raise ValueError(
            f"train.global_batch={train.global_batch} cannot be split over {world_size} process(es) x "
            f"train.grad_accum={train.grad_accum}: it must be a multiple of {divisor}"
        )
    return BatchPlan(train.global_batch // divisor, world_size, train.grad_accum)


def scaled_lr(base_lr: float, global_batch: int, reference_batch: int, rule: str) -> float:
    """The learning rate for `global_batch`, given `base_lr` for `reference_batch` and a scaling rule."""
    ratio = global_batch / reference_batch
    if rule == "linear":
        return base_lr * ratio
    if rule == "sqrt":
        return base_lr * math.sqrt(ratio)
    if rule == "none":
        return base_lr
    raise ValueError(f"train.lr_scaling: expected 'linear', 'sqrt' or 'none', got {rule!r}")


def batches_per_epoch(num_samples: int, per_device_batch: int, world_size: int) -> int:
    """Micro-batches one process draws per epoch under a DistributedSampler without drop_last (it pads every
    shard to ceil(num_samples / world_size) samples)."""
    return math.ceil(math.ceil(num_samples / world_size) / per_device_batch)


@dataclass(frozen=True)
class Schedule:
    """Warmup + cosine learning-rate schedule in optimiser steps (see the module docstring)."""

    base_lr: float  # learning rate at multiplier 1 after batch scaling
    total_steps: int
    steps_per_epoch: int
    warmup_steps: int
    warmup_ratio: float
    min_lr_ratio: float
    plan: BatchPlan

    def factor(self, step: int) -> float:
        """lr(step) / base_lr for a parameter group of multiplier 1."""
        progress = min(step, self.total_steps) / self.total_steps
        cosine = self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if step < self.warmup_steps:
            cosine *= 1.0 - (1.0 - self.warmup_ratio) * (1.0 - step / self.warmup_steps)
        return cosine

    def lr(self, step: int) -> float:
        return self.base_lr * self.factor(step)

    def describe(self) -> str:
        plan = self.plan
        return (
            f"global batch {plan.global_batch} = {plan.per_device_batch} per device x {plan.world_size} process(es) "
            f"x {plan.grad_accum} accumulation; {self.steps_per_epoch} steps/epoch, {self.total_steps} steps, "
            f"warmup {self.warmup_steps} steps, base lr {self.base_lr:.3g}"
        )


def make_schedule(train: TrainConfig, plan: BatchPlan, micro_batches_per_epoch: int) -> Schedule:
    """The schedule of a run whose loader yields `micro_batches_per_epoch` batches per process and epoch.

    An epoch ends with a shorter accumulation group when its micro-batches do not divide by grad_accum, so
    steps_per_epoch = ceil(micro_batches_per_epoch / grad_accum).
    """
    if micro_batches_per_epoch < 1:
        raise ValueError(f"the training loader yields no batch (len {micro_batches_per_epoch}): is the split empty?")
    steps_per_epoch = math.ceil(micro_batches_per_epoch / plan.grad_accum)
    total_steps = max(1, math.ceil(train.epochs * steps_per_epoch - 1e-9))
    warmup_steps = round(train.warmup_iters * train.reference_batch / plan.global_batch)
    return Schedule(
        base_lr=scaled_lr(train.lr, plan.global_batch, train.reference_batch, train.lr_scaling),
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        warmup_steps=warmup_steps,
        warmup_ratio=train.warmup_ratio,
        min_lr_ratio=train.min_lr_ratio,
        plan=plan,
    )


def lr_multiplier(name: str, multipliers: dict[str, float]) -> float:
    """The multiplier of the longest key that is a substring of `name` (ties: alphabetical), else 1."""
    matches = sorted((key for key in multipliers if key in name), key=lambda key: (-len(key), key))
    return float(multipliers[matches[0]]) if matches else 1.0


def parameter_groups(module: nn.Module, train: TrainConfig) -> list[dict]:
    """AdamW parameter groups by (lr multiplier, weight decay); frozen parameters are left out.

    Each group carries `lr_mult` (read by `WarmupCosine`) and `names` (for logging and tests).
    """
    multipliers = train.lr_multipliers or {}
    for key, value in multipliers.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"train.lr_multipliers[{key!r}]: expected a non-negative number, got {value!r}")
    no_decay: set[str] = set()
    if not train.decay_norm_and_bias:
        for module_name, child in module.named_modules():
            for param_name, _ in child.named_parameters(recurse=False):
                if isinstance(child, NORM_TYPES) or param_name == "bias":
                    no_decay.add(f"{module_name}.{param_name}" if module_name else param_name)
    groups: dict[tuple[float, float], dict] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        mult = lr_multiplier(name, multipliers)
        decay = 0.0 if name in no_decay else train.weight_decay
        group = groups.setdefault((mult, decay), {"params": [], "names": [], "lr_mult": mult, "weight_decay": decay})
        group["params"].append(param)
        group["names"].append(name)
    if not groups:
        raise ValueError(f"{type(module).__name__} has no trainable parameters")
    return list(groups.values())


def build_optimizer(module: nn.Module, train: TrainConfig, base_lr: float) -> torch.optim.AdamW:
    """AdamW over `parameter_groups` (fused kernels when every parameter is on a CUDA device)."""
    groups = parameter_groups(module, train)
    on_cuda = all(p.is_cuda for group in groups for p in group["params"])
    for group in groups:
        group["lr"] = base_lr * group["lr_mult"]
        del group["names"]  # the optimizer's state_dict keeps only checkpoint-safe primitives
    return torch.optim.AdamW(groups, lr=base_lr, weight_decay=train.weight_decay, fused=on_cuda or None)


class WarmupCosine:
    """Sets every group's lr to `schedule.lr(step) * group['lr_mult']`; its state is the step counter."""

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Schedule) -> None:
        self.optimizer = optimizer
        self.schedule = schedule
        self.step_count = 0
        self._apply()

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def _apply(self) -> None:
        lr = self.schedule.lr(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"step": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step"])
        self._apply()
