"""The experiment config: one YAML file under configs/ loaded into these dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ftkd.data.config import DataConfig
from ftkd.distill.config import DistillConfig
from ftkd.engine.config import TrainConfig
from ftkd.models.sparsebev.config import SparseBEVConfig
from ftkd.models.streampetr.config import StreamPETRConfig
from ftkd.utils.configuration import apply_overrides, from_dict, load_yaml

ModelConfig = SparseBEVConfig | StreamPETRConfig


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=SparseBEVConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load an experiment YAML (or the defaults if `path` is None) and apply dotted `key=value` overrides."""
    data = load_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    where = str(path) if path is not None else "config"
    return from_dict(ExperimentConfig, data, where)
