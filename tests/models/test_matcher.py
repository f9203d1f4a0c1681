"""Hungarian matcher: brute force, a hand-made case, batched == single, empty GT, NaN safety."""

import itertools

import torch

from ftkd.models.common.matcher import HungarianMatcher, focal_class_cost, hungarian_match
from ftkd.structures.boxes import encode_boxes


def test_hungarian_match_equals_brute_force():
    torch.manual_seed(0)
    for Q, M in [(4, 3), (3, 3), (5, 2)]:
        cost = torch.rand(Q, M)
        rows, cols = hungarian_match(cost)
        best = min(
            sum(cost[r, c].item() for r, c in zip(perm, range(M))) for perm in itertools.permutations(range(Q), M)
        )
        assert abs(cost[rows, cols].sum().item() - best) < 1e-6
        assert len(rows) == M and rows.tolist() == sorted(rows.tolist())


def test_hungarian_match_nan_safe():
    cost = torch.tensor([[float("nan"), 1.0], [0.5, float("inf")]])
    rows, cols = hungarian_match(cost)
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 1), (1, 0)]


def test_focal_cost_formula():
    logits = torch.tensor([[0.5, -1.0, 2.0]])
    p = logits.sigmoid()[0, 2]
    expected = -0.25 * (1 - p) ** 2 * torch.log(p) + 0.75 * p**2 * torch.log(1 - p)
    torch.testing.assert_close(focal_class_cost(logits, torch.tensor([2]), 0.25, 2.0)[0, 0], expected)


def test_matcher_hand_case():
    gt_boxes = torch.tensor([[10.0, 0, 0, 2, 4, 1.5, 0, 1, 0], [-20.0, 5, 0, 0.6, 0.7, 1.7, 1.0, 0, 0]])
    gt_labels = torch.tensor([0, 8])
    pred = encode_boxes(torch.tensor([[-19.5, 5, 0, 0.6, 0.7, 1.7, 1.0, 0, 0], [30.0, 30, 0, 1, 1, 1, 0, 0, 0], [10.3, 0, 0, 2, 4, 1.5, 0, 1, 0]]))
    logits = torch.full((3, 10), -3.0)
    logits[0, 8] = 2.0
    logits[2, 0] = 2.0
    matcher = HungarianMatcher()
    ((pred_index, gt_index),) = matcher(logits[None], pred[None], [gt_labels], [encode_boxes(gt_boxes)])
    assert dict(zip(gt_index.tolist(), pred_index.tolist())) == {0: 2, 1: 0}
    cost = matcher.cost_matrix(logits, pred, gt_labels, encode_boxes(gt_boxes))
    w = torch.tensor([2.0, 2.0] + [1.0] * 8)
    naive = torch.tensor(
        [
            [2.0 * focal_class_cost(logits[q : q + 1], gt_labels[m : m + 1], 0.25, 2.0).item()
             + 0.25 * ((pred[q] - encode_boxes(gt_boxes)[m]).abs() * w).sum().item() for m in range(2)]
            for q in range(3)
        ]
    )  # fmt: skip
    torch.testing.assert_close(cost, naive, rtol=1e-5, atol=1e-5)


def test_matcher_batched_equals_single_and_empty():
    torch.manual_seed(1)
    logits = torch.randn(3, 6, 10)
    boxes = torch.randn(3, 6, 10)
    labels = [torch.tensor([1, 4]), torch.zeros(0, dtype=torch.long), torch.tensor([0, 0, 9])]
    codes = [torch.randn(len(lab), 10) for lab in labels]
    matcher = HungarianMatcher()
    batched = matcher(logits, boxes, labels, codes)
    for b in range(3):
        (single,) = matcher(logits[b : b + 1], boxes[b : b + 1], [labels[b]], [codes[b]])
        assert torch.equal(single[0], batched[b][0]) and torch.equal(single[1], batched[b][1])
    assert batched[1][0].numel() == 0 and batched[1][1].numel() == 0


def test_matcher_without_velocity_ignores_it():
    logits = torch.zeros(1, 2, 10)
    boxes = torch.zeros(1, 2, 10)
    boxes[0, 0, 8] = 50.0  # query 0 only differs in velocity
    boxes[0, 1, 0] = 1.0
    gt = [torch.zeros(1, 10)]
    assert HungarianMatcher(match_velocity=False)(logits, boxes, [torch.tensor([0])], gt)[0][0].tolist() == [0]
    assert HungarianMatcher(match_velocity=True)(logits, boxes, [torch.tensor([0])], gt)[0][0].tolist() == [1]
