"""DistillationObjective with tiny SparseBEV / StreamPETR models on the CPU: losses, gradients, clean student."""

import dataclasses

import numpy as np
import pytest
import torch

from ftkd.distill.config import DistillConfig
from ftkd.distill.objective import build_distillation_objective
from ftkd.distill.teacher import Teacher, teacher_view
from ftkd.models.build import build_model
from ftkd.models.common.config import BackboneConfig
from ftkd.models.sparsebev.config import SparseBEVConfig
from ftkd.models.streampetr.config import StreamPETRConfig
from ftkd.structures import Batch, SampleMeta

BACKBONE = BackboneConfig(depth=18, fpn_channels=32, channels_last=False)
TEACHER = SparseBEVConfig(
    offline=True, backbone=BACKBONE, embed_dims=32, num_queries=16, num_layers=2, num_heads=4, ffn_dims=64,
    num_frames=5, num_points=2, out_points=8, dn_groups=2,
)  # fmt: skip
STUDENT = dataclasses.replace(TEACHER, offline=False, num_frames=2, num_queries=9)
STREAM_STUDENT = StreamPETRConfig(
    backbone=dataclasses.replace(BACKBONE, out_levels=(2, 3), frozen_stages=0), embed_dims=16, num_queries=8,
    num_propagated=4, memory_len=8, num_layers=2, num_heads=4, ffn_dims=32, depth_bins=8, dn_groups=2,
)  # fmt: skip


def make_batch(B=2, T=3, F=2, seed=0, scene_start=True) -> Batch:
    """A random batch of tiny images: T past/current frames 0.5 s apart, F future frames."""
    generator = torch.Generator().manual_seed(seed)
    N, H, W = 6, 32, 96
    lidar2img = torch.eye(4).repeat(B, T + F, N, 1, 1)
    lidar2img[..., 0, 0] = lidar2img[..., 1, 1] = 40.0
    lidar2img[..., 0, 2], lidar2img[..., 1, 2] = 48.0, 16.0
    offsets = torch.cat([torch.arange(T) * 0.5, -(torch.arange(F) + 1) * 0.5]).float()
    return Batch(
        images=torch.randint(0, 255, (B, T, N, 3, H, W), dtype=torch.uint8, generator=generator),
        future_images=torch.randint(0, 255, (B, F, N, 3, H, W), dtype=torch.uint8, generator=generator) if F else None,
        lidar2img=lidar2img,
        intrinsics=torch.eye(3).repeat(B, T + F, N, 1, 1),
        time_offsets=offsets.expand(B, T + F).clone(),
        frame_valid=torch.ones(B, T + F, dtype=torch.bool),
        ego_pose=torch.eye(4, dtype=torch.float64).repeat(B, 1, 1),
        timestamp=torch.full((B,), 1.0e9 + seed * 0.5, dtype=torch.float64),
        scene_start=torch.full((B,), scene_start),
        gt_boxes=[torch.tensor([[8.0, 2.0, 0.5, 2.0, 4.5, 1.6, 0.3, 3.0, 0.0]]) for _ in range(B)],
        gt_labels=[torch.zeros(1, dtype=torch.long) for _ in range(B)],
        meta=[SampleMeta(f"s{b}", "scene", 0.0, np.eye(4)) for b in range(B)],
    )


def make_objective(student_config=STUDENT, teacher_config=TEACHER, **options):
    torch.manual_seed(0)
    teacher_model = build_model(teacher_config)
    num_future = teacher_config.num_frames - 3 if teacher_config.offline else 0
    teacher = Teacher(teacher_model, num_frames=3, num_future_frames=num_future, precision="bf16")
    student = build_model(student_config)
    return build_distillation_objective(student, student_config, teacher, teacher_config, DistillConfig(**options))


def weighted_total(losses, weight_dict):
    return sum(losses[k] * weight_dict[k] for k in losses if k in weight_dict)


def test_losses_gradients_reach_student_and_generators_never_teacher():
    objective = make_objective()
    objective.train()
    assert not objective.teacher.training and not objective.teacher.model.training
    assert objective.model.training
    seen = []
    hook = objective.model.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    losses, output = objective(make_batch())
    hook.remove()
    assert seen[0].future_images is None and seen[0].lidar2img.shape[1] == 2  # the student never sees the future
    for key in ("loss_cls", "loss_bbox", "loss_pv", "loss_query", "loss_fld_cls", "loss_fld_box"):
        assert key in losses and key in objective.weight_dict and torch.isfinite(losses[key])
    assert objective.weight_dict["loss_pv"] == 1e-3 and objective.weight_dict["loss_query"] == 16.0
    assert objective.weight_dict["loss_fld_cls"] == 2.0 and objective.weight_dict["loss_fld_box"] == 0.25
    assert losses["loss_pv"] > 0 and losses["loss_query"] > 0 and losses["loss_fld_cls"] > 0
    weighted_total(losses, objective.weight_dict).backward()
    assert all(p.grad is None for p in objective.teacher.parameters())
    student_grads = [p.grad for p in objective.model.backbone.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in student_grads)
    for name in ("pv_ffr", "query_ffr"):
        generator = objective.heads[name].generator
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in generator.parameters()), name
    assert set(objective.extra_state_dict()) == set(objective.heads.state_dict())
    assert not any(k.startswith("teacher") for k in objective.extra_state_dict())


