"""Set-prediction detection loss: Hungarian matching per decoder layer, focal classification and L1 box losses."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ftkd.models.common.losses import sigmoid_focal_loss, weighted_l1
from ftkd.models.common.matcher import HungarianMatcher
from ftkd.structures.batch import Batch
from ftkd.structures.boxes import encode_boxes
from ftkd.structures.outputs import DenoisingOutput, DetectorOutput


def _mean_over_ranks(value: Tensor) -> Tensor:
    """Average a scalar over DDP ranks (identity without torch.distributed), clamped to >= 1."""
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
        value = value / dist.get_world_size()
    return value.clamp(min=1.0)


class SetCriterion(nn.Module):
    """Named detection losses of every decoder layer (DETR-style), with the official SparseBEV/StreamPETR weights.

    Keys: `loss_cls`, `loss_bbox` (last layer), `loss_cls_{i}`, `loss_bbox_{i}` (earlier layer i), and with query
    denoising `loss_cls_dn`, `loss_bbox_dn`, `loss_cls_dn_{i}`, `loss_bbox_dn_{i}`. Unweighted; the engine
    multiplies each by `weight_dict[key]` once. Classification: focal loss summed over all queries and classes
    (background = all-zero target row), box: code-weighted L1 over matched queries; both divided by the number of
    ground-truth boxes averaged over DDP ranks (at least 1), as the official code (`sync_cls_avg_factor`).
    Denoising losses are divided by the number of valid denoising queries (times `dn_cls_normaliser_scale` for
    classification; StreamPETR uses pi / 6 * 0.75^3, its expected positive fraction).
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        cls_weight: float = 2.0,
        bbox_weight: float = 0.25,
        code_weights: tuple[float, ...] = (2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0),
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        num_layers: int = 6,
        dn_cls_normaliser_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.num_layers = num_layers
        self.dn_cls_normaliser_scale = dn_cls_normaliser_scale
        self.register_buffer("code_weights", torch.tensor(code_weights, dtype=torch.float32), persistent=False)
        self.weight_dict: dict[str, float] = {}
        for suffix in ["", "_dn"]:
            for layer in [""] + [f"_{i}" for i in range(num_layers - 1)]:
                self.weight_dict[f"loss_cls{suffix}{layer}"] = cls_weight
                self.weight_dict[f"loss_bbox{suffix}{layer}"] = bbox_weight

    def _layer_losses(
        self,
        logits: Tensor,
        boxes: Tensor,
        gt_labels: list[Tensor],
        gt_codes: list[Tensor],
        num_boxes: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Match one layer's [B, Q, K] logits and [B, Q, 10] codes to the targets; return (cls, bbox) losses."""
        logits, boxes = logits.float(), boxes.float()
        indices = self.matcher(logits, boxes, gt_labels, gt_codes)
        target_cls = torch.zeros_like(logits)
        matched_pred, matched_target = [], []
        for b, (pred_index, gt_index) in enumerate(indices):
            target_cls[b, pred_index, gt_labels[b][gt_index]] = 1.0
            matched_pred.append(boxes[b, pred_index])
            matched_target.append(gt_codes[b][gt_index].float())
        loss_cls = sigmoid_focal_loss(logits, target_cls, self.focal_alpha, self.focal_gamma).sum() / num_boxes
        pred = torch.cat(matched_pred)  # [sum matched, 10]
        target = torch.cat(matched_target)
        finite = torch.isfinite(target).all(dim=-1)  # official: targets with NaN/inf get no weight
        loss_bbox = weighted_l1(pred[finite], target[finite], self.code_weights).sum() / num_boxes
        return torch.nan_to_num(loss_cls), torch.nan_to_num(loss_bbox)

    def _denoising_losses(self, dn: DenoisingOutput) -> dict[str, Tensor]:
        """Losses of the denoising queries (targets are known, no matching)."""
        valid = dn.valid  # [B, D]
        num_dn = _mean_over_ranks(valid.sum().float())
        target_cls = torch.zeros_like(dn.logits[0], dtype=torch.float32)  # [B, D, K]
        positive = valid & (dn.target_labels < self.num_classes)
        b_index, d_index = positive.nonzero(as_tuple=True)
        target_cls[b_index, d_index, dn.target_labels[b_index, d_index]] = 1.0
        target_boxes = dn.target_boxes.float()
        box_weight = (valid & torch.isfinite(target_boxes).all(dim=-1)).float()[..., None] * self.code_weights
        target_boxes = torch.nan_to_num(target_boxes)
        losses = {}
        L = dn.logits.shape[0]
        for layer in range(L):
            cls = sigmoid_focal_loss(dn.logits[layer], target_cls, self.focal_alpha, self.focal_gamma)
            cls = (cls * valid[..., None]).sum() / (num_dn * self.dn_cls_normaliser_scale)
            bbox = weighted_l1(dn.boxes[layer], target_boxes, box_weight).sum() / num_dn
            suffix = "" if layer == L - 1 else f"_{layer}"
            losses[f"loss_cls_dn{suffix}"] = torch.nan_to_num(cls)
            losses[f"loss_bbox_dn{suffix}"] = torch.nan_to_num(bbox)
        return losses

    def forward(self, output: DetectorOutput, batch: Batch) -> dict[str, Tensor]:
        """Named unweighted losses (fp32 scalars) of all decoder layers; see the class docstring for the keys."""
        gt_codes = [encode_boxes(boxes.float()) for boxes in batch.gt_boxes]
        gt_labels = [labels.long() for labels in batch.gt_labels]
        device = output.pred_logits.device
        num_boxes = _mean_over_ranks(torch.tensor(float(sum(len(c) for c in gt_codes)), device=device))
        layers = list(zip(output.aux_logits, output.aux_boxes)) + [(output.pred_logits, output.pred_boxes)]
        losses = {}
        for layer, (logits, boxes) in enumerate(layers):
            loss_cls, loss_bbox = self._layer_losses(logits, boxes, gt_labels, gt_codes, num_boxes)
            suffix = "" if layer == len(layers) - 1 else f"_{layer}"
            losses[f"loss_cls{suffix}"] = loss_cls
            losses[f"loss_bbox{suffix}"] = loss_bbox
        if output.dn is not None:
            losses.update(self._denoising_losses(output.dn))
        return losses
