"""The training loop shared by `ftkd train` and `ftkd distill`: it optimises any `Objective`.

One code path for 1..N processes (torchrun; NCCL on CUDA, gloo on the CPU). Per optimiser step the trainer draws
`grad_accum` micro-batches, computes `sum(losses[k] * weight_dict[k])` under the run's autocast, back-propagates
(gradients synchronised across processes on the last micro-batch only), unscales (fp16), clips, checks that the
loss and gradient norm are finite, steps AdamW and the warmup + cosine schedule (ftkd/engine/optim.py).

Resuming is exact: a checkpoint holds the model, the objective's extra state, optimiser, schedule, grad scaler,
every process's RNG state and streaming memory, and the loader position (epoch + micro-batches consumed). On
resume the sampler gets `set_epoch(epoch, start_batch)` (ftkd.data.samplers), or, for other loaders,
`set_epoch(epoch)` and the consumed batches are skipped by index (no data is loaded for them). This requires the data layer's order and augmentation to be functions of (seed, epoch, index), as
`ftkd.data.loader` guarantees, and never to draw from the global RNG.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ftkd.config import ExperimentConfig
from ftkd.engine import distributed
from ftkd.engine.checkpoint import (
    config_from_checkpoint,
    config_to_json,
    load_checkpoint,
    save_checkpoint,
    to_device,
)
from ftkd.engine.inference import autocast_context, predict_and_evaluate
from ftkd.engine.logging import MetricLogger, ProgressBar, format_duration, run_environment, setup_run_logging
from ftkd.engine.objective import Objective
from ftkd.engine.optim import WarmupCosine, build_optimizer, make_schedule, plan_batches
from ftkd.structures import Batch
from ftkd.utils.configuration import to_dict
from ftkd.utils.seed import rng_state, seed_everything, set_rng_state

logger = logging.getLogger(__name__)

# Config keys that may differ between a run and its resumption without changing what is computed.
RESUME_SAFE_KEYS = {
    "name",
    "train.out_dir",
    "train.max_steps",
    "train.final_eval",
    "train.progress_bar",
    "train.log_every",
    "train.checkpoint_every",
    "train.eval_every_epochs",
    "train.grad_accum",  # the position is converted (same global batch)
    "data.num_workers",
    "data.dataroot",
    "data.cache_dir",
}


class NonFiniteLossError(RuntimeError):
    """Training stopped after `train.max_bad_steps` consecutive steps with a non-finite loss or gradient."""


def weighted_loss(losses: dict[str, Tensor], weight_dict: dict[str, float]) -> Tensor:
    """sum(losses[k] * weight_dict[k]) over the keys present in both (other keys are only logged)."""
    terms = [losses[k] * weight_dict[k] for k in losses if k in weight_dict]
    if not terms:
        raise ValueError(
            f"the objective returned no weighted loss: losses {sorted(losses)}, weight_dict {sorted(weight_dict)}"
        )
    return torch.stack([t.float() for t in terms]).sum()


def position_loader(loader: Iterable, epoch: int, start_batch: int = 0) -> Iterable:
    """Start `epoch` on the loader's sampler / batch sampler / dataset (`set_epoch`, each object once) and return
    an iterable over that epoch's batches from `start_batch` on.

    A batch sampler whose `set_epoch` takes `start_batch` (ftkd.data.samplers) skips by itself; for any other
    loader the first `start_batch` index lists are dropped without loading their data (`skip_batches`).
    """
    batch_sampler = getattr(loader, "batch_sampler", None)
    candidates = [
        getattr(loader, "sampler", None),
        batch_sampler,
        getattr(batch_sampler, "sampler", None),
        getattr(loader, "dataset", None),
    ]
    skips_itself = callable(getattr(batch_sampler, "set_epoch", None)) and (
        "start_batch" in inspect.signature(batch_sampler.set_epoch).parameters
    )
    seen: set[int] = set()
    for obj in candidates:
        if obj is None or id(obj) in seen or not callable(getattr(obj, "set_epoch", None)):
            continue
        seen.add(id(obj))
        if obj is batch_sampler and skips_itself:
            obj.set_epoch(epoch, start_batch)
        else:
            obj.set_epoch(epoch)
    if skips_itself or start_batch == 0:
        return loader
    return skip_batches(loader, start_batch)


class _SkipBatches:
    """A batch sampler that drops the first `skip` index lists of another (cheap: no data is loaded)."""

    def __init__(self, batch_sampler: Iterable[list[int]], skip: int) -> None:
        self.batch_sampler = batch_sampler
        self.skip = skip

    def __iter__(self) -> Iterator[list[int]]:
        return itertools.islice(iter(self.batch_sampler), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.batch_sampler) - self.skip)


def skip_batches(loader: Iterable, skip: int) -> Iterable:
    """The loader's batches after the first `skip` of the current epoch (its epoch must be set already)."""
    if isinstance(loader, DataLoader) and loader.batch_sampler is not None:
        return DataLoader(
            loader.dataset,
            batch_sampler=_SkipBatches(loader.batch_sampler, skip),
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            timeout=loader.timeout,
            worker_init_fn=loader.worker_init_fn,
            multiprocessing_context=loader.multiprocessing_context,
            generator=loader.generator,
            prefetch_factor=loader.prefetch_factor if loader.num_workers > 0 else None,
        )
    return itertools.islice(loader, skip, None)


