"""SparseBEV pillar queries and their query-denoising counterparts.

Internal query box layout [..., 10] (the decoder's state): x^, y^, z^ in [0, 1] (the centre normalised by the
point cloud range), log w, log l, log h, sin yaw, cos yaw, vx, vy (m/s). `to_codes` converts it to the
ftkd code layout (x, y, z in metres).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ftkd.models.common.denoising import DenoisingTargets, denoising_attention_mask, group_targets
from ftkd.structures.boxes import encode_boxes


def normalize_xyz(xyz: Tensor, point_cloud_range: Sequence[float]) -> Tensor:
    """[..., 3] metres -> [0, 1] over the point cloud range (Python scalars: no host-to-device copy)."""
    low, high = point_cloud_range[:3], point_cloud_range[3:]
    return torch.stack([(xyz[..., i] - low[i]) / (high[i] - low[i]) for i in range(3)], dim=-1)


def denormalize_xyz(xyz: Tensor, point_cloud_range: Sequence[float]) -> Tensor:
    """[..., 3] in [0, 1] -> metres."""
    low, high = point_cloud_range[:3], point_cloud_range[3:]
    return torch.stack([xyz[..., i] * (high[i] - low[i]) + low[i] for i in range(3)], dim=-1)


def to_codes(query_boxes: Tensor, point_cloud_range: Sequence[float]) -> Tensor:
    """Internal [..., 10] query boxes -> ftkd codes [..., 10] (centre in metres), fp32."""
    query_boxes = query_boxes.float()
    return torch.cat([denormalize_xyz(query_boxes[..., 0:3], point_cloud_range), query_boxes[..., 3:10]], dim=-1)


def to_boxes(query_boxes: Tensor, point_cloud_range: Sequence[float]) -> Tensor:
    """Internal [..., 10] query boxes -> [..., 9] boxes (metres, yaw = atan2(sin, cos)), fp32."""
    codes = to_codes(query_boxes, point_cloud_range)
    yaw = torch.atan2(codes[..., 6:7], codes[..., 7:8])
    return torch.cat([codes[..., 0:3], codes[..., 3:6].exp(), yaw, codes[..., 8:10]], dim=-1)


class PillarQueries(nn.Module):
    """Learned pillar queries on a BEV grid, plus noised ground-truth queries (DN) in training.

    Initial boxes: (x^, y^) on a regular sqrt(Q) x sqrt(Q) grid, z^ = 0, log h = 1.5 (4.5 m tall pillars),
    velocity 0, log w, log l, sin, cos ~ N(0, 1) (learnable, as the official code). Every matching query starts
    with the same feature: the "no object" label embedding + indicator 0; a denoising query gets the embedding of
    its (possibly flipped) label + indicator 1.
    """

    def __init__(
        self,
        num_queries: int,
        embed_dims: int,
        num_classes: int,
        point_cloud_range: Sequence[float],
        dn_groups: int = 10,
        dn_box_noise: float = 0.5,
        dn_label_noise: float = 0.5,
    ) -> None:
        super().__init__()
        grid = int(round(math.sqrt(num_queries)))
        if grid * grid != num_queries:
            raise ValueError(f"num_queries must be a perfect square (queries start on a BEV grid), got {num_queries}")
        self.num_queries = num_queries
        self.num_classes = num_classes
        self.point_cloud_range = tuple(point_cloud_range)
        self.dn_groups = dn_groups
        self.dn_box_noise = dn_box_noise
        self.dn_label_noise = dn_label_noise
        self.init_query_bbox = nn.Embedding(num_queries, 10)
        self.label_enc = nn.Embedding(num_classes + 1, embed_dims - 1)  # index num_classes = "no object"
        with torch.no_grad():
            cells = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid
            xx, yy = torch.meshgrid(cells, cells, indexing="ij")
            self.init_query_bbox.weight[:, 0:2] = torch.stack([xx, yy], dim=-1).reshape(-1, 2)  # [g, g, 2] -> [Q, 2]
            self.init_query_bbox.weight[:, 2] = 0.0
            self.init_query_bbox.weight[:, 5] = 1.5
            self.init_query_bbox.weight[:, 8:10] = 0.0

    def _feature(self, labels: Tensor, indicator: float) -> Tensor:
        embedding = self.label_enc(labels)
        return torch.cat([embedding, embedding.new_full((*embedding.shape[:-1], 1), indicator)], dim=-1)

    def forward(
        self, batch_size: int, gt_boxes: list[Tensor] | None = None, gt_labels: list[Tensor] | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None, DenoisingTargets | None]:
        """Queries for a batch: denoising queries first (only when ground truth is given and dn_groups > 0).

        Returns:
            query_boxes [B, D+Q, 10] internal layout, query_feat [B, D+Q, C], attention block mask [D+Q, D+Q]
            (True = blocked) or None, and the denoising targets (D = groups x max GT count) or None.
        """
        device = self.init_query_bbox.weight.device
        boxes = self.init_query_bbox.weight[None].expand(batch_size, -1, -1)  # [Q, 10] -> [B, Q, 10]
        no_object = torch.full((batch_size, self.num_queries), self.num_classes, dtype=torch.int64, device=device)
        feat = self._feature(no_object, 0.0)
        if gt_boxes is None or self.dn_groups == 0 or max((len(b) for b in gt_boxes), default=0) == 0:
            return boxes, feat, None, None
        targets = group_targets([b.to(device) for b in gt_boxes], [lab.to(device) for lab in gt_labels], self.dn_groups)
        noisy = targets.boxes.clone()  # [B, D, 9]
        if self.dn_box_noise > 0:
            noise = torch.rand_like(noisy[..., 0:3]) * 2.0 - 1.0  # U(-1, 1)
            noisy[..., 0:3] += noise * noisy[..., 3:6] / 2.0 * self.dn_box_noise
        codes = encode_boxes(noisy)
        xyz = normalize_xyz(codes[..., 0:3], self.point_cloud_range).clamp(0.0, 1.0)
        dn_boxes = torch.cat([xyz, codes[..., 3:]], dim=-1)
        labels = targets.labels.clone()
        if self.dn_label_noise > 0:
            flip = torch.rand(labels.shape, device=device) < self.dn_label_noise
            labels = torch.where(flip, torch.randint_like(labels, 0, self.num_classes), labels)
        dn_feat = self._feature(labels, 1.0)
        valid = targets.valid[..., None]
        dn_boxes = dn_boxes * valid  # padded slots: zero box and feature, as the official code
        dn_feat = dn_feat * valid
        mask = denoising_attention_mask(self.dn_groups, targets.group_size, self.num_queries, device)
        return torch.cat([dn_boxes, boxes], dim=1), torch.cat([dn_feat, feat], dim=1), mask, targets
