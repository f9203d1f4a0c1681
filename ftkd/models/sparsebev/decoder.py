"""The SparseBEV decoder: one decoder layer whose weights are shared by all num_layers applications.

One layer: position encoding of the box centre added to the query feature, SASA self-attention, adaptive
spatio-temporal sampling, adaptive mixing, FFN (each followed by LayerNorm, residuals inside), then the class and
box heads. The box head refines the centre residually in inverse-sigmoid space and predicts size, yaw and velocity
absolutely; the velocity head predicts a displacement per frame gap, turned into m/s by dividing by the time gap
of frame 1. The refined box (detached) is the next layer's query box.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ftkd.models.sparsebev.mixing import AdaptiveMixing
from ftkd.models.sparsebev.query import to_boxes
from ftkd.models.sparsebev.sampling import SpatioTemporalSampling
from ftkd.models.sparsebev.sasa import ScaleAdaptiveSelfAttention


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    x = x.clamp(0.0, 1.0)
    return torch.log(x.clamp(min=eps) / (1.0 - x).clamp(min=eps))


def velocity_time_scale(time_offsets: Tensor) -> Tensor:
    """[B, T] -> [B] seconds that turn the velocity head's per-frame-gap displacement into m/s.

    |dt| of frame 1 (the first past frame; for a single-frame model 1); gaps under 1e-5 s (a padded frame that
    repeats the current one) count as 1, as the official code.
    """
    if time_offsets.shape[1] < 2:
        return time_offsets.new_ones(time_offsets.shape[0])
    gap = time_offsets[:, 1].float().abs()
    return torch.where(gap < 1e-5, torch.ones_like(gap), gap)


class SparseBEVDecoderLayer(nn.Module):
    def __init__(
        self,
        embed_dims: int,
        num_heads: int,
        ffn_dims: int,
        dropout: float,
        num_frames: int,
        num_groups: int,
        num_points: int,
        num_levels: int,
        out_points: int,
        num_classes: int,
        point_cloud_range: Sequence[float],
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        self.point_cloud_range = tuple(point_cloud_range)
        self.use_checkpoint = use_checkpoint
        self.position_encoder = nn.Sequential(
            nn.Linear(3, embed_dims), nn.LayerNorm(embed_dims), nn.ReLU(inplace=True),
            nn.Linear(embed_dims, embed_dims), nn.LayerNorm(embed_dims), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.self_attn = ScaleAdaptiveSelfAttention(embed_dims, num_heads, dropout)
        self.sampling = SpatioTemporalSampling(embed_dims, num_groups, num_points, num_levels)
        self.mixing = AdaptiveMixing(embed_dims, num_points * num_frames, num_groups, out_points)
        self.ffn = nn.Sequential(
            nn.Linear(embed_dims, ffn_dims), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(ffn_dims, embed_dims), nn.Dropout(dropout),
        )  # fmt: skip
        self.norm1 = nn.LayerNorm(embed_dims)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.norm3 = nn.LayerNorm(embed_dims)
        cls_layers: list[nn.Module] = []
        reg_layers: list[nn.Module] = []
        for _ in range(2):
            cls_layers += [nn.Linear(embed_dims, embed_dims), nn.LayerNorm(embed_dims), nn.ReLU(inplace=True)]
            reg_layers += [nn.Linear(embed_dims, embed_dims), nn.ReLU(inplace=True)]
        self.cls_branch = nn.Sequential(*cls_layers, nn.Linear(embed_dims, num_classes))
        self.reg_branch = nn.Sequential(*reg_layers, nn.Linear(embed_dims, 10))
        nn.init.constant_(self.cls_branch[-1].bias, -math.log((1 - 0.01) / 0.01))  # prior probability 0.01

    def _maybe_checkpoint(self, function, *args):
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(function, *args, use_reentrant=False)
        return function(*args)

    def forward(
        self,
        query_boxes: Tensor,
        query_feat: Tensor,
        features: list[Tensor],
        lidar2img: Tensor,
        time_offsets: Tensor,
        image_size: tuple[int, int],
        block_mask: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """query_boxes: [B, Q, 10] internal layout (no grad); query_feat: [B, Q, C].

        Returns (query_feat [B, Q, C], logits [B, Q, K], refined query boxes [B, Q, 10] internal layout, fp32).
        """
        boxes = to_boxes(query_boxes, self.point_cloud_range)  # [B, Q, 9] metres, m/s
        query_feat = query_feat + self.position_encoder(query_boxes[..., 0:3].to(query_feat.dtype))
        query_feat = self.norm1(self._maybe_checkpoint(self.self_attn, boxes[..., 0:2], query_feat, block_mask))
        sampled = self._maybe_checkpoint(
            self.sampling, boxes, query_feat, features, lidar2img, time_offsets, image_size
        )
        query_feat = self.norm2(self._maybe_checkpoint(self.mixing, sampled, query_feat))
        query_feat = self.norm3(query_feat + self.ffn(query_feat))
        logits = self.cls_branch(query_feat)
        delta = self.reg_branch(query_feat).float()
        xyz = (delta[..., 0:3] + inverse_sigmoid(query_boxes[..., 0:3].float())).sigmoid()
        velocity = delta[..., 8:10] / velocity_time_scale(time_offsets)[:, None, None]
        refined = torch.cat([xyz, delta[..., 3:8], velocity], dim=-1)
        return query_feat, logits, refined


class SparseBEVDecoder(nn.Module):
    """Applies one shared `SparseBEVDecoderLayer` num_layers times, detaching the box between layers."""

    def __init__(self, layer: SparseBEVDecoderLayer, num_layers: int) -> None:
        super().__init__()
        self.layer = layer
        self.num_layers = num_layers

    def forward(
        self,
        query_boxes: Tensor,
        query_feat: Tensor,
        features: list[Tensor],
        lidar2img: Tensor,
        time_offsets: Tensor,
        image_size: tuple[int, int],
        block_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Returns logits [L, B, Q, K], query boxes [L, B, Q, 10] (internal layout) and the last query_feat."""
        all_logits, all_boxes = [], []
        for _ in range(self.num_layers):
            query_feat, logits, refined = self.layer(
                query_boxes, query_feat, features, lidar2img, time_offsets, image_size, block_mask
            )
            all_logits.append(logits)
            all_boxes.append(refined)
            query_boxes = refined.detach()
        return torch.stack(all_logits), torch.stack(all_boxes), query_feat