def test_student_must_not_receive_future_and_teacher_view():
    objective = make_objective()
    with pytest.raises(ValueError, match="future frames"):
        objective(make_batch(F=0))
    batch = make_batch(T=4)
    view = teacher_view(batch, 3)
    assert view.images.shape[1] == 3 and view.future_images.shape[1] == 2 and view.lidar2img.shape[1] == 5
    torch.testing.assert_close(view.time_offsets[0], torch.tensor([0.0, 0.5, 1.0, -0.5, -1.0]))
    with pytest.raises(ValueError, match="offline"):
        make_objective(student_config=TEACHER)


def test_saved_student_is_a_baseline_checkpoint():
    objective = make_objective(fld_layers="all", baseline="mgd")
    optimizer = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=1e-3)
    objective.train()
    losses, _ = objective(make_batch())
    assert "loss_fld_cls_0" in losses and "loss_mgd" in losses and "loss_fld_cls_0" in objective.weight_dict
    weighted_total(losses, objective.weight_dict).backward()
    optimizer.step()
    baseline = build_model(STUDENT)
    student_state = objective.model.state_dict()
    assert {k: v.shape for k, v in student_state.items()} == {k: v.shape for k, v in baseline.state_dict().items()}
    baseline.load_state_dict(student_state, strict=True)
    batch = make_batch(seed=5).student_view(2)
    with torch.no_grad():
        expected = objective.model.eval()(batch)
        got = baseline.eval()(batch)
    torch.testing.assert_close(got.pred_logits, expected.pred_logits)
    torch.testing.assert_close(got.pred_boxes, expected.pred_boxes)


@pytest.mark.parametrize(
    "options",
    [
        dict(baseline="fitnet", pv_ffr=False, query_ffr=False, fld=False),
        dict(baseline="logit_kd", pv_ffr=False, query_ffr=False, fld=False),
        dict(fld_queries="foreground", tsa_mode="learned", tsa_keys="all_cameras", pv_frames="current"),
        dict(teacher_image_size=(64, 192)),  # teacher maps 2x the student's: the target is resized
    ],
)
def test_baselines_and_ablations_are_configs(options):
    objective = make_objective(**options)
    losses, _ = objective.train()(make_batch())
    kd = {k for k in objective.weight_dict if k not in objective.model.criterion.weight_dict}
    assert kd <= set(losses) and all(torch.isfinite(losses[k]) for k in kd)
    weighted_total(losses, objective.weight_dict).backward()
    assert all(p.grad is None for p in objective.teacher.parameters())


def test_no_future_teacher():
    online_teacher = dataclasses.replace(TEACHER, offline=False, num_frames=3)
    with pytest.raises(ValueError, match="teacher_future"):
        make_objective(teacher_config=online_teacher)
    objective = make_objective(teacher_config=online_teacher, teacher_future=False)
    losses, _ = objective.train()(make_batch(F=0))
    assert losses["loss_pv"] > 0


def test_distillation_steps_end_to_end_sparsebev_and_streaming_streampetr():
    for student_config in (STUDENT, STREAM_STUDENT):
        objective = make_objective(student_config=student_config)
        assert objective.student_frames == (1 if student_config is STREAM_STUDENT else 2)
        params = [p for p in objective.parameters() if p.requires_grad]
        assert all(not p.requires_grad for p in objective.teacher.parameters())
        optimizer = torch.optim.AdamW(params, lr=1e-3)
        teacher_before = {k: v.clone() for k, v in objective.teacher.state_dict().items()}
        objective.train()
        history = []
        for step in range(2 if student_config is STUDENT else 3):  # streaming: frames of one scene in order
            losses, output = objective(make_batch(seed=step, scene_start=step == 0))
            total = weighted_total(losses, objective.weight_dict)
            assert torch.isfinite(total)
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            history.append({k: v.item() for k, v in losses.items()})
        assert all(torch.equal(v, objective.teacher.state_dict()[k]) for k, v in teacher_before.items())
        assert history[0]["loss_query"] != history[-1]["loss_query"]


def test_teacher_resize_view_scales_geometry():
    from ftkd.distill.teacher import resize_view

    batch = make_batch(B=1, T=2, F=1)
    big = resize_view(batch, (64, 192))
    assert big.images.shape[-2:] == (64, 192) and big.future_images.shape[-2:] == (64, 192)
    point = torch.tensor([3.0, 1.0, 20.0, 1.0])
    before = batch.lidar2img[0, 0, 0] @ point
    after = big.lidar2img[0, 0, 0] @ point
    torch.testing.assert_close(after[:2] / after[2], 2 * before[:2] / before[2])
    torch.testing.assert_close(big.intrinsics[0, 0, 0, :2, :2], 2 * batch.intrinsics[0, 0, 0, :2, :2])
    assert resize_view(batch, (32, 96)) is batch


def test_distillation_data_config():
    from ftkd.data.config import DataConfig
    from ftkd.distill.teacher import distillation_data_config

    student = DataConfig(num_past_frames=7, image_size=(256, 704))
    teacher = DataConfig(num_past_frames=7, num_future_frames=7, image_size=(512, 1408))
    data = distillation_data_config(student, teacher, student_frames=8)
    assert (data.num_past_frames, data.num_future_frames, data.image_size) == (7, 7, (256, 704))
    stream = DataConfig(num_past_frames=0, frame_source="keyframes")
    data = distillation_data_config(stream, teacher, student_frames=1)
    assert (data.num_past_frames, data.num_future_frames, data.frame_source) == (7, 7, "sweeps")
    with pytest.raises(ValueError, match="frame_source"):
        distillation_data_config(DataConfig(frame_source="keyframes"), teacher, student_frames=8)

