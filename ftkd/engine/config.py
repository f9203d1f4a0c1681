"""Training configuration: optimiser, schedule, precision, checkpoints, logging."""

from __future__ import annotations

from dataclasses import dataclass


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
    warmup_iters: int = 500
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

    def __post_init__(self) -> None:
        if self.lr_multipliers is None:
            object.__setattr__(self, "lr_multipliers", {"backbone": 0.1, "sampling_offset": 0.1})
