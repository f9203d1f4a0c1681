"""Inference: run a detector over a split, gather the detections of all processes, write a results JSON."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from ftkd.data.config import DataConfig
from ftkd.engine import distributed
from ftkd.structures import Batch, Detections, SampleMeta

logger = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

# (train, val) split names that go with a dataset version when only `--version` is given on a command line.
DEFAULT_SPLITS: dict[str, tuple[str, str]] = {
    "v1.0-trainval": ("train", "val"),
    "v1.0-mini": ("mini_train", "mini_val"),
    "v1.0-synth": ("synth_train", "synth_val"),
}


def default_splits(version: str) -> tuple[str, str] | None:
    """(train, val) split names for a dataset version: the devkit's for real nuScenes, `<X>_train`/`<X>_val` for
    `v1.0-<X>` datasets written by `ftkd synth` or `ftkd convert`; None for other version names."""
    if version in DEFAULT_SPLITS:
        return DEFAULT_SPLITS[version]
    if version.startswith("v1.0-") and len(version) > len("v1.0-"):
        suffix = version[len("v1.0-"):]
        return f"{suffix}_train", f"{suffix}_val"
    return None


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The one autocast context of a run: none for fp32, torch.autocast(bf16/fp16) otherwise.

    fp32 on CUDA uses TF32 matmuls (set by the trainer / `predict_checkpoint`), as nanoGPT does.
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in DTYPES:
        raise ValueError(f"precision: expected 'fp32', 'bf16' or 'fp16', got {precision!r}")
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def _reset_memory(model: nn.Module) -> None:
    reset = getattr(model, "reset_memory", None)
    if callable(reset):
        reset()


@torch.no_grad()
def predict(
    model: nn.Module, loader: Iterable[Batch], device: torch.device, precision: str = "fp32"
) -> list[tuple[SampleMeta, Detections]]:
    """Detections (reference frame, on the CPU) of every sample the loader yields, over all processes.

    Each process runs its shard; process 0 returns every sample once (duplicates from padded shards removed),
    in the dataset's order when the dataset has `sample_tokens`, else sorted by token; other processes return [].
    A streaming model's memory is reset first; the model is left in eval mode.
    """
    model.eval()
    _reset_memory(model)
    local: list[tuple[SampleMeta, Detections]] = []
    for batch in loader:
        batch = batch.to(device, non_blocking=True)
        with autocast_context(device, precision):
            output = model(batch)
            detections = model.postprocess(output)
        if len(detections) != batch.batch_size:
            raise ValueError(f"postprocess returned {len(detections)} Detections for a batch of {batch.batch_size}")
        local.extend((meta, det.cpu()) for meta, det in zip(batch.meta, detections))
    gathered = distributed.gather_object(local)
    if gathered is None:
        return []
    unique: dict[str, tuple[SampleMeta, Detections]] = {}
    for part in gathered:
        for meta, det in part:
            unique.setdefault(meta.sample_token, (meta, det))
    order = getattr(getattr(loader, "dataset", None), "sample_tokens", None)
    if order is not None:
        rank = {token: i for i, token in enumerate(order)}
        return sorted(unique.values(), key=lambda pair: rank.get(pair[0].sample_token, len(rank)))
    return [unique[token] for token in sorted(unique)]


def predict_and_evaluate(
    model: nn.Module, loader: Iterable[Batch], device: torch.device, precision: str, data: DataConfig, out_dir: Path
) -> dict:
    """`predict`, then on process 0 write `<out_dir>.json` (every token of the split) and run the official metric
    into `<out_dir>/`; returns the metrics (plain JSON types) on every process.

    The global RNG (dropout, GridMask draws) and a streaming model's memory are left as they were, so a training
    run that evaluates continues exactly as one that does not.
    """
    from ftkd.data.results import write_results
    from ftkd.engine.evaluation import evaluate

    has_memory = callable(getattr(model, "memory_state_dict", None))
    memory = model.memory_state_dict() if has_memory else None
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        predictions = predict(model, loader, device, precision)
    if has_memory:
        model.load_memory_state_dict(memory)
    metrics: dict = {}
    if distributed.is_main_process():
        results = out_dir.with_suffix(".json")
        write_results(predictions, results, sample_tokens=list(loader.dataset.sample_tokens))
        metrics = evaluate(results, data.dataroot, data.version, data.val_split, out_dir)
        metrics = json.loads(json.dumps(metrics))  # plain types: written to metrics.json and sent to every process
    return distributed.broadcast_object(metrics)


def predict_checkpoint(
    checkpoint: str,
    dataroot: str | None,
    version: str | None,
    split: str | None,
    out_path: str,
    device: str = "auto",
) -> Path:
    """Run a checkpoint on a split and write the nuScenes results JSON; returns its path.

    `dataroot`, `version` and `split` default to the checkpoint's data config (split: its val_split, or the val split
    of DEFAULT_SPLITS when `version` is given). Works under torchrun too (each process predicts a shard; process 0
    writes the file).
    """
    import dataclasses

    from ftkd.data.loader import build_dataloader
    from ftkd.data.results import write_results
    from ftkd.engine.checkpoint import load_model

    torch_device = distributed.init_distributed(device)
    if torch_device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model, config = load_model(checkpoint, torch_device)
    data_config = config.data
    if dataroot is not None:
        data_config = dataclasses.replace(data_config, dataroot=dataroot)
    if version is not None:
        data_config = dataclasses.replace(data_config, version=version)
        if split is None and default_splits(version) is not None:
            split = default_splits(version)[1]
    split = split or data_config.val_split
    sequential = config.model.arch == "streampetr"
    loader = build_dataloader(data_config, split, train=False, sequential=sequential, seed=config.train.seed)
    precision = config.train.precision if torch_device.type == "cuda" else "fp32"
    logger.info(f"predicting {checkpoint} on {data_config.dataroot} {data_config.version} {split} ({precision})")
    predictions = predict(model, loader, torch_device, precision)
    out = Path(out_path)
    if distributed.is_main_process():
        write_results(predictions, out, sample_tokens=list(loader.dataset.sample_tokens))
        logger.info(f"wrote {len(predictions)} samples of detections to {out}")
    distributed.barrier()
    return out
