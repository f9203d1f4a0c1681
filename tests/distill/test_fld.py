"""Teacher-student alignment (Hungarian), FLD, query FFR and logit KD on random predictions."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ftkd.distill.baselines import FeatureImitation, MaskedGenerativeDistillation, logit_kd_loss
from ftkd.distill.fld import fld_losses, match_queries, matching_cost, select_pairs
from ftkd.distill.query_ffr import QueryFeatureReconstruction

CODE_WEIGHTS = torch.tensor([2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])


def predictions(B=2, Q=12, K=10, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, Q, K, generator=generator) * 3 - 2
    boxes = torch.randn(B, Q, 10, generator=generator) * 5
    return logits, boxes


def test_matching_cost_against_loop():
    logits_t, boxes_t = predictions(B=1, Q=4)
    logits_s, boxes_s = predictions(B=1, Q=5, seed=1)
    cost = matching_cost(logits_t[0], boxes_t[0], logits_s[0], boxes_s[0], CODE_WEIGHTS, 2.0, 0.25)
    for t, s in itertools.product(range(4), range(5)):
        p = logits_t[0, t].sigmoid()
        bce = F.binary_cross_entropy_with_logits(logits_s[0, s], p, reduction="sum")
        l1 = ((boxes_t[0, t] - boxes_s[0, s]).abs() * CODE_WEIGHTS).sum()
        assert cost[t, s].item() == pytest.approx((2.0 * bce + 0.25 * l1).item(), rel=1e-4)


@pytest.mark.parametrize("mode", ["two_stage", "joint"])
def test_alignment_is_a_permutation_and_recovers_a_shuffle(mode):
    logits_t, boxes_t = predictions()
    perm = torch.stack([torch.randperm(12, generator=torch.Generator().manual_seed(b)) for b in range(2)])
    logits_s = torch.stack([logits_t[b, perm[b]] for b in range(2)])  # student query s = teacher query perm[s]
    boxes_s = torch.stack([boxes_t[b, perm[b]] for b in range(2)])
    matches = match_queries(logits_t, boxes_t, logits_s, boxes_s, CODE_WEIGHTS, mode=mode)
    for b, match in enumerate(matches):
        assert sorted(match.teacher_index.tolist()) == list(range(12))
        assert sorted(match.student_index.tolist()) == list(range(12))
        assert torch.equal(perm[b][match.student_index], match.teacher_index)
        assert torch.equal(match.foreground, logits_t[b, match.teacher_index].sigmoid().amax(-1) >= 0.3)
    loss_cls, loss_box = fld_losses(logits_s, boxes_s, logits_t, boxes_t, matches, CODE_WEIGHTS)
    assert loss_cls.item() == pytest.approx(0.0, abs=1e-7) and loss_box.item() == 0.0
    loss_cls, loss_box = fld_losses(logits_s + 0.5, boxes_s + 0.1, logits_t, boxes_t, matches, CODE_WEIGHTS)
    assert loss_cls.item() > 0 and loss_box.item() > 0


def test_two_stage_gives_foreground_first_choice_with_fewer_student_queries():
    logits_t, boxes_t = predictions(B=1, Q=12)
    logits_t[0, :3] = 4.0  # three confident (foreground) teacher queries
    logits_t[0, 3:] = -4.0
    logits_s, boxes_s = predictions(B=1, Q=5, seed=3)
    (match,) = match_queries(logits_t, boxes_t, logits_s, boxes_s, CODE_WEIGHTS, mode="two_stage")
    assert len(match.teacher_index) == 5 and sorted(match.student_index.tolist()) == list(range(5))
    assert {0, 1, 2} <= set(match.teacher_index.tolist())
    assert match.foreground.sum() == 3
    (top,) = match_queries(logits_t, boxes_t, logits_s, boxes_s, CODE_WEIGHTS, teacher_topk=4)
    assert len(top.teacher_index) == 4 and {0, 1, 2} <= set(top.teacher_index.tolist())
    scores = logits_t[0].sigmoid().amax(-1)
    assert set(top.teacher_index.tolist()) == set(scores.topk(4).indices.tolist())
    fg = select_pairs([match], "foreground")[0]
    bg = select_pairs([match], "background")[0]
    assert sorted(fg.teacher_index.tolist()) == [0, 1, 2] and len(bg.teacher_index) == 2 and not bg.foreground.any()


def test_fld_fg_bg_switches_and_normaliser():
    logits_t, boxes_t = predictions(B=1, Q=6)
    logits_t[0, :2] = 3.0
    logits_t[0, 2:] = -3.0
    matches = match_queries(logits_t, boxes_t, logits_t, boxes_t, CODE_WEIGHTS)
    student_logits, student_boxes = logits_t.clone(), boxes_t.clone()
    student_logits[0, 0] += 1.0  # foreground query 0 wrong
    student_boxes[0, 5] += 1.0  # background query 5 wrong
    fg = fld_losses(student_logits, student_boxes, logits_t, boxes_t, matches, CODE_WEIGHTS, "foreground")
    bg = fld_losses(student_logits, student_boxes, logits_t, boxes_t, matches, CODE_WEIGHTS, "background")
    both = fld_losses(student_logits, student_boxes, logits_t, boxes_t, matches, CODE_WEIGHTS, "both")
    assert fg[0] > 0 and fg[1] == 0 and bg[0] == 0
    assert bg[1].item() == pytest.approx(sum(CODE_WEIGHTS.tolist()) / 4)  # |1| x code weights / 4 background pairs
    assert both[1].item() == pytest.approx(sum(CODE_WEIGHTS.tolist()) / 6)  # averaged over all 6 pairs
    torch.testing.assert_close(both[0], fg[0] + bg[0])
    no_bg_box = fld_losses(student_logits, student_boxes, logits_t, boxes_t, matches, CODE_WEIGHTS, "both", False)
    assert no_bg_box[1] == 0


def test_query_ffr_zero_at_target_positive_otherwise_and_gradients():
    torch.manual_seed(0)
    teacher = torch.randn(2, 7, 16)
    perm = torch.randperm(7)
    student = teacher[:, perm].clone().requires_grad_(True)  # student query s holds teacher query perm[s]
    logits_t, boxes_t = predictions(B=2, Q=7)
    matches = match_queries(logits_t, boxes_t, logits_t[:, perm], boxes_t[:, perm], CODE_WEIGHTS)
    module = QueryFeatureReconstruction(16, 16, mask_ratio=0.0)
    module.generator = nn.Identity()
    assert module(student, teacher, matches).item() == 0.0
    assert module(student + 0.1, teacher, matches).item() == pytest.approx(0.01, rel=1e-4)
    generating = QueryFeatureReconstruction(16, 24, hidden_dims=32)  # channel adapter inside the generator
    loss = generating(student, torch.randn(2, 7, 24), matches)
    loss.backward()
    assert loss.item() > 0 and student.grad.abs().sum() > 0
    assert all(p.grad is not None for p in generating.generator.parameters())


def test_baselines_zero_at_target_positive_otherwise():
    torch.manual_seed(0)
    teacher = torch.randn(1, 4, 2, 8, 3, 5)  # [B, T(+F), N, C, H, W]
    fitnet = FeatureImitation(8, 8)
    with torch.no_grad():
        fitnet.regressor.weight.copy_(torch.eye(8)[:, :, None, None])
        fitnet.regressor.bias.zero_()
    student = teacher[:, :3].clone()  # three shared frames; frame 3 is the teacher's future
    assert fitnet(student, teacher, num_teacher_frames=3).item() == pytest.approx(0.0, abs=1e-12)
    assert fitnet(student + 0.1, teacher, num_teacher_frames=3).item() == pytest.approx(0.01, rel=1e-4)
    mgd = MaskedGenerativeDistillation(8, 8, mask_ratio=0.0)
    mgd.generator = nn.Identity()
    assert mgd(student, teacher, num_teacher_frames=3).item() == 0.0
    assert mgd(student + 0.1, teacher, num_teacher_frames=3).item() > 0
    logits_t, boxes_t = predictions()
    matches = match_queries(logits_t, boxes_t, logits_t, boxes_t, CODE_WEIGHTS, mode="joint")
    assert logit_kd_loss(logits_t, logits_t, matches, 2.0).abs().item() < 1e-5
    assert logit_kd_loss(logits_t + 1.0, logits_t, matches, 2.0).item() > 0
