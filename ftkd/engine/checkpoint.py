"""Checkpoints: written atomically, read with `torch.load(weights_only=True)`.

A checkpoint is a dict of tensors and primitive containers only (no pickled classes), so loading one never runs
code from the file. Keys:
    format              "ftkd-checkpoint-v1"
    config              the resolved ExperimentConfig as a JSON string
    model               state_dict of the detector (what is evaluated and exported)
    objective_extra     trainable state outside the detector (e.g. distillation generators)
    optimizer, scheduler, scaler
    progress            {"step", "epoch", "batch_in_epoch", "bad_steps"}: optimiser steps done and the position
                        of the training loader (micro-batches of the current epoch already consumed)
    rank_states         one entry per process: {"rng": ..., "memory": model.memory_state_dict() or None}
    meta                {"git_sha", "torch", "time", "world_size"}
Only "format", "config" and "model" are needed to run a model (`load_model`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ftkd.config import ExperimentConfig
from ftkd.utils.configuration import ConfigError, dumps, from_dict

FORMAT = "ftkd-checkpoint-v1"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write `state` to `path` atomically: a temporary file in the same folder, fsync, then os.replace.

    A reader (or a resumed run after a crash) sees either the old file or the complete new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            torch.save({"format": FORMAT, **state}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`; errors name the file and what was expected."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise ValueError(f"checkpoint {path}: cannot be read with weights_only=True ({err})") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"checkpoint {path}: expected format {FORMAT!r}, got {found!r}")
    for key in ("config", "model"):
        if key not in state:
            raise ValueError(f"checkpoint {path}: missing key {key!r}")
    return state


def to_device(value: Any, device: str | torch.device) -> Any:
    """Tensors of a nested dict/list/tuple moved to `device` (e.g. streaming memory to the CPU for saving)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    return value


def config_to_json(config: ExperimentConfig) -> str:
    return dumps(config)


def config_from_checkpoint(state: dict[str, Any], where: str = "checkpoint") -> ExperimentConfig:
    """The ExperimentConfig stored in a checkpoint dict."""
    try:
        return from_dict(ExperimentConfig, json.loads(state["config"]), f"{where}:config")
    except (json.JSONDecodeError, ConfigError) as err:
        raise ValueError(f"{where}: the stored config does not fit this version of ftkd: {err}") from err


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ExperimentConfig]:
    """The detector of a checkpoint, in eval mode on `device`, and its config.

    The backbone's `pretrained` path is cleared before building (the checkpoint holds all weights), so a
    checkpoint runs on a machine that lacks the original pretrained file. Streaming memory starts empty.
    """
    from ftkd.models.build import build_model

    state = load_checkpoint(checkpoint)
    config = config_from_checkpoint(state, str(checkpoint))
    model_config = config.model
    model_config = dataclasses.replace(model_config, backbone=dataclasses.replace(model_config.backbone, pretrained=""))
    model = build_model(model_config)
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {checkpoint}: weights do not fit a {type(model).__name__} built from its config: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    return model.to(device).eval(), config
