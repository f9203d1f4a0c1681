"""SparseBEV: SASA bias, queries/DN, a tiny forward/backward, the offline teacher, the cached online path."""

import math

import pytest
import torch
from sparsebev_fixtures import make_batch

from ftkd.models.common.config import BackboneConfig
from ftkd.models.common.denoising import denoising_attention_mask
from ftkd.models.common.image_ops import GridMask, normalize_images
from ftkd.models.sparsebev.config import SparseBEVConfig
from ftkd.models.sparsebev.model import SparseBEV
from ftkd.models.sparsebev.online import OnlineSparseBEV
from ftkd.models.sparsebev.query import PillarQueries, normalize_xyz, to_boxes
from ftkd.models.sparsebev.sasa import ScaleAdaptiveSelfAttention, distance_bias
from ftkd.structures.boxes import encode_boxes

PC_RANGE = (-51.2, -51.2, -3.0, 51.2, 51.2, 5.0)


def tiny_config(num_frames: int, **kwargs) -> SparseBEVConfig:
    return SparseBEVConfig(
        backbone=BackboneConfig(depth=18, fpn_channels=32, channels_last=False),
        embed_dims=32, num_heads=4, ffn_dims=32, num_queries=9, num_layers=2, num_frames=num_frames,
        num_groups=4, num_points=2, out_points=8, dn_groups=2, **kwargs,
    )  # fmt: skip


def test_distance_bias_equals_loop():
    torch.manual_seed(0)
    centres = torch.randn(2, 5, 2) * 10
    tau = torch.rand(2, 5, 3) * 2
    bias = distance_bias(centres, tau)
    for b, h, i, j in [(0, 0, 1, 2), (1, 2, 4, 0), (1, 1, 3, 3)]:
        distance = math.dist(centres[b, i].tolist(), centres[b, j].tolist())
        assert abs(bias[b, h, i, j].item() + tau[b, i, h].item() * distance) < 1e-4


def test_sasa_masks_and_initial_tau():
    torch.manual_seed(0)
    attention = ScaleAdaptiveSelfAttention(16, num_heads=4, dropout=0.0).eval()
    assert torch.all(attention.gen_tau.weight == 0) and 0 <= attention.gen_tau.bias.min() <= attention.gen_tau.bias.max() <= 2
    centres, feat = torch.randn(1, 4, 2), torch.randn(1, 4, 16)
    block = torch.zeros(4, 4, dtype=torch.bool)
    block[0, 3] = True  # query 0 may not see query 3
    out = attention(centres, feat, block)
    changed = feat.clone()
    changed[0, 3] += 5.0
    out_changed = attention(centres, changed, block)
    torch.testing.assert_close(out[0, 0], out_changed[0, 0])  # query 0 does not depend on query 3


