"""StreamPETR configuration (defaults: the official R50 704x256 streaming recipe)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ftkd.models.common.config import BackboneConfig


def _streampetr_backbone() -> BackboneConfig:
    # The official recipe feeds only C4/C5 to its FPN and decodes the stride-16 level; nothing is frozen but the
    # BatchNorm statistics.
    return BackboneConfig(frozen_stages=0, out_levels=(2, 3))


@dataclass(frozen=True)
class StreamPETRConfig:
    arch: str = "streampetr"
    backbone: BackboneConfig = field(default_factory=_streampetr_backbone)
    freeze_norm_affine: bool = True  # official: backbone BatchNorm scale/shift are not trained either
    num_classes: int = 10
    embed_dims: int = 256
    num_queries: int = 644  # learned queries; + num_propagated memory queries = 900
    num_propagated: int = 256  # top-k confident queries pushed to memory per frame, propagated as queries next frame
    memory_len: int = 1024  # memory queue length (4 past frames x 256)
    num_layers: int = 6
    num_heads: int = 8
    ffn_dims: int = 2048
    dropout: float = 0.1
    depth_bins: int = 64
    depth_range: tuple[float, float] = (1.0, 61.2)  # first bin and far limit (metres) of the linear-increasing bins
    feature_level: int = 2  # backbone level decoded (0..3 = C2..C5; 2 = stride 16); must be in backbone.out_levels
    point_cloud_range: tuple[float, float, float, float, float, float] = (-51.2, -51.2, -3.0, 51.2, 51.2, 5.0)
    # 3-D position embedding range (reference frame, metres): the official (-61.2, -61.2, -10, 61.2, 61.2, 10) in the
    # LiDAR frame, shifted up by the LiDAR's ~1.8 m mounting height since our reference frame is the ego frame.
    position_range: tuple[float, float, float, float, float, float] = (-61.2, -61.2, -8.0, 61.2, 61.2, 12.0)
    # > 0: add -d / sigma to the cross-attention logits, d the distance (metres) from a query's reference point to
    # a token's viewing ray (ftkd/models/streampetr/position_embedding.py `ray_distance_bias`). Not in the official
    # recipe (0 = off): a geometric prior for from-scratch training, where the learned 3-D position embedding alone
    # leaves the cross-attention almost the same for every query and the model ignores the images.
    ray_bias_sigma: float = 0.0
    with_ego_motion: bool = True  # motion-aware layer norm on memory/query features and positions
    dn_groups: int = 10
    dn_box_noise: float = 1.0
    dn_split: float = 0.75  # DN queries whose uniform noise vector has L2 norm > split are labelled background
    dn_weight: float = 1.0
    loss_cls_weight: float = 2.0
    loss_bbox_weight: float = 0.25
    # Weight of the dense auxiliary heatmap loss on the image tokens (projected 3-D centres, training only; see
    # ftkd/models/streampetr/heatmap.py). 0 = off, as the official recipe without its 2-D focal head.
    heatmap_weight: float = 0.0
    code_weights: tuple[float, ...] = (2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    max_detections: int = 300
    # Detections whose centre lies outside this range are dropped (official post_center_range, ego frame).
    post_center_range: tuple[float, float, float, float, float, float] = (-61.2, -61.2, -8.0, 61.2, 61.2, 12.0)
    score_threshold: float = 0.0
    grid_mask: bool = True
    with_checkpoint: bool = False  # gradient checkpointing of the decoder layers (saves memory in training)
