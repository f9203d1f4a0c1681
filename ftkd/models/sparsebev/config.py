"""SparseBEV configuration (defaults: the official r50_nuimg_704x256 recipe)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ftkd.models.common.config import BackboneConfig


@dataclass(frozen=True)
class SparseBEVConfig:
    arch: str = "sparsebev"
    offline: bool = False  # an offline teacher consumes future frames; an online student must never see them
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    num_classes: int = 10
    embed_dims: int = 256
    num_queries: int = 900  # a perfect square: queries start on a sqrt(Q) x sqrt(Q) BEV grid
    num_layers: int = 6  # decoder layers (weights shared across layers)
    num_frames: int = 8  # frames the decoder samples: current + past (+ future when offline), e.g. 8 or 15
    num_heads: int = 8
    ffn_dims: int = 512
    dropout: float = 0.1
    num_groups: int = 4  # adaptive-mixing groups (C / G channels each)
    num_points: int = 4  # sampling points per group per frame
    num_levels: int = 4
    out_points: int = 128  # adaptive-mixing output points
    point_cloud_range: tuple[float, float, float, float, float, float] = (-51.2, -51.2, -3.0, 51.2, 51.2, 5.0)
    # Query denoising
    dn_groups: int = 10
    dn_box_noise: float = 0.5
    dn_label_noise: float = 0.5
    # Losses and matching (official code weights)
    loss_cls_weight: float = 2.0
    loss_bbox_weight: float = 0.25
    code_weights: tuple[float, ...] = (2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    # Decoding
    max_detections: int = 300
    score_threshold: float = 0.05
    grid_mask: bool = True  # GridMask (ratio 0.5, prob 0.7) in training
    stop_past_grad: bool = False  # run the backbone on past frames without autograd (saves memory/time)
    decoder_checkpoint: bool = False  # gradient checkpointing of SASA, sampling and mixing (official: on)