def test_denoising_attention_mask_by_hand():
    mask = denoising_attention_mask(num_groups=2, group_size=2, num_queries=2, device=torch.device("cpu"))
    expected = torch.tensor(
        [
            [0, 0, 1, 1, 0, 0],
            [0, 0, 1, 1, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0, 0],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)


def test_pillar_queries_grid_and_denoising():
    queries = PillarQueries(4, 8, 10, PC_RANGE, dn_groups=3, dn_box_noise=0.5, dn_label_noise=0.0)
    boxes, feat, mask, targets = queries(1)
    assert mask is None and targets is None and boxes.shape == (1, 4, 10)
    torch.testing.assert_close(boxes[0, :, :2], torch.tensor([[0.25, 0.25], [0.25, 0.75], [0.75, 0.25], [0.75, 0.75]]))
    assert torch.all(boxes[0, :, 2] == 0) and torch.all(boxes[0, :, 5] == 1.5) and torch.all(feat[0, :, -1] == 0)
    gt = torch.tensor([[10.0, -5.0, 0.5, 2.0, 4.0, 1.6, 0.3, 1.0, 0.0]])
    boxes, feat, mask, targets = queries(2, [gt, gt[:0]], [torch.tensor([2]), torch.zeros(0, dtype=torch.long)])
    assert boxes.shape == (2, 3 + 4, 10) and mask.shape == (7, 7) and targets.valid.tolist() == [[True] * 3, [False] * 3]
    centre = to_boxes(boxes[0, :3], PC_RANGE)[:, :3]
    assert torch.all((centre - gt[0, :3]).abs() <= gt[0, 3:6] / 2 * 0.5 + 1e-4)  # noise within wlh / 2 * scale
    torch.testing.assert_close(boxes[0, :3, 3:], encode_boxes(gt)[:, 3:].expand(3, -1))  # size/yaw/velocity exact
    torch.testing.assert_close(feat[0, :3, :-1], queries.label_enc.weight[2].expand(3, -1))  # no label noise here
    assert torch.all(feat[0, :3, -1] == 1) and torch.all(feat[1, :3] == 0)  # indicator; padded slots zero


def test_query_box_coder_round_trip():
    gt = torch.tensor([[10.0, -5.0, 0.5, 2.0, 4.0, 1.6, 0.3, 1.0, -2.0]])
    codes = encode_boxes(gt)
    internal = torch.cat([normalize_xyz(codes[:, :3], PC_RANGE), codes[:, 3:]], dim=-1)
    torch.testing.assert_close(to_boxes(internal, PC_RANGE), gt)


def test_normalize_images_and_grid_mask():
    images = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    normalised = normalize_images(images)
    assert abs(normalised[0, 0, 0, 0].item() - (255 - 123.675) / 58.395) < 1e-5
    mask = GridMask(prob=1.0).train()
    torch.manual_seed(0)
    masked = mask(torch.ones(2, 3, 3, 64, 176))  # [B, T*N, 3, H, W]
    assert torch.equal(masked[:, :1].expand_as(masked), masked)  # one mask for all images of a sample
    dropped = 1 - masked[:, 0, 0].mean().item()
    assert 0.05 < dropped < 0.6
    assert torch.equal(mask.eval()(torch.ones(2, 3, 64, 176)), torch.ones(2, 3, 64, 176))


def test_forward_backward_tiny_student():
    torch.manual_seed(0)
    model = SparseBEV(tiny_config(num_frames=3)).train()
    batch = make_batch(batch_size=2, num_frames=3, image_size=(32, 96))
    output = model(batch)
    assert output.pred_logits.shape == (2, 9, 10) and output.pred_boxes.shape == (2, 9, 10)
    assert output.query_features.shape == (2, 9, 32) and len(output.aux_logits) == 1
    assert [tuple(f.shape) for f in output.pv_features] == [(2, 3, 6, 32, 32 // s, 96 // s) for s in (4, 8, 16, 32)]
    assert output.dn is not None and output.dn.logits.shape == (2, 2, 2 * 1, 10)  # L, B, groups x max GT count (0 and 1), K
    losses = model.criterion(output, batch)
    assert {"loss_cls", "loss_bbox", "loss_cls_0", "loss_bbox_0", "loss_cls_dn", "loss_bbox_dn_0"} <= set(losses)
    total = sum(losses[k] * model.criterion.weight_dict[k] for k in losses)
    assert torch.isfinite(total)
    total.backward()
    layer = model.decoder.layer
    for param in [layer.sampling.sampling_offset.weight, layer.mixing.parameter_generator.weight, layer.self_attn.gen_tau.weight,
                  model.queries.init_query_bbox.weight, model.backbone.layer4[0].conv1.weight]:  # fmt: skip
        assert param.grad is not None and param.grad.abs().sum() > 0
    assert model.backbone.layer1[0].conv1.weight.grad is None  # frozen stage


def test_offline_teacher_uses_future_frames_and_student_refuses_them():
    torch.manual_seed(0)
    batch = make_batch(batch_size=1, num_frames=2, num_future=2)
    teacher = SparseBEV(tiny_config(num_frames=4, offline=True)).eval()
    with torch.no_grad():
        output = teacher(batch)
        assert output.pv_features[0].shape[1] == 4
        changed = make_batch(batch_size=1, num_frames=2, num_future=2)
        changed.future_images = torch.zeros_like(changed.future_images)
        assert not torch.allclose(teacher(changed).pred_logits, output.pred_logits)  # the future matters
    student = SparseBEV(tiny_config(num_frames=2)).eval()
    with pytest.raises(ValueError, match="future"):
        student(batch)
    with torch.no_grad():
        assert student(batch.student_view()).pred_logits.shape == (1, 9, 10)
    with pytest.raises(ValueError, match="num_frames"):
        student(batch.student_view(num_frames=1))


def test_online_cached_path_equals_full_forward():
    torch.manual_seed(0)
    model = SparseBEV(tiny_config(num_frames=3)).eval()
    stream = make_batch(batch_size=1, num_frames=4)  # frames 3, 2, 1, 0 of a video
    previous = stream.student_view(num_frames=3)
    previous.images = stream.images[:, 1:4]  # the sample one step earlier: frames 1..3 of the stream
    current = stream.student_view(num_frames=3)
    online = OnlineSparseBEV(model, max_cached_frames=8)
    online(previous, frame_keys=[["f1", "f2", "f3"]])
    assert online.last_backbone_frames == 3
    cached = online(current, frame_keys=[["f0", "f1", "f2"]])
    assert online.last_backbone_frames == 1  # only the new frame went through the backbone
    with torch.no_grad():
        full = model(current)
    torch.testing.assert_close(cached.pred_logits, full.pred_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cached.pred_boxes, full.pred_boxes, rtol=1e-4, atol=1e-5)
    detections = model.postprocess(full)
    assert len(detections) == 1 and detections[0].boxes.shape[1] == 9


def test_stop_past_grad_keeps_outputs_and_trains_on_the_current_frame_only():
    torch.manual_seed(0)
    config = tiny_config(num_frames=2, dropout=0.0, grid_mask=False)
    config = SparseBEVConfig(**{**config.__dict__, "dn_groups": 0})
    full = SparseBEV(config).train()
    stopped = SparseBEV(SparseBEVConfig(**{**config.__dict__, "stop_past_grad": True})).train()
    stopped.load_state_dict(full.state_dict())
    batch = make_batch(batch_size=1, num_frames=2)
    out_full, out_stopped = full(batch), stopped(batch)
    torch.testing.assert_close(out_full.pred_logits, out_stopped.pred_logits)
    out_full.pv_features[3][:, 1:].sum().backward()  # a loss on the past frame only
    out_stopped.pv_features[3][:, 1:].sum().backward()
    assert full.backbone.layer4[0].conv1.weight.grad.abs().sum() > 0
    assert stopped.backbone.layer4[0].conv1.weight.grad.abs().sum() == 0  # nothing reaches it from the past frame