class _LossesOnly(nn.Module):
    """The objective as DistributedDataParallel sees it: forward returns (losses, None).

    With `find_unused_parameters`, DDP counts every parameter behind a tensor of a dataclass output (DetectorOutput)
    as used and waits for its gradient; an output that feeds no loss (StreamPETR's stride-32 FPN level outside
    distillation) never gets one, and the next step fails ("Expected to have finished reduction in the prior
    iteration"). The trainer only needs the losses.
    """

    def __init__(self, objective: nn.Module) -> None:
        super().__init__()
        self.objective = objective

    def forward(self, batch: Batch) -> tuple[dict[str, Tensor], None]:
        return self.objective(batch)[0], None


def _flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key != "lr_multipliers":
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class Trainer:
    """Trains `objective` as `config.train` says; `fit()` runs the loop and returns the final metrics.

    Args:
        config: the resolved experiment config (saved to `<out_dir>/config.json` and in every checkpoint).
        objective: what is optimised (`DetectionObjective`, `DistillationObjective`); `objective.model` is the
            detector that is checkpointed and evaluated.
        train_loader / val_loader: loaders yielding `Batch`; built with `ftkd.data.loader.build_dataloader` if None
            (the training loader with the per-device batch of the batch plan).
        resume: a checkpoint to resume from, "auto" (`<out_dir>/checkpoints/last.pt` if it exists) or None.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        objective: Objective,
        *,
        train_loader: Iterable[Batch] | None = None,
        val_loader: Iterable[Batch] | None = None,
        resume: str | Path | None = None,
    ) -> None:
        train = config.train
        self.config = config
        self.objective = objective
        self.device = distributed.init_distributed(train.device)
        self.rank = distributed.get_rank()
        self.world_size = distributed.get_world_size()
        self.is_main = distributed.is_main_process()
        self.out_dir = Path(train.out_dir)
        self.precision = train.precision
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        seed_everything(train.seed + self.rank)

        self.sequential = train.sampler == "sequential" or (
            train.sampler == "auto" and getattr(config.model, "arch", "") == "streampetr"
        )
        self.plan = plan_batches(train, config.data.batch_size, self.world_size)
        if self.sequential and self.plan.grad_accum > 1:
            logger.warning(
                f"streaming training with {self.plan.grad_accum}-fold accumulation: each batch slot walks one "
                "sequence, so the micro-batches of a step are consecutive frames of the same sequences, not the "
                "samples that more processes would draw at this global batch (benchmarks/scaling.py measures it)"
            )
        if train_loader is None:
            from ftkd.data.loader import build_dataloader

            train_loader = build_dataloader(
                config.data,
                config.data.train_split,
                train=True,
                sequential=self.sequential,
                seed=train.seed,
                batch_size=self.plan.per_device_batch,
            )
        self.train_loader = train_loader
        self.val_loader = val_loader
        position_loader(train_loader, 0)  # the length of a whole epoch
        self.schedule = make_schedule(train, self.plan, len(train_loader))

        objective.to(self.device)
        self.optimizer = build_optimizer(objective, train, self.schedule.base_lr)
        self.scheduler = WarmupCosine(self.optimizer, self.schedule)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.module: nn.Module = objective
        if distributed.is_distributed():
            self.module = DistributedDataParallel(
                _LossesOnly(objective),
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=train.find_unused_parameters,
            )
        self.forward = torch.compile(self.module) if train.compile else self.module

        self.step = 0  # optimiser steps done (skipped non-finite steps included)
        self.epoch = 0
        self.batch_in_epoch = 0  # micro-batches of `epoch` already consumed
        self.bad_steps = 0  # consecutive non-finite steps
        self.environment = run_environment(self.device, self.world_size)

        if self.is_main:
            (self.out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.json").write_text(config_to_json(config) + "\n")
        distributed.barrier()
        setup_run_logging(self.out_dir, self.is_main)
        self.metrics = MetricLogger(self.out_dir, enabled=self.is_main)
        if resume == "auto":
            last = self.out_dir / "checkpoints" / "last.pt"
            resume = last if last.is_file() else None
        if resume is not None:
            self.load(resume)

    # ----------------------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The resumable state (collective: every process must call it; complete on process 0 only)."""
        model = self.objective.model
        memory = model.memory_state_dict() if callable(getattr(model, "memory_state_dict", None)) else None
        rank_states = distributed.gather_object({"rng": rng_state(), "memory": to_device(memory, "cpu")})
        return {
            "config": config_to_json(self.config),
            "model": model.state_dict(),
            "objective_extra": self.objective.extra_state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "progress": {
                "step": self.step,
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "bad_steps": self.bad_steps,
                "global_batch": self.plan.global_batch,
                "grad_accum": self.plan.grad_accum,
            },
            "rank_states": rank_states,
            "meta": {
                "git_sha": self.environment["git_sha"],
                "torch": str(torch.__version__),
                "time": time.time(),
                "world_size": self.world_size,
                "global_batch": self.plan.global_batch,
            },
        }

    def save(self, name: str = "last.pt") -> Path:
        """Write `<out_dir>/checkpoints/<name>` (collective)."""
        state = self.state_dict()
        path = self.out_dir / "checkpoints" / name
        if self.is_main:
            save_checkpoint(state, path)
            logger.info(f"saved checkpoint {path} (step {self.step})")
        distributed.barrier()
        return path

    def save_final(self) -> Path:
        """`final.pt`: what evaluation, export and distillation need (config, model, extra state), no optimiser."""
        path = self.out_dir / "checkpoints" / "final.pt"
        if self.is_main:
            state = {
                "config": config_to_json(self.config),
                "model": self.objective.model.state_dict(),
                "objective_extra": self.objective.extra_state_dict(),
                "progress": {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch},
                "meta": {"torch": str(torch.__version__), "time": time.time(), "world_size": self.world_size},
            }
            save_checkpoint(state, path)
            logger.info(f"saved final weights {path}")
        distributed.barrier()
        return path

    def load(self, path: str | Path) -> None:
        """Resume from a checkpoint written by `save` (warns about config keys that changed)."""
        state = load_checkpoint(path, map_location="cpu")
        for key in ("optimizer", "scheduler", "scaler", "progress", "rank_states"):
            if key not in state:
                raise ValueError(f"checkpoint {path}: missing {key!r}; only checkpoints/last.pt files can be resumed")
        old = _flatten(to_dict(config_from_checkpoint(state, str(path))))
        new = _flatten(to_dict(self.config))
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in RESUME_SAFE_KEYS)
        if changed:
            logger.warning(
                f"resuming {path} with a different config: "
                + ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
            )
        self.objective.model.load_state_dict(state["model"])
        self.objective.load_extra_state_dict(state.get("objective_extra", {}))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        progress = state["progress"]
        if progress["global_batch"] != self.plan.global_batch:
            raise ValueError(
                f"checkpoint {path} was trained with a global batch of {progress['global_batch']}, this run has "
                f"{self.plan.global_batch} ({self.schedule.describe()}): the schedule and the data position would not "
                f"carry over. Resume with train.global_batch={progress['global_batch']}."
            )
        self.step = int(progress["step"])
        self.epoch = int(progress["epoch"])
        self.bad_steps = int(progress["bad_steps"])
        # The position is kept in micro-batches; another split of the same global batch (processes x accumulation)
        # continues after the same optimiser steps (ftkd's samplers give a global step the same samples).
        steps_in_epoch = math.ceil(int(progress["batch_in_epoch"]) / int(progress["grad_accum"]))
        self.batch_in_epoch = min(steps_in_epoch * self.plan.grad_accum, len(self.train_loader))
        rank_states = state["rank_states"]
        if len(rank_states) == self.world_size:
            own = rank_states[self.rank]
            set_rng_state(own["rng"])
            if own["memory"] is not None:
                self.objective.model.load_memory_state_dict(to_device(own["memory"], self.device))
        else:
            logger.warning(
                f"checkpoint {path} was written by {len(rank_states)} process(es), this run has {self.world_size}: "
                "RNG and streaming memory are re-initialised, so the continuation is not bit-identical"
            )
            seed_everything(self.config.train.seed + self.rank + 1_000_003 * self.step)
        logger.info(f"resumed {path}: step {self.step}, epoch {self.epoch}, batch {self.batch_in_epoch}")

    # --------------------------------------------------------------------------------------------------- loop
    def _groups(self) -> Iterator[list[Batch]]:
        """Micro-batch groups (one per optimiser step), from the current loader position on, forever."""
        accum = self.plan.grad_accum
        while True:
            batches = position_loader(self.train_loader, self.epoch, self.batch_in_epoch)
            group: list[Batch] = []
            for batch in batches:
                group.append(batch)
                if len(group) == accum:
                    yield group
                    group = []
            if group:
                yield group
            self.epoch += 1
            self.batch_in_epoch = 0

    def _train_step(self, group: list[Batch]) -> tuple[dict[str, float], float, bool]:
        """One optimiser step over a micro-batch group: (mean losses over processes, grad norm, finite)."""
        self.objective.train()
        weight_dict = self.objective.weight_dict
        sums: dict[str, Tensor] = {}
        for i, batch in enumerate(group):
            batch = batch.to(self.device, non_blocking=True)
            last = i == len(group) - 1
            no_sync = self.module.no_sync() if isinstance(self.module, DistributedDataParallel) and not last else None
            with no_sync or contextlib.nullcontext():
                with autocast_context(self.device, self.precision):
                    losses, _ = self.forward(batch)
                total = weighted_loss(losses, weight_dict)
                self.scaler.scale(total / len(group)).backward()
            for name, value in {**losses, "loss": total}.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float() / len(group)
        self.scaler.unscale_(self.optimizer)
        params = [p for group_ in self.optimizer.param_groups for p in group_["params"]]
        max_norm = self.config.train.grad_clip if self.config.train.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm).item()
        reduced = {k: v.item() for k, v in distributed.reduce_dict(sums).items()}
        finite = math.isfinite(reduced["loss"]) and (math.isfinite(grad_norm) or self.scaler.is_enabled())
        if finite:
            self.scaler.step(self.optimizer)  # skips the update itself when fp16 gradients overflowed
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        self.batch_in_epoch += len(group)
        return reduced, grad_norm, finite

    def _handle_bad_step(self, losses: dict[str, float], grad_norm: float) -> None:
        self.bad_steps += 1
        limit = self.config.train.max_bad_steps
        values = ", ".join(f"{k}={v:.4g}" for k, v in sorted(losses.items()))
        logger.warning(
            f"step {self.step}: non-finite loss or gradient (grad norm {grad_norm:.4g}; {values}); update skipped "
            f"({self.bad_steps} in a row, limit {limit})"
        )
        self.metrics.log("bad_step", self.step, {**losses, "grad_norm": grad_norm}, consecutive=self.bad_steps)
        reset = getattr(self.objective.model, "reset_memory", None)
        if callable(reset):
            reset()  # streaming memory may hold non-finite values now
        if self.bad_steps >= limit:
            raise NonFiniteLossError(
                f"training stopped at step {self.step} (epoch {self.epoch}): {self.bad_steps} consecutive steps had "
                f"a non-finite loss or gradient (train.max_bad_steps={limit}). Last losses: {values}; grad norm "
                f"{grad_norm:.4g}. Try a lower train.lr, train.precision=bf16 or fp32, and `ftkd check-data` on "
                f"the training split. The last good state is {self.out_dir / 'checkpoints' / 'last.pt'}."
            )

    def fit(self) -> dict[str, Any]:
        """Train to the end of the schedule (or `train.max_steps`); returns the final metrics ({} if none)."""
        train = self.config.train
        total = self.schedule.total_steps
        stop_at = min(total, train.max_steps) if train.max_steps else total
        if self.is_main:
            header = {"kind": "header", **self.environment, "schedule": self.schedule.describe()}
            self.metrics.write({**header, "config": to_dict(self.config)})
            logger.info(
                f"run {self.config.name} -> {self.out_dir}; git {self.environment['git_sha']}, torch "
                f"{self.environment['torch']}, CUDA {self.environment['cuda']}, {self.environment['device_name']}"
            )
            logger.info(f"schedule: {self.schedule.describe()}; precision {self.precision}")
        eval_every = 0  # steps between evaluations during training (0: only the final one)
        if train.eval_every_epochs > 0:
            eval_every = max(1, round(train.eval_every_epochs * self.schedule.steps_per_epoch))
        bar = ProgressBar(stop_at, self.step, enabled=self.is_main and train.progress_bar)
        window: dict[str, float] = {}
        window_steps = 0  # finite steps (averaged in the log line)
        window_all = 0  # all steps (timed)
        window_start = time.perf_counter()
        data_time = 0.0
        step_time_ema = math.nan
        groups = self._groups()
        try:
            while self.step < stop_at:
                fetch_start = time.perf_counter()
                group = next(groups)
                step_start = time.perf_counter()
                data_time += step_start - fetch_start
                losses, grad_norm, finite = self._train_step(group)
                elapsed = time.perf_counter() - fetch_start
                step_time_ema = elapsed if math.isnan(step_time_ema) else 0.9 * step_time_ema + 0.1 * elapsed
                if finite:
                    self.bad_steps = 0
                    for name, value in losses.items():
                        window[name] = window.get(name, 0.0) + value
                    window["grad_norm"] = window.get("grad_norm", 0.0) + grad_norm
                    window_steps += 1
                else:
                    self._handle_bad_step(losses, grad_norm)
                window_all += 1
                eta = (stop_at - self.step) * step_time_ema
                bar.update({"loss": f"{losses['loss']:.4f}", "lr": f"{self.schedule.lr(self.step - 1):.2e}"})
                if self.step % train.log_every == 0 or self.step == stop_at:
                    seconds = time.perf_counter() - window_start
                    self._log_train(window, window_steps, window_all, seconds, data_time, eta)
                    window, window_steps, window_all, data_time = {}, 0, 0, 0.0
                    window_start = time.perf_counter()
                if self.step % train.checkpoint_every == 0 and self.step < stop_at:
                    self.save()
                if eval_every and self.step % eval_every == 0 and self.step < total:
                    self.evaluate(f"step{self.step}")
        finally:
            bar.close()
        self.save()
        metrics: dict[str, Any] = {}
        if self.step >= total:
            self.save_final()
            if train.final_eval:
                metrics = self.evaluate("final")
                if self.is_main:
                    (self.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        self.metrics.close()
        return metrics

    def _log_train(
        self, window: dict[str, float], steps: int, all_steps: int, seconds: float, data_time: float, eta: float
    ) -> None:
        """One log line / JSON line / TensorBoard point: losses averaged over the finite steps of the window."""
        if not self.is_main:
            return
        values = {name: value / steps for name, value in window.items()} if steps else {}
        values["lr"] = self.schedule.lr(self.step - 1)  # the rate the last step used
        values["ms_per_step"] = 1000.0 * seconds / max(1, all_steps)
        values["data_ms_per_step"] = 1000.0 * data_time / max(1, all_steps)
        values["samples_per_s"] = self.plan.global_batch * all_steps / max(seconds, 1e-9)
        values["epoch"] = self.step / self.schedule.steps_per_epoch
        if self.scaler.is_enabled():
            values["loss_scale"] = self.scaler.get_scale()
        memory = ""
        if self.device.type == "cuda":
            values["max_memory_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
            memory = f", {values['max_memory_gb']:.1f} GB"
        self.metrics.log("train", self.step, values, eta_s=eta)
        loss = values.get("loss", math.nan)
        logger.info(
            f"step {self.step}/{self.schedule.total_steps} (epoch {values['epoch']:.2f}) loss {loss:.4f} "
            f"lr {values['lr']:.3g} grad {values.get('grad_norm', math.nan):.3g}, {values['ms_per_step']:.0f} ms/step "
            f"(data {values['data_ms_per_step']:.0f} ms){memory}, eta {format_duration(eta)}"
        )

    # --------------------------------------------------------------------------------------------- evaluation
    def evaluate(self, tag: str) -> dict[str, Any]:
        """Predict on `data.val_split` (`<out_dir>/results_<tag>.json`), run the official metric into
        `<out_dir>/results_<tag>/` and log it; returns the metrics on every process (RNG and memory untouched)."""
        data = self.config.data
        if self.val_loader is None:
            from ftkd.data.loader import build_dataloader

            self.val_loader = build_dataloader(
                data, data.val_split, train=False, sequential=self.sequential, seed=self.config.train.seed
            )
        metrics = predict_and_evaluate(
            self.objective.model, self.val_loader, self.device, self.precision, data, self.out_dir / f"results_{tag}"
        )
        if self.is_main:
            scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.metrics.log("eval", self.step, scalars, tag=tag)
            logger.info(f"eval {tag} (step {self.step}): " + ", ".join(f"{k} {v:.4f}" for k, v in scalars.items()))
        return metrics
