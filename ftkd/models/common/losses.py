"""Elementwise detection losses (fp32): sigmoid focal loss with soft targets and code-weighted L1."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Elementwise sigmoid focal loss, generalised to soft targets.

    loss = BCE(sigmoid(x), t) * |t - p|^gamma * (alpha * t + (1 - alpha) * (1 - t))

    For hard targets t in {0, 1} this is exactly the focal loss of RetinaNet / mmdet
    (-alpha_t (1 - p_t)^gamma log p_t). For a soft target t in [0, 1] (e.g. a teacher's score in logit
    distillation) the modulating factor |t - p|^gamma is the quality-focal-loss generalisation: the loss is zero
    when the prediction equals the target, and alpha interpolates linearly between the two class weights.

    Args:
        logits: [...] raw scores (any dtype; computed in fp32).
        targets: [...] same shape, values in [0, 1].
    Returns:
        [...] fp32 loss per element (no reduction).
    """
    if logits.shape != targets.shape:
        raise ValueError(f"sigmoid_focal_loss: logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ")
    logits, targets = logits.float(), targets.float()
    prob = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    modulator = (targets - prob).abs().pow(gamma)
    class_weight = alpha * targets + (1.0 - alpha) * (1.0 - targets)
    return bce * modulator * class_weight


def weighted_l1(pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Elementwise |pred - target| * weight in fp32 (weight broadcasts, e.g. code weights [10])."""
    if pred.shape != target.shape:
        raise ValueError(f"weighted_l1: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    loss = (pred.float() - target.float()).abs()
    return loss if weight is None else loss * weight.float()
