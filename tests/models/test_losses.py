"""Losses, criterion and NMS-free decoding against direct formulas and hand-made cases."""

import math

import torch
import torchvision

from ftkd.models.common.criterion import SetCriterion
from ftkd.models.common.losses import sigmoid_focal_loss, weighted_l1
from ftkd.models.common.matcher import HungarianMatcher
from ftkd.models.common.postprocess import decode_topk
from ftkd.structures.boxes import encode_boxes
from ftkd.structures.outputs import DenoisingOutput, DetectorOutput
from sparsebev_fixtures import make_batch


def test_focal_loss_hard_targets_match_formula_and_torchvision():
    torch.manual_seed(0)
    logits = torch.randn(7, 10) * 3
    targets = (torch.rand(7, 10) > 0.7).float()
    p = logits.sigmoid()
    direct = torch.where(
        targets == 1,
        -0.25 * (1 - p) ** 2 * torch.log(p),
        -(1 - 0.25) * p**2 * torch.log(1 - p),
    )
    ours = sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0)
    torch.testing.assert_close(ours, direct, rtol=1e-5, atol=1e-6)
    reference = torchvision.ops.sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0, reduction="none")
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


def test_focal_loss_soft_targets():
    logits = torch.tensor([0.3, -1.2, 2.0])
    targets = logits.sigmoid()  # prediction equals the soft target -> no loss
    assert sigmoid_focal_loss(logits, targets).abs().max() < 1e-7
    t, x = 0.6, 0.1
    p = 1 / (1 + math.exp(-x))
    bce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
    expected = bce * abs(t - p) ** 2 * (0.25 * t + 0.75 * (1 - t))
    got = sigmoid_focal_loss(torch.tensor([x]), torch.tensor([t]))
    assert abs(got.item() - expected) < 1e-6


def test_weighted_l1_by_hand():
    pred = torch.tensor([[1.0, 2.0, 3.0]])
    target = torch.tensor([[0.0, 4.0, 3.5]])
    got = weighted_l1(pred, target, torch.tensor([2.0, 1.0, 1.0]))
    torch.testing.assert_close(got, torch.tensor([[2.0, 2.0, 0.5]]))


def _criterion(num_layers: int = 2) -> SetCriterion:
    return SetCriterion(10, HungarianMatcher(), 2.0, 0.25, (2.0, 2.0) + (1.0,) * 8, 0.25, 2.0, num_layers)


def test_criterion_hand_case():
    batch = make_batch(batch_size=1, num_frames=1, image_size=(32, 32))
    gt = torch.tensor([[10.0, -5.0, 0.5, 2.0, 4.0, 1.5, 0.3, 1.0, 0.0]])
    batch.gt_boxes[0], batch.gt_labels[0] = gt, torch.tensor([3])
    codes = torch.zeros(1, 4, 10)
    codes[0, :] = encode_boxes(gt)[0] + 5.0  # far from the GT
    codes[0, 2] = encode_boxes(gt)[0]
    codes[0, 2, 0] += 0.4  # matched query: x off by 0.4 m
    logits = torch.full((1, 4, 10), -4.0)
    logits[0, 2, 3] = 4.0
    output = DetectorOutput(logits, codes, torch.zeros(1, 4, 8), [], [logits], [codes])
    losses = _criterion()(output, batch)
    assert set(losses) == {"loss_cls", "loss_bbox", "loss_cls_0", "loss_bbox_0"}
    assert abs(losses["loss_bbox"].item() - 2.0 * 0.4) < 1e-5  # code weight 2 on x, 1 GT
    targets = torch.zeros(1, 4, 10)
    targets[0, 2, 3] = 1.0
    expected_cls = torchvision.ops.sigmoid_focal_loss(logits, targets, 0.25, 2.0, reduction="sum")
    torch.testing.assert_close(losses["loss_cls"], expected_cls)
    torch.testing.assert_close(losses["loss_cls_0"], losses["loss_cls"])


def test_criterion_empty_targets_and_denoising():
    batch = make_batch(batch_size=2, num_frames=1, image_size=(32, 32))
    batch.gt_boxes[0], batch.gt_labels[0] = torch.zeros(0, 9), torch.zeros(0, dtype=torch.long)
    batch.gt_boxes[1], batch.gt_labels[1] = torch.zeros(0, 9), torch.zeros(0, dtype=torch.long)
    logits = torch.randn(2, 5, 10)
    codes = torch.randn(2, 5, 10)
    target_boxes = torch.randn(2, 4, 10)
    dn = DenoisingOutput(
        logits=torch.randn(2, 2, 4, 10),
        boxes=target_boxes[None].repeat(2, 1, 1, 1),
        target_labels=torch.tensor([[1, 2, 1, 2], [0, 0, 0, 0]]),
        target_boxes=target_boxes,
        valid=torch.tensor([[True, True, True, True], [False, False, False, False]]),
        num_groups=2,
    )
    output = DetectorOutput(logits, codes, torch.zeros(2, 5, 8), [], [], [], dn=dn)
    criterion = _criterion(num_layers=2)
    losses = criterion(output, batch)
    assert losses["loss_bbox"].item() == 0.0  # nothing matched
    expected = torchvision.ops.sigmoid_focal_loss(logits, torch.zeros_like(logits), 0.25, 2.0, reduction="sum")
    torch.testing.assert_close(losses["loss_cls"], expected)  # normaliser clamped to 1
    assert losses["loss_bbox_dn"].item() == 0.0 and losses["loss_bbox_dn_0"].item() == 0.0  # perfect DN boxes
    one_hot = torch.zeros(4, 10)
    one_hot[[0, 1, 2, 3], [1, 2, 1, 2]] = 1.0
    expected_dn = torchvision.ops.sigmoid_focal_loss(dn.logits[-1, 0], one_hot, 0.25, 2.0, reduction="sum") / 4
    torch.testing.assert_close(losses["loss_cls_dn"], expected_dn)
    assert set(criterion.weight_dict) >= set(losses)
    assert criterion.weight_dict["loss_cls_dn_0"] == 2.0 and criterion.weight_dict["loss_bbox"] == 0.25


def test_decode_topk_hand_case():
    logits = torch.full((1, 3, 10), -10.0)
    logits[0, 1, 4] = 2.0  # query 1, class 4: best
    logits[0, 2, 0] = 1.0  # query 2, class 0
    logits[0, 0, 9] = 0.5  # query 0, class 9: centre out of range
    codes = encode_boxes(
        torch.tensor([[[80.0, 0, 0, 1, 1, 1, 0, 0, 0], [1.0, 2, 0.5, 2, 4, 1.5, 0.5, 1, 0], [3.0, 0, 0, 1, 1, 1, 0, 0, 0]]])
    )
    (dets,) = decode_topk(logits, codes, max_detections=3, score_threshold=0.05, point_cloud_range=(-61.2, -61.2, -13, 61.2, 61.2, 15))
    assert dets.labels.tolist() == [4, 0]
    torch.testing.assert_close(dets.scores, torch.tensor([2.0, 1.0]).sigmoid())
    torch.testing.assert_close(dets.boxes[0], torch.tensor([1.0, 2, 0.5, 2, 4, 1.5, 0.5, 1, 0]), atol=1e-5, rtol=0)
