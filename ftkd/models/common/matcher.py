"""Hungarian matching of predictions to ground truth (focal class cost + code-weighted L1 box cost)."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

# Costs that are not finite (NaN predictions) are replaced by this value so that scipy can solve the problem.
_INVALID_COST = 100.0


def hungarian_match(cost: Tensor) -> tuple[Tensor, Tensor]:
    """Minimum-cost one-to-one assignment of a [Q, M] cost matrix (scipy, on the CPU).

    Returns (rows, cols): int64 tensors on `cost`'s device, of length min(Q, M), rows ascending.
    Non-finite costs are replaced by 100 (NaN, +inf) or -100 (-inf).
    """
    if cost.dim() != 2:
        raise ValueError(f"hungarian_match: expected a [Q, M] cost matrix, got {tuple(cost.shape)}")
    finite = torch.nan_to_num(cost.detach().float(), nan=_INVALID_COST, posinf=_INVALID_COST, neginf=-_INVALID_COST)
    rows, cols = linear_sum_assignment(finite.cpu().numpy())
    return (
        torch.as_tensor(rows, dtype=torch.int64, device=cost.device),
        torch.as_tensor(cols, dtype=torch.int64, device=cost.device),
    )


def focal_class_cost(logits: Tensor, labels: Tensor, alpha: float, gamma: float) -> Tensor:
    """[Q, K] logits, [M] labels -> [Q, M] focal matching cost (mmdet FocalLossCost, without its weight)."""
    prob = logits.float().sigmoid()
    eps = 1e-12
    neg_cost = -(1.0 - prob + eps).log() * (1.0 - alpha) * prob.pow(gamma)
    pos_cost = -(prob + eps).log() * alpha * (1.0 - prob).pow(gamma)
    return pos_cost[:, labels] - neg_cost[:, labels]


class HungarianMatcher(nn.Module):
    """One-to-one matching per sample: cost = cls_weight * focal cost + bbox_weight * L1(code-weighted codes).

    The box cost is the L1 distance between code-weighted 10-value codes (x, y, z in metres, log sizes, sin/cos
    yaw, velocity); `match_velocity=False` drops vx, vy from it (StreamPETR), True keeps them (SparseBEV).
    """

    def __init__(
        self,
        cls_weight: float = 2.0,
        bbox_weight: float = 0.25,
        code_weights: tuple[float, ...] = (2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0),
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        match_velocity: bool = True,
    ) -> None:
        super().__init__()
        if len(code_weights) != 10:
            raise ValueError(f"HungarianMatcher: expected 10 code_weights, got {len(code_weights)}")
        self.cls_weight = cls_weight
        self.bbox_weight = bbox_weight
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.match_velocity = match_velocity
        self.register_buffer("code_weights", torch.tensor(code_weights, dtype=torch.float32), persistent=False)

    def cost_matrix(self, logits: Tensor, codes: Tensor, gt_labels: Tensor, gt_codes: Tensor) -> Tensor:
        """[Q, K] logits, [Q, 10] codes, [M] labels, [M, 10] codes -> [Q, M] fp32 cost."""
        dims = 10 if self.match_velocity else 8
        weights = self.code_weights[:dims].to(codes.device)
        cls_cost = focal_class_cost(logits, gt_labels, self.focal_alpha, self.focal_gamma)
        box_cost = torch.cdist(codes[:, :dims].float() * weights, gt_codes[:, :dims].float() * weights, p=1)
        return self.cls_weight * cls_cost + self.bbox_weight * box_cost

    @torch.no_grad()
    def forward(
        self, pred_logits: Tensor, pred_boxes: Tensor, gt_labels: list[Tensor], gt_codes: list[Tensor]
    ) -> list[tuple[Tensor, Tensor]]:
        """Match each sample's predictions to its ground truth.

        Args:
            pred_logits: [B, Q, K] class logits.
            pred_boxes: [B, Q, 10] box codes (reference frame, metres).
            gt_labels: B x [M_b] int64 class indices.
            gt_codes: B x [M_b, 10] target codes (ftkd.structures.boxes.encode_boxes).
        Returns:
            B x (pred_indices [min(Q, M_b)], gt_indices [min(Q, M_b)]) int64 tensors.
        """
        if pred_logits.dim() != 3 or pred_boxes.shape[:2] != pred_logits.shape[:2] or pred_boxes.shape[-1] != 10:
            raise ValueError(
                f"HungarianMatcher: expected pred_logits [B, Q, K] and pred_boxes [B, Q, 10], got "
                f"{tuple(pred_logits.shape)} and {tuple(pred_boxes.shape)}"
            )
        indices = []
        for b, (labels, codes) in enumerate(zip(gt_labels, gt_codes)):
            if len(labels) == 0:
                empty = torch.zeros(0, dtype=torch.int64, device=pred_logits.device)
                indices.append((empty, empty.clone()))
                continue
            cost = self.cost_matrix(pred_logits[b], pred_boxes[b], labels, codes)
            indices.append(hungarian_match(cost))
        return indices
