"""KD baselines for the comparison table, on the same code path as FTKD (same teacher run, same level, same pairs).

- FitNet: strict frame-aligned imitation of the teacher's PV features (1x1 conv regressor, mean squared error).
- MGD: masked generative distillation of the teacher's PV features of the *same* frame (no future aggregation).
- Logit KD: temperature-scaled binary KD of class scores on queries aligned by one joint Hungarian matching
  (no foreground/background treatment, no box term).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ftkd.distill.fld import QueryMatch, gather_pairs
from ftkd.distill.pv_ffr import channel_adapter, conv_generator, masked_generation_loss, resize_maps


class FeatureImitation(nn.Module):
    """FitNet hint loss on PV features: `mean((regressor(S[i]) - T[i])^2)` over frames i seen by both."""

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        self.regressor = nn.Conv2d(student_channels, teacher_channels, 1)

    def forward(self, student_maps: Tensor, teacher_maps: Tensor, num_teacher_frames: int) -> Tensor:
        """student_maps [B, Ts, N, Cs, Hs, Ws], teacher_maps [B, Tt(+F), N, Ct, Ht, Wt] -> scalar fp32."""
        frames = min(student_maps.shape[1], num_teacher_frames)
        flat = student_maps[:, :frames].flatten(0, 2)  # [B, T, N, Cs, Hs, Ws] -> [B*T*N, Cs, Hs, Ws]
        predicted = self.regressor(flat).float()
        target = resize_maps(teacher_maps[:, :frames].float(), tuple(flat.shape[-2:])).flatten(0, 2)
        return F.mse_loss(predicted, target)


class MaskedGenerativeDistillation(nn.Module):
    """MGD on PV features: masked student maps regenerate the teacher's maps of the same frames."""

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        mask_ratio: float = 0.5,
        mask_mode: str = "pixel",
        normalizer: str = "images",
    ) -> None:
        super().__init__()
        self.adapter = channel_adapter(student_channels, teacher_channels)
        self.generator = conv_generator(teacher_channels)
        self.mask_ratio = mask_ratio
        self.mask_mode = mask_mode
        self.normalizer = normalizer

    def forward(
        self,
        student_maps: Tensor,
        teacher_maps: Tensor,
        num_teacher_frames: int,
        generator_rng: torch.Generator | None = None,
    ) -> Tensor:
        """student_maps [B, Ts, N, Cs, Hs, Ws], teacher_maps [B, Tt(+F), N, Ct, Ht, Wt] -> scalar fp32."""
        frames = min(student_maps.shape[1], num_teacher_frames)
        return masked_generation_loss(
            student_maps[:, :frames],
            teacher_maps[:, :frames],
            self.adapter,
            self.generator,
            self.mask_ratio,
            self.mask_mode,
            self.normalizer,
            generator_rng,
        )


def logit_kd_loss(
    student_logits: Tensor, teacher_logits: Tensor, matches: list[QueryMatch], temperature: float = 1.0
) -> Tensor:
    """Binary KD of per-class scores on matched pairs.

    `T^2 * sum BCE(sigmoid(x_s / T), sigmoid(x_t / T))` over pairs and classes, minus the teacher's own entropy
    (so the loss is a KL divergence: zero when the student equals the teacher), divided by
    max(1, number of foreground teacher queries).
    """
    logits_s, logits_t = gather_pairs(student_logits, teacher_logits, matches)  # [M, K] each
    target = (logits_t.float() / temperature).sigmoid()
    cross = F.binary_cross_entropy_with_logits(logits_s.float() / temperature, target, reduction="sum")
    entropy = F.binary_cross_entropy_with_logits(logits_t.float() / temperature, target, reduction="sum")
    normalizer = max(1, sum(int(m.foreground.sum()) for m in matches))
    return temperature**2 * (cross - entropy) / normalizer
