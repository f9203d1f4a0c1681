"""StreamPETR configuration (defaults: the official R50 704x256 streaming recipe)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ftkd.models.common.config import BackboneConfig


@dataclass(frozen=True)
class StreamPETRConfig:
    arch: str = "streampetr"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    num_classes: int = 10
    embed_dims: int = 256
    num_queries: int = 644  # learned queries; + num_propagated memory queries = 900
    num_propagated: int = 256
    memory_len: int = 1024  # memory queue length (4 past frames x 256)
    num_layers: int = 6
    num_heads: int = 8
    ffn_dims: int = 2048
    dropout: float = 0.1
    depth_bins: int = 64
    depth_range: tuple[float, float] = (1.0, 61.2)
    feature_level: int = 2  # FPN level used by the decoder (stride 16)
    point_cloud_range: tuple[float, float, float, float, float, float] = (-51.2, -51.2, -3.0, 51.2, 51.2, 5.0)
    dn_groups: int = 10
    dn_box_noise: float = 1.0
    dn_split: float = 0.75
    loss_cls_weight: float = 2.0
    loss_bbox_weight: float = 0.25
    code_weights: tuple[float, ...] = (2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    max_detections: int = 300
    score_threshold: float = 0.0
    grid_mask: bool = True
