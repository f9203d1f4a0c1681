"""Helpers for query denoising (DN-DETR) shared by both detectors: padded noisy-GT groups and the attention mask.

Each sample's M_b ground-truth boxes are padded to M = max_b M_b and repeated in G groups, giving D = G * M
denoising queries placed before the matching queries. The models differ in how they noise them (SparseBEV:
box centre + label noise, all positive; StreamPETR: larger centre noise, far-noised ones relabelled background).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class DenoisingTargets:
    """Ground truth laid out as G groups of M padded slots (D = G * M) per sample."""

    boxes: Tensor  # [B, D, 9] ground-truth boxes (zeros in padded slots)
    labels: Tensor  # [B, D] int64 class indices (0 in padded slots)
    valid: Tensor  # [B, D] bool: False for padding
    num_groups: int
    group_size: int  # M


def group_targets(gt_boxes: list[Tensor], gt_labels: list[Tensor], num_groups: int) -> DenoisingTargets:
    """Pad each sample's ground truth to the batch maximum M and repeat it `num_groups` times."""
    B = len(gt_boxes)
    M = max((len(b) for b in gt_boxes), default=0)
    device = gt_boxes[0].device if B else torch.device("cpu")
    boxes = torch.zeros(B, M, 9, dtype=torch.float32, device=device)
    labels = torch.zeros(B, M, dtype=torch.int64, device=device)
    valid = torch.zeros(B, M, dtype=torch.bool, device=device)
    for b, (box, label) in enumerate(zip(gt_boxes, gt_labels)):
        boxes[b, : len(box)] = box.float()
        labels[b, : len(box)] = label
        valid[b, : len(box)] = True
    return DenoisingTargets(
        boxes=boxes.repeat(1, num_groups, 1),  # [B, M, 9] -> [B, G*M, 9] (group-major)
        labels=labels.repeat(1, num_groups),
        valid=valid.repeat(1, num_groups),
        num_groups=num_groups,
        group_size=M,
    )


def denoising_attention_mask(num_groups: int, group_size: int, num_queries: int, device: torch.device) -> Tensor:
    """[D + Q, D + Q] bool self-attention mask, True = may not attend (D = num_groups * group_size, DN first).

    Matching queries cannot see any denoising query (they would read the ground truth); denoising groups cannot
    see each other; denoising queries may see the matching queries.
    """
    D = num_groups * group_size
    total = D + num_queries
    group = torch.arange(total, device=device).div(max(group_size, 1), rounding_mode="floor")
    is_dn = torch.arange(total, device=device) < D
    mask = is_dn[None, :] & (~is_dn[:, None] | (group[:, None] != group[None, :]))
    return mask
