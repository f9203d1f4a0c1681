"""Teacher-student query alignment and FLD (future-guided logit distillation).

Alignment: a Hungarian matching between teacher and student predictions of the last decoder layer, with the cost
`w_cls * BCE(student logits, teacher scores) + w_box * L1(code-weighted box codes)` (the detectors' own matching
cost with the teacher's soft scores in place of one-hot labels). A teacher query is *foreground* if its best class
score reaches a threshold, else *background*. Two-stage matching (default) gives the foreground queries the first
choice of student queries and matches the background queries to the remaining ones; this also decides which
teacher queries stay unmatched when the student has fewer queries. The same matching aligns the query-FFR pairs.

FLD on matched pairs: the detection losses with the teacher's predictions as targets. Classification: sigmoid focal
loss of the student logits against the teacher scores (soft targets), summed over pairs and classes and divided by
the number of foreground teacher queries (as the detection focal loss is divided by the number of objects). Box: L1
between code-weighted box codes, averaged over the pairs that enter it (as the detection box loss over its matched
objects).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ftkd.models.common.losses import sigmoid_focal_loss
from ftkd.models.common.matcher import hungarian_match


@dataclass
class QueryMatch:
    """Matched teacher/student query pairs of one sample (M pairs)."""

    teacher_index: Tensor  # [M] int64 into the teacher's queries
    student_index: Tensor  # [M] int64 into the student's queries
    foreground: Tensor  # [M] bool: the teacher query is foreground


def matching_cost(
    teacher_logits: Tensor,
    teacher_boxes: Tensor,
    student_logits: Tensor,
    student_boxes: Tensor,
    code_weights: Tensor,
    cls_weight: float = 2.0,
    box_weight: float = 0.25,
) -> Tensor:
    """[Qt, Qs] cost of pairing teacher query t with student query s (fp32).

    The classification term is the binary cross-entropy of student logits x_s against teacher scores p_t summed
    over classes, `sum_k softplus(x_sk) - p_tk x_sk` (one matrix product for all pairs). It differs from the KL
    divergence by the entropy of p_t, a per-teacher-row constant that does not change an assignment.
    """
    with torch.autocast(teacher_logits.device.type, enabled=False):  # fp32 even inside a bf16 training step
        teacher_scores = teacher_logits.float().sigmoid()  # [Qt, K]
        student_logits = student_logits.float()  # [Qs, K]
        cls_cost = F.softplus(student_logits).sum(-1)[None, :] - teacher_scores @ student_logits.T  # [Qt, Qs]
        weights = code_weights.to(device=teacher_boxes.device, dtype=torch.float32)
        box_cost = torch.cdist(teacher_boxes.float() * weights, student_boxes.float() * weights, p=1)  # [Qt, Qs]
        return cls_weight * cls_cost + box_weight * box_cost


@torch.no_grad()
def match_queries(
    teacher_logits: Tensor,
    teacher_boxes: Tensor,
    student_logits: Tensor,
    student_boxes: Tensor,
    code_weights: Tensor,
    cls_weight: float = 2.0,
    box_weight: float = 0.25,
    fg_score_threshold: float = 0.3,
    mode: str = "two_stage",
    teacher_topk: int = 0,
) -> list[QueryMatch]:
    """Align student queries to teacher queries, per sample.

    Args:
        teacher_logits, teacher_boxes: [B, Qt, K], [B, Qt, 10] teacher predictions (last layer).
        student_logits, student_boxes: [B, Qs, K], [B, Qs, 10] student predictions (last layer).
        mode: "two_stage" (foreground teacher queries first, then background on the remaining student queries)
            or "joint" (one matching over all queries).
        teacher_topk: > 0 matches only the teacher's k highest-scoring queries (all foreground ones first), a
            cheaper Hungarian problem; 0 matches all of them.
    Returns:
        B matches with min(Qt', Qs) pairs each (Qt' = Qt, or teacher_topk).
    """
    if mode not in ("two_stage", "joint"):
        raise ValueError(f"matching mode: expected 'two_stage' or 'joint', got {mode!r}")
    matches = []
    for b in range(teacher_logits.shape[0]):
        cost = matching_cost(
            teacher_logits[b], teacher_boxes[b], student_logits[b], student_boxes[b], code_weights, cls_weight,
            box_weight,
        ).cpu()
        scores = teacher_logits[b].float().sigmoid().amax(-1).cpu()  # [Qt]
        foreground = scores >= fg_score_threshold
        kept = torch.arange(len(scores))
        if 0 < teacher_topk < len(scores):
            kept = scores.topk(teacher_topk).indices  # every query above the threshold ranks before those below
        if mode == "joint":
            rows, cols = hungarian_match(cost[kept])
        else:
            rows, cols = _two_stage_match(cost[kept], foreground[kept])
        rows = kept[rows]
        device = teacher_logits.device
        matches.append(QueryMatch(rows.to(device), cols.to(device), foreground[rows].to(device)))
    return matches


def _two_stage_match(cost: Tensor, foreground: Tensor) -> tuple[Tensor, Tensor]:
    """Match foreground rows of `cost` [Qt, Qs] first, then background rows to the still free columns."""
    fg_rows = foreground.nonzero().flatten()
    bg_rows = (~foreground).nonzero().flatten()
    rows_fg, cols_fg = hungarian_match(cost[fg_rows])
    rows_fg = fg_rows[rows_fg]
    free = torch.ones(cost.shape[1], dtype=torch.bool)
    free[cols_fg] = False
    free_cols = free.nonzero().flatten()
    rows_bg, cols_bg = hungarian_match(cost[bg_rows][:, free_cols])
    return torch.cat([rows_fg, bg_rows[rows_bg]]), torch.cat([cols_fg, free_cols[cols_bg]])


def select_pairs(matches: list[QueryMatch], queries: str) -> list[QueryMatch]:
    """Keep the pairs whose teacher query is foreground, background or both."""
    if queries == "both":
        return matches
    if queries not in ("foreground", "background"):
        raise ValueError(f"FLD queries: expected 'foreground', 'background' or 'both', got {queries!r}")
    keep_fg = queries == "foreground"
    selected = []
    for match in matches:
        keep = match.foreground if keep_fg else ~match.foreground
        selected.append(QueryMatch(match.teacher_index[keep], match.student_index[keep], match.foreground[keep]))
    return selected


def gather_pairs(student: Tensor, teacher: Tensor, matches: list[QueryMatch]) -> tuple[Tensor, Tensor]:
    """Stack matched rows: student [B, Qs, D] and teacher [B, Qt, D] -> two [sum M, D] tensors (same pair order)."""
    student_rows = torch.cat([student[b, m.student_index] for b, m in enumerate(matches)])
    teacher_rows = torch.cat([teacher[b, m.teacher_index] for b, m in enumerate(matches)])
    return student_rows, teacher_rows


def fld_losses(
    student_logits: Tensor,
    student_boxes: Tensor,
    teacher_logits: Tensor,
    teacher_boxes: Tensor,
    matches: list[QueryMatch],
    code_weights: Tensor,
    queries: str = "both",
    box_on_background: bool = True,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
) -> tuple[Tensor, Tensor]:
    """Unweighted FLD classification and box losses of one decoder layer (alpha and beta are in weight_dict).

    Args:
        student_logits, student_boxes: [B, Qs, K], [B, Qs, 10]; teacher_logits, teacher_boxes: [B, Qt, K], [B, Qt, 10].
        matches: from `match_queries` (all pairs; `queries` picks foreground / background / both).
    Returns:
        (loss_cls, loss_box), scalar fp32: loss_cls divided by max(1, number of foreground teacher queries),
        loss_box by max(1, number of pairs in the box term).
    """
    num_foreground = max(1, sum(int(m.foreground.sum()) for m in matches))
    pairs = select_pairs(matches, queries)
    logits_s, logits_t = gather_pairs(student_logits, teacher_logits, pairs)  # [M, K] each
    loss_cls = sigmoid_focal_loss(logits_s.float(), logits_t.float().sigmoid(), focal_alpha, focal_gamma).sum()
    boxes_s, boxes_t = gather_pairs(student_boxes, teacher_boxes, pairs)  # [M, 10] each
    if not box_on_background:
        foreground = torch.cat([m.foreground for m in pairs])
        boxes_s, boxes_t = boxes_s[foreground], boxes_t[foreground]
    weights = code_weights.to(device=boxes_s.device, dtype=torch.float32)
    loss_box = ((boxes_s.float() - boxes_t.float()).abs() * weights).sum()
    return loss_cls / num_foreground, loss_box / max(1, boxes_s.shape[0])
