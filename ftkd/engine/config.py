"""Training configuration: optimiser, schedule, precision, checkpoints, logging."""

from __future__ import annotations

from dataclasses import dataclass


# Parameter-name substring -> lr multiplier (the longest matching key wins; see ftkd/engine/optim.py).
DEFAULT_LR_MULTIPLIERS = {"backbone.conv1": 0.1, "backbone.bn1": 0.1, "backbone.layer": 0.1, "sampling_offset": 0.1}


@dataclass(frozen=True)
class TrainConfig:
    out_dir: str = "runs/default"
    seed: int = 0
    epochs: float = 24.0  # schedules are in epochs (fractions allowed), converted to iterations at start
    lr: float = 2e-4  # for the reference global batch below
    reference_batch: int = 8  # lr is given for this global batch; scaled by lr_scaling for others
    lr_scaling: str = "linear"  # "linear", "sqrt" or "none"
    weight_decay: float = 0.01
    lr_multipliers: dict | None = None  # parameter-name substring -> lr multiplier, e.g. {"backbone": 0.1}
    warmup_iters: int = 500  # iterations *at reference_batch* (500 x 8 = 4000 samples), rescaled to the global batch
    warmup_ratio: float = 1.0 / 3.0
    min_lr_ratio: float = 1e-3
    grad_clip: float = 35.0
    grad_accum: int = 1
    precision: str = "fp32"  # "fp32", "bf16" or "fp16" (with a grad scaler)
    compile: bool = False
    log_every: int = 50  # iterations
    checkpoint_every: int = 1000  # iterations (and always at the end)
    eval_every_epochs: float = 0.0  # 0 = evaluate only at the end
    max_bad_steps: int = 5  # consecutive non-finite losses before training stops
    device: str = "auto"  # "auto", "cpu", "cuda"
    # Batch semantics (see ftkd/engine/optim.py): global_batch > 0 fixes the optimiser's batch for any world size;
    # the per-process batch is then global_batch / (world_size * grad_accum) and data.batch_size is used only for
    # evaluation. global_batch = 0: data.batch_size per process, global batch = batch * world_size * grad_accum.
    global_batch: int = 0
    decay_norm_and_bias: bool = True  # official recipe: weight decay on every parameter (False: none on norms/biases)
    max_steps: int = 0  # stop after this many optimiser steps (0 = the whole schedule); the schedule is unchanged
    final_eval: bool = True  # predict + official metric on data.val_split at the end (writes metrics.json)
    sampler: str = "auto"  # "auto" (sequential for streaming models), "random" or "sequential"
    find_unused_parameters: bool = False  # DistributedDataParallel option for models that skip parameters
    progress_bar: bool = True  # tqdm bar with ETA on rank 0 (only when stderr is a terminal)

    def __post_init__(self) -> None:
        if self.lr_multipliers is None:
            # the official img_backbone key: the ResNet (stem + stages) but not the FPN neck, and the sampling offsets
            object.__setattr__(self, "lr_multipliers", dict(DEFAULT_LR_MULTIPLIERS))
        choices = {
            "lr_scaling": ("linear", "sqrt", "none"),
            "precision": ("fp32", "bf16", "fp16"),
            "sampler": ("auto", "random", "sequential"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: expected one of {list(allowed)}, got {getattr(self, name)!r}")
        for name in ("grad_accum", "reference_batch", "log_every", "checkpoint_every", "max_bad_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {getattr(self, name)}")
        if self.global_batch < 0 or self.max_steps < 0 or self.warmup_iters < 0:
            raise ValueError(
                f"global_batch, max_steps and warmup_iters must be >= 0, got "
                f"{self.global_batch}, {self.max_steps}, {self.warmup_iters}"
            )
        if self.epochs <= 0:
            raise ValueError(f"epochs: expected a positive number, got {self.epochs}")
