"""Build a detector from its config (the one place that knows every architecture)."""

from __future__ import annotations

from torch import nn

from ftkd.models.sparsebev.config import SparseBEVConfig
from ftkd.models.streampetr.config import StreamPETRConfig


def build_model(config: SparseBEVConfig | StreamPETRConfig) -> nn.Module:
    """A SparseBEV or StreamPETR detector (randomly initialised, or with `backbone.pretrained` loaded)."""
    if isinstance(config, SparseBEVConfig):
        from ftkd.models.sparsebev.model import SparseBEV

        return SparseBEV(config)
    if isinstance(config, StreamPETRConfig):
        from ftkd.models.streampetr.model import StreamPETR

        return StreamPETR(config)
    raise TypeError(f"expected SparseBEVConfig or StreamPETRConfig, got {type(config).__name__}")
