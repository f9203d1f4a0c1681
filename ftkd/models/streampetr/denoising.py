"""StreamPETR's query-denoising rule: noisy ground-truth centres as extra queries, far-noised ones as negatives.

The ground truth is laid out in G groups of M padded slots by the shared `group_targets`. A denoising query's
reference point is its box centre moved by U(-1, 1) * (size / 2) * noise_scale per axis (x by the box length,
y by its width, z by its height, axis-aligned as the official code does with mmdet3d's (l, w, h) dims),
normalised to the point-cloud range and clamped to [0, 1]. If the uniform noise vector's L2 norm exceeds `split`
the query must predict background; its box target stays the true box (the official DN regression loss covers
negatives too). Denoising queries carry only a position (zero content, like the learned queries).
Attention: matching and propagated queries never see denoising queries; groups do not see each other;
denoising queries see all other queries and the memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ftkd.models.common.denoising import denoising_attention_mask, group_targets
from ftkd.structures.boxes import encode_boxes


@dataclass
class DenoisingQueries:
    """Denoising queries of one batch (D = groups x max boxes per sample), placed before the matching queries."""

    reference_points: Tensor  # [B, D, 3] normalised to the point-cloud range (0 in padded slots)
    target_labels: Tensor  # [B, D] int64, num_classes = background
    target_boxes: Tensor  # [B, D, 10] code layout, the un-noised boxes
    valid: Tensor  # [B, D] bool, False for padding
    num_groups: int
    group_size: int  # M

    @property
    def num_queries(self) -> int:
        return self.reference_points.shape[1]


def make_denoising_queries(
    gt_boxes: list[Tensor],
    gt_labels: list[Tensor],
    num_groups: int,
    box_noise: float,
    split: float,
    num_classes: int,
    point_cloud_range: Tensor,
) -> DenoisingQueries | None:
    """Noisy copies of the ground truth (reference-frame boxes [M_b, 9]); None if there is nothing to denoise."""
    if num_groups == 0 or max((len(b) for b in gt_boxes), default=0) == 0:
        return None
    targets = group_targets(gt_boxes, gt_labels, num_groups)
    boxes = targets.boxes  # [B, D, 9]
    low, high = point_cloud_range[:3].to(boxes), point_cloud_range[3:].to(boxes)
    noise = torch.rand(boxes.shape[:2] + (3,), device=boxes.device) * 2 - 1  # [B, D, 3] in U(-1, 1)
    half_size = boxes[..., [4, 3, 5]] / 2  # (l, w, h) / 2 along (x, y, z)
    centre = boxes[..., :3] + noise * half_size * box_noise
    reference_points = ((centre - low) / (high - low)).clamp(0, 1) * targets.valid[..., None]
    negative = ~targets.valid
    if box_noise > 0:
        negative = negative | (noise.norm(dim=-1) > split)
    labels = torch.where(negative, torch.full_like(targets.labels, num_classes), targets.labels)
    return DenoisingQueries(
        reference_points=reference_points,
        target_labels=labels,
        target_boxes=encode_boxes(boxes),
        valid=targets.valid,
        num_groups=num_groups,
        group_size=targets.group_size,
    )


def temporal_attention_mask(dn: DenoisingQueries, num_queries: int, num_memory_keys: int) -> Tensor:
    """[D + Q, D + Q + S] bool for `scaled_dot_product_attention`: True where attention is *allowed*.

    Rows: the D denoising then the Q matching (learned + propagated) queries; columns: the same queries, then the
    S memory entries that serve only as keys (everyone may attend to them).
    """
    blocked = denoising_attention_mask(dn.num_groups, dn.group_size, num_queries, dn.reference_points.device)
    memory_keys = torch.zeros(blocked.shape[0], num_memory_keys, dtype=torch.bool, device=blocked.device)
    return ~torch.cat([blocked, memory_keys], dim=1)
