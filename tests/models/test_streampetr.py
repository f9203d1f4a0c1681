"""StreamPETR: position embedding, memory alignment/reset, denoising rule and a streamed forward/backward."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from nuscenes.utils.geometry_utils import view_points

from ftkd.config import load_config
from ftkd.engine.checkpoint import save_checkpoint
from ftkd.models.common.config import BackboneConfig
from ftkd.models.sparsebev.config import SparseBEVConfig
from ftkd.models.sparsebev.model import SparseBEV
from ftkd.models.streampetr.config import StreamPETRConfig
from ftkd.models.streampetr.denoising import make_denoising_queries, temporal_attention_mask
from ftkd.models.streampetr.memory import MemoryState, align_memory, push_memory
from ftkd.models.streampetr.mln import MotionLayerNorm
from ftkd.models.streampetr.model import StreamPETR
from ftkd.models.streampetr.position_embedding import (
    PositionEmbedding3D,
    frustum_points,
    linear_increasing_depths,
    ray_distance_bias,
    token_centres,
    token_rays,
)
from ftkd.structures import Batch, SampleMeta

H, W = 64, 176


def camera(yaw_deg: float, focal: float = 100.0) -> tuple[torch.Tensor, torch.Tensor]:
    """lidar2img [4, 4] and K [3, 3] of a camera 1.5 m ahead of/above the ego origin looking along `yaw_deg`."""
    yaw = math.radians(yaw_deg)
    forward = torch.tensor([math.cos(yaw), math.sin(yaw), 0.0])
    right = torch.tensor([math.sin(yaw), -math.cos(yaw), 0.0])
    down = torch.tensor([0.0, 0.0, -1.0])
    rotation = torch.stack([right, down, forward])  # rows: camera axes in the ego frame
    centre = torch.tensor([1.5 * math.cos(yaw), 1.5 * math.sin(yaw), 1.5])
    K = torch.tensor([[focal, 0.0, W / 2], [0.0, focal, H / 2], [0.0, 0.0, 1.0]])
    ego2cam = torch.eye(4)
    ego2cam[:3, :3] = rotation
    ego2cam[:3, 3] = -rotation @ centre
    K4 = torch.eye(4)
    K4[:3, :3] = K
    return K4 @ ego2cam, K


def rig() -> tuple[torch.Tensor, torch.Tensor]:
    cams = [camera(yaw) for yaw in (0, -55, 55, 180, 110, -110)]
    return torch.stack([c[0] for c in cams]), torch.stack([c[1] for c in cams])


def tiny_config(**overrides) -> StreamPETRConfig:
    values = dict(
        backbone=BackboneConfig(depth=18, frozen_stages=0, out_levels=(2, 3), fpn_channels=32, channels_last=False),
        embed_dims=32,
        num_queries=20,
        num_propagated=6,
        memory_len=18,
        num_layers=2,
        num_heads=4,
        ffn_dims=64,
        depth_bins=8,
        dn_groups=2,
    )
    values.update(overrides)
    return StreamPETRConfig(**values)


def yaw_pose(yaw: float, translation: tuple[float, float, float]) -> torch.Tensor:
    pose = torch.eye(4, dtype=torch.float64)
    pose[:2, :2] = torch.tensor([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]], dtype=torch.float64)
    pose[:3, 3] = torch.tensor(translation, dtype=torch.float64)
    return pose


def make_batch(step: int, scene_start: list[bool], seed: int = 0) -> Batch:
    """Two slots driving forward at 10 m/s, keyframes 0.5 s apart; slot 0 sees one car, slot 1 none."""
    B = len(scene_start)
    generator = torch.Generator().manual_seed(seed + step)
    lidar2img, K = rig()
    poses = torch.stack([yaw_pose(0.1 * b, (5.0 * step, 100.0 * b, 0.0)) for b in range(B)])
    boxes = [torch.tensor([[12.0 - 0.5 * step, 3.0, 0.8, 1.9, 4.5, 1.6, 0.2, 1.0, 0.0]])] + [torch.zeros(0, 9)] * (B - 1)
    labels = [torch.tensor([0])] + [torch.zeros(0, dtype=torch.long)] * (B - 1)
    return Batch(
        images=torch.randint(0, 256, (B, 1, 6, 3, H, W), dtype=torch.uint8, generator=generator),
        lidar2img=lidar2img.expand(B, 1, 6, 4, 4).clone(),
        intrinsics=K.expand(B, 1, 6, 3, 3).clone(),
        time_offsets=torch.zeros(B, 1),
        frame_valid=torch.ones(B, 1, dtype=torch.bool),
        ego_pose=poses,
        timestamp=torch.full((B,), 1.5e9 + 0.5 * step, dtype=torch.float64),
        scene_start=torch.tensor(scene_start),
        gt_boxes=boxes,
        gt_labels=labels,
        meta=[SampleMeta(f"s{step}_{b}", f"scene{b}", 1.5e9 + 0.5 * step, np.eye(4)) for b in range(B)],
    )


# ----------------------------------------------------------------------------------------- position embedding
def test_linear_increasing_depth_bins_match_the_formula():
    depths = linear_increasing_depths(64, 1.0, 61.2)
    step = (61.2 - 1.0) / (64 * 65)
    assert depths[0].item() == pytest.approx(1.0)
    assert depths[1].item() == pytest.approx(1.0 + 2 * step)
    assert depths[63].item() == pytest.approx(1.0 + 63 * 64 * step)  # ~59.35 m
    assert (depths.diff().diff() > 0).all()  # bins widen with depth


def test_frustum_point_of_a_known_pixel_and_depth_is_the_hand_computed_point():
    lidar2img, _ = camera(0.0)
    centres = token_centres(4, 11, 16.0, torch.device("cpu"))
    assert centres[1, 3].tolist() == [56.0, 24.0]  # token (row 1, col 3) -> pixel centre (3*16+8, 1*16+8)
    depths = torch.tensor([2.0, 10.0, 40.0])
    points = frustum_points(lidar2img[None, None], centres, depths)  # [1, 1, 4, 11, 3, 3]
    for k, d in enumerate(depths.tolist()):
        # front camera at (1.5, 0, 1.5): x = forward depth, y = left = -(u - cx) d / f, z = up = -(v - cy) d / f
        expected = [1.5 + d, -(56.0 - W / 2) * d / 100.0, 1.5 - (24.0 - H / 2) * d / 100.0]
        assert points[0, 0, 1, 3, k].tolist() == pytest.approx(expected, abs=1e-4)


def test_frustum_points_reproject_onto_their_pixels_with_the_devkit():
    lidar2img, K = rig()
    centres = token_centres(4, 11, 16.0, torch.device("cpu"))
    depths = linear_increasing_depths(8, 1.0, 61.2)
    points = frustum_points(lidar2img[None], centres, depths)[0]  # [N, h, w, D, 3]
    for n in range(6):
        ego2cam = torch.linalg.inv(torch.block_diag(K[n], torch.ones(1))) @ lidar2img[n]
        cam_points = ego2cam[:3, :3] @ points[n].reshape(-1, 3).T + ego2cam[:3, 3:4]  # [3, P]
        pixels = view_points(cam_points.double().numpy(), K[n].double().numpy(), normalize=True)[:2]
        expected = centres[:, :, None].expand(4, 11, 8, 2).reshape(-1, 2).T.numpy()
        np.testing.assert_allclose(pixels, expected, atol=1e-3)
        np.testing.assert_allclose(cam_points[2].numpy(), depths.repeat(44).numpy(), rtol=1e-5)


def test_position_embedding_cone_and_shapes():
    pe = PositionEmbedding3D(32, 64, (1.0, 61.2), (-61.2, -61.2, -8.0, 61.2, 61.2, 12.0))
    lidar2img, K = rig()
    pos, cone = pe(lidar2img[None], K[None], (4, 11), (H, W))
    assert pos.shape == (1, 6 * 44, 32) and cone.shape == (1, 6 * 44, 8)
    assert cone[0, 0, :2].tolist() == pytest.approx([0.1, 0.1])  # f / 1000
    normalized = pe.normalized_points(lidar2img[None], (4, 11), (H, W))[0, 0, 0, 0]  # [D, 3], first token
    assert cone[0, 0, 2:5].tolist() == pytest.approx(normalized[63].tolist())
    assert cone[0, 0, 5:8].tolist() == pytest.approx(normalized[34].tolist())


# ------------------------------------------------------------------------------------------------- memory
def test_memory_alignment_moves_a_memorised_point_by_the_ego_motion():
    pose0 = yaw_pose(0.3, (100.0, 50.0, 1.0))
    motion = yaw_pose(math.pi / 2, (5.0, 0.0, 0.0))  # drive 5 m forward, then turn 90 deg left
    pose1 = pose0 @ motion
    t0, t1 = torch.tensor([1.5e9], dtype=torch.float64), torch.tensor([1.5e9 + 0.5], dtype=torch.float64)
    state = align_memory(MemoryState.empty(1, 4, 8, torch.device("cpu")), pose0[None], t0, torch.tensor([False]), None)
    points = torch.tensor([[[10.0, 0.0, 0.5], [0.0, 0.0, 0.0], [-3.0, 4.0, 0.0]]])
    scores = torch.tensor([[0.9, 0.1, 0.5]])
    embedding = torch.arange(3.0).view(1, 3, 1).expand(1, 3, 8)
    velocity = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [2.0, 2.0]]])
    state = push_memory(state, embedding, points, velocity, scores, 2, pose0[None], t0)
    aligned = align_memory(state, pose1[None], t1, torch.tensor([True]), None)
    # the two best queries, newest first by score: (10, 0, 0.5) then (-3, 4, 0); static points seen from the new pose
    assert aligned.reference_points[0, 0].tolist() == pytest.approx([0.0, -5.0, 0.5], abs=1e-9)
    assert aligned.reference_points[0, 1].tolist() == pytest.approx([4.0, 8.0, 0.0], abs=1e-9)
    assert aligned.embedding[0, :2, 0].tolist() == [0.0, 2.0]
    assert aligned.velocity[0, :2].tolist() == [[1.0, 0.0], [2.0, 2.0]]
    assert aligned.timestamp[0, :2, 0].tolist() == pytest.approx([0.5, 0.5], abs=1e-6)
    torch.testing.assert_close(aligned.ego_pose[0, 0], torch.linalg.inv(motion))  # stored frame -> current frame
    assert aligned.embedding[0, 2:].abs().sum() == 0  # never-filled entries stay empty


def test_push_keeps_newest_first_and_truncates():
    pose, t = torch.eye(4, dtype=torch.float64)[None], torch.tensor([10.0], dtype=torch.float64)
    state = align_memory(MemoryState.empty(1, 4, 2, torch.device("cpu")), pose, t, torch.tensor([False]), None)
    for step in range(3):
        embedding = torch.full((1, 3, 2), float(step))
        state = push_memory(state, embedding, torch.zeros(1, 3, 3), torch.zeros(1, 3, 2), torch.rand(1, 3), 2, pose, t + 0.5 * step)
        state = align_memory(state, pose, t + 0.5 * (step + 1), torch.tensor([True]), None)
    assert state.embedding[0, :, 0].tolist() == [2.0, 2.0, 1.0, 1.0]  # frame 0 fell out of the 4-entry queue
    assert state.timestamp[0, :, 0].tolist() == pytest.approx([0.5, 0.5, 1.0, 1.0])


def test_memory_reset_erases_only_new_sequences():
    state = MemoryState(
        embedding=torch.ones(2, 4, 3),
        reference_points=torch.ones(2, 4, 3, dtype=torch.float64),
        timestamp=torch.full((2, 4, 1), -1.0, dtype=torch.float64),
        ego_pose=torch.eye(4, dtype=torch.float64).repeat(2, 4, 1, 1),
        velocity=torch.ones(2, 4, 2),
    )
    pseudo = torch.tensor([[7.0, 8.0, 9.0], [1.0, 2.0, 3.0]])
    identity = torch.eye(4, dtype=torch.float64)[None].expand(2, 4, 4, 4)
    aligned = align_memory(state, identity[:, 0], torch.zeros(2, dtype=torch.float64), torch.tensor([True, False]), pseudo)
    assert aligned.embedding[0].eq(1).all() and aligned.reference_points[0].eq(1).all()
    assert aligned.embedding[1].eq(0).all() and aligned.velocity[1].eq(0).all() and aligned.timestamp[1].eq(0).all()
    assert aligned.reference_points[1, :2].tolist() == pseudo.tolist() and aligned.reference_points[1, 2:].eq(0).all()
    torch.testing.assert_close(aligned.ego_pose[1, :2], identity[0, :2])
    assert aligned.ego_pose[1, 2:].eq(0).all()


def test_motion_layer_norm_starts_as_a_plain_layer_norm():
    mln = MotionLayerNorm(180, 16)
    x, condition = torch.randn(3, 5, 16), torch.randn(3, 5, 180)
    torch.testing.assert_close(mln(x, condition), torch.nn.functional.layer_norm(x, (16,)))


# ---------------------------------------------------------------------------------------------- denoising
def test_denoising_rule_noise_within_half_size_and_far_noise_is_background():
    boxes = [torch.tensor([[10.0, -5.0, 1.0, 2.0, 4.0, 1.5, 0.0, 0.0, 0.0]]), torch.zeros(0, 9)]
    labels = [torch.tensor([3]), torch.zeros(0, dtype=torch.long)]
    pc_range = torch.tensor([-51.2, -51.2, -3.0, 51.2, 51.2, 5.0])
    torch.manual_seed(0)
    dn = make_denoising_queries(boxes, labels, 50, 1.0, 0.75, 10, pc_range)
    torch.manual_seed(0)
    noise = torch.rand(2, 50, 3) * 2 - 1  # the same draw, in the same order
    centre = dn.reference_points[0] * (pc_range[3:] - pc_range[:3]) + pc_range[:3]  # [50, 3]
    expected = torch.tensor([10.0, -5.0, 1.0]) + noise[0] * torch.tensor([2.0, 1.0, 0.75])  # (l, w, h) / 2
    torch.testing.assert_close(centre, expected, atol=1e-4, rtol=0)
    negative = noise[0].norm(dim=-1) > 0.75
    assert dn.target_labels[0].tolist() == [10 if neg else 3 for neg in negative.tolist()]
    assert dn.valid[0].all() and not dn.valid[1].any() and dn.target_labels[1].eq(10).all()
    assert dn.target_boxes[0, 0, :3].tolist() == [10.0, -5.0, 1.0]  # targets are the un-noised boxes


def test_temporal_attention_mask_hand_case():
    boxes = [torch.zeros(2, 9), torch.zeros(1, 9)]
    dn = make_denoising_queries(boxes, [torch.zeros(2, dtype=torch.long), torch.zeros(1, dtype=torch.long)], 2, 1.0,
                                0.75, 10, torch.tensor([-1.0, -1, -1, 1, 1, 1]))
    allowed = temporal_attention_mask(dn, num_queries=2, num_memory_keys=1).int()
    expected = [
        # dn group 0 | dn group 1 | queries | memory
        [1, 1, 0, 0, 1, 1, 1],
        [1, 1, 0, 0, 1, 1, 1],
        [0, 0, 1, 1, 1, 1, 1],
        [0, 0, 1, 1, 1, 1, 1],
        [0, 0, 0, 0, 1, 1, 1],
        [0, 0, 0, 0, 1, 1, 1],
    ]
    assert allowed.tolist() == expected


# ------------------------------------------------------------------------------------------------ the model
def test_streamed_training_carries_detached_memory_and_resets_at_scene_start():
    torch.manual_seed(0)
    config = tiny_config()
    model = StreamPETR(config).train()
    Q = config.num_queries + config.num_propagated
    k = config.num_propagated
    for step, start in enumerate([[True, True], [False, False], [False, True]]):
        batch = make_batch(step, start)
        output = model(batch)
        losses = model.criterion(output, batch)
        assert {"loss_cls", "loss_bbox", "loss_cls_0", "loss_cls_dn", "loss_bbox_dn"} <= set(losses)
        total = sum(losses[key] * model.criterion.weight_dict[key] for key in losses)
        assert torch.isfinite(total)
        model.zero_grad()
        total.backward()
        assert model.reference_points.weight.grad is not None and model.time_embedding[0].weight.grad.abs().sum() > 0
        memory = model.memory
        assert not memory.embedding.requires_grad and not memory.reference_points.requires_grad
        assert output.pred_logits.shape == (2, Q, 10) and output.pred_boxes.shape == (2, Q, 10)
        assert output.query_features.shape == (2, Q, 32) and len(output.aux_logits) == config.num_layers - 1
        assert output.dn.logits.shape == (config.num_layers, 2, 2, 10)  # 2 groups x 1 box
        assert [f.shape[:3] for f in output.pv_features] == [(2, 1, 6)] * 2
        filled = memory.embedding.abs().sum(-1).gt(0).sum(-1).tolist()
        # slot 0 accumulates k entries per frame; slot 1 restarts at step 2
        assert filled[0] == k * (step + 1)
        assert filled[1] == (k if step == 2 else k * (step + 1))
        # between frames: timestamps are -t_stored (newest first)
        assert memory.timestamp[0, 0, 0].item() == pytest.approx(-(1.5e9 + 0.5 * step))
    assert memory.timestamp[0, k, 0].item() == pytest.approx(-(1.5e9 + 0.5))
    # grad-free pseudo reference points, a plain buffer
    assert "pseudo_reference_points" in dict(model.named_buffers())


def test_inference_postprocess_and_memory_checkpoint_round_trip():
    torch.manual_seed(0)
    model = StreamPETR(tiny_config(max_detections=50)).eval()
    with torch.no_grad():
        model(make_batch(0, [True, True]))
        saved = {key: value.clone() for key, value in model.memory_state_dict().items()}
        first = model(make_batch(1, [False, False]))
        model.reset_memory()
        model.load_memory_state_dict(saved)
        second = model(make_batch(1, [False, False]))
    torch.testing.assert_close(first.pred_logits, second.pred_logits)
    assert first.dn is None
    detections = model.postprocess(first)
    assert len(detections) == 2
    for det in detections:
        assert det.boxes.shape[1] == 9 and len(det.boxes) == len(det.scores) == len(det.labels) <= 50
        assert (det.scores[:-1] >= det.scores[1:]).all()
    # switching to training starts a fresh memory (no stream is shared between train and eval) ...
    model.train()
    model(make_batch(2, [False, False]))
    assert model.memory.embedding.abs().sum(-1).gt(0).sum(-1).tolist() == [6, 6]
    # ... but a training stream saved around an evaluation resumes where it was
    training_memory = model.memory_state_dict()
    model.eval()
    with torch.no_grad():
        model(make_batch(0, [True, True]))
    model.load_memory_state_dict(training_memory)
    model.train()
    model(make_batch(3, [False, False]))
    assert model.memory.embedding.abs().sum(-1).gt(0).sum(-1).tolist() == [12, 12]


def test_student_must_not_see_the_future():
    model = StreamPETR(tiny_config()).eval()
    batch = make_batch(0, [True])
    teacher_batch = Batch(**{**batch.__dict__, "future_images": batch.images.clone(),
                             "lidar2img": batch.lidar2img.repeat(1, 2, 1, 1, 1),
                             "intrinsics": batch.intrinsics.repeat(1, 2, 1, 1, 1),
                             "time_offsets": torch.tensor([[0.0, -0.5]]), "frame_valid": torch.ones(1, 2, dtype=bool)})
    with pytest.raises(ValueError, match="future_images"):
        model(teacher_batch)


@pytest.mark.parametrize("name", ["streampetr_r50", "streampetr_small", "streampetr_tiny"])
def test_configs_load(name):
    config = load_config(Path(__file__).parents[2] / "configs" / f"{name}.yaml")
    assert isinstance(config.model, StreamPETRConfig)
    assert config.data.frame_source == "keyframes" and config.data.num_past_frames == 0
    assert config.model.feature_level in config.model.backbone.out_levels
    assert config.model.num_propagated <= config.model.memory_len


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_step_equals_the_eager_forward():
    from ftkd.models.streampetr.online import CudaGraphStreamPETR

    torch.manual_seed(0)
    model = StreamPETR(tiny_config()).cuda().eval()
    runner = CudaGraphStreamPETR(model, batch_size=2, image_size=(H, W), dtype=None)
    with torch.no_grad():
        for step, start in enumerate([[True, True], [False, False], [False, True]]):
            batch = make_batch(step, start).to("cuda")
            torch.testing.assert_close(runner(batch).pred_logits, model(batch).pred_logits)


# ------------------------------------------------------------------------------------ regressions (learning review)
@pytest.mark.parametrize("name", ["streampetr_r50", "streampetr_small", "ftkd_streampetr_r50", "ftkd_streampetr_small"])
def test_backbone_lr_multiplier_spares_the_fpn(name):
    """The official lr_mult key is `img_backbone` (the ResNet); the FPN neck trains at the full rate."""
    from ftkd.engine.optim import lr_multiplier

    multipliers = load_config(Path(__file__).parents[2] / "configs" / f"{name}.yaml").train.lr_multipliers
    assert lr_multiplier("model.backbone.layer3.0.conv1.weight", multipliers) == 0.25
    assert lr_multiplier("model.backbone.conv1.weight", multipliers) == 0.25
    assert lr_multiplier("model.backbone.bn1.weight", multipliers) == 0.25
    assert lr_multiplier("model.backbone.lateral_convs.0.weight", multipliers) == 1.0
    assert lr_multiplier("model.backbone.fpn_convs.0.weight", multipliers) == 1.0
    assert lr_multiplier("model.position_embedding.encoder.0.weight", multipliers) == 1.0


def test_shrinking_test_batch_keeps_the_memory_of_the_remaining_slots():
    """The streaming test sampler drops finished slots from the end of the batch; slot 0 must keep its memory."""
    torch.manual_seed(0)
    model = StreamPETR(tiny_config()).eval()
    with torch.no_grad():
        model(make_batch(0, [True, True]))
        kept = model.memory.first(1)
        alone = StreamPETR(tiny_config()).eval()
        alone.load_state_dict(model.state_dict())
        alone.memory, alone._memory_training = kept, False
        expected = alone(make_batch(1, [False])).pred_logits
        shrunk = model(make_batch(1, [False])).pred_logits
    torch.testing.assert_close(shrunk, expected)
    assert model.memory.embedding[0].abs().sum(-1).gt(0).sum().item() == 2 * model.config.num_propagated


def test_centre_heatmap_peaks_where_the_centre_projects():
    """Hand case: a car 12 m ahead of the front camera paints a 1.0 peak at the token holding its projection."""
    from ftkd.models.streampetr.heatmap import centre_heatmap, gaussian_focal_loss

    lidar2img, K = rig()
    box = torch.tensor([[13.5, 2.0, 1.5, 1.9, 4.5, 1.6, 0.0, 0.0, 0.0]])  # 12 m ahead of the front camera at x=1.5
    # front camera: u = W/2 - 100 * y / depth = 88 - 16.67 = 71.3 -> col 4; v = H/2 - 100 * (z - 1.5) / 12 = 32 -> row 2
    heatmap, count = centre_heatmap([box], [torch.tensor([3])], lidar2img[None], K[None], (H, W), (4, 11), 10)
    assert count.item() == 1  # only the front camera sees it
    assert heatmap[0, 0, 2, 4, 3].item() == 1.0 and heatmap[0, 0, :, :, 3].eq(1).sum().item() == 1
    assert heatmap[0, 1:].sum().item() == 0 and heatmap[0, 0, ..., :3].sum().item() == 0
    assert 0 < heatmap[0, 0, 2, 5, 3].item() < 1  # a Gaussian falls off around the peak
    # the loss is lower for logits that agree with the heatmap than for the flipped ones
    good = torch.where(heatmap.eq(1), 5.0, -5.0)
    assert gaussian_focal_loss(good, heatmap) < gaussian_focal_loss(-good, heatmap)


def test_heatmap_loss_trains_the_backbone_only_when_enabled():
    torch.manual_seed(0)
    batch = make_batch(0, [True])
    off = StreamPETR(tiny_config()).train()
    assert off.heatmap_head is None and "loss_heatmap" not in off.criterion(off(batch), batch)
    model = StreamPETR(tiny_config(heatmap_weight=1.0)).train()
    output = model(batch)
    assert output.extra["heatmap_logits"].shape == (1, 6, 4, 11, 10)
    losses = model.criterion(output, batch)
    assert model.criterion.weight_dict["loss_heatmap"] == 1.0 and losses["loss_heatmap"] > 0
    losses["loss_heatmap"].backward()
    assert model.backbone.layer1[0].conv1.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert "heatmap_logits" not in model(make_batch(1, [False])).extra


# ------------------------------------------------------------------------------------- ray-distance attention bias
def test_ray_distance_bias_hand_case():
    """Front camera at (1.5, 0, 1.5) looking along +x; the token at the principal point sees the ray
    (1.5 + t, 0, 1.5), t >= 0: a point 3 m left of it is 3 m away, a point 4 m above the camera 4 m, and a point
    behind the camera is measured to the camera centre (5 m)."""
    lidar2img, _ = camera(0.0)
    centres = torch.tensor([[[W / 2, H / 2]]])  # [1, 1, 2]: one token at the principal point
    origins, directions = token_rays(lidar2img[None, None], centres)
    assert origins[0, 0].tolist() == pytest.approx([1.5, 0.0, 1.5], abs=1e-5)
    assert directions[0, 0, 0, 0].tolist() == pytest.approx([1.0, 0.0, 0.0], abs=1e-4)
    points = torch.tensor([[[11.5, 3.0, 1.5], [-3.5, 0.0, 1.5], [1.5, 0.0, 5.5]]])
    bias = ray_distance_bias(points, origins, directions, sigma=2.0)  # [1, 1, 3, 1]
    assert bias[0, 0, :, 0].tolist() == pytest.approx([-1.5, -2.5, -2.0], abs=1e-4)


def test_ray_distance_bias_matches_dense_ray_sampling_and_token_order():
    """Against a naive reference (the nearest of densely sampled points on each token's ray, depth 0..120 m), and the
    best token for a point seen through a token centre is that token, in the camera-major token order of the model."""
    lidar2img, _ = rig()
    h, w = 4, 11
    centres = token_centres(h, w, 16.0, torch.device("cpu"))
    origins, directions = token_rays(lidar2img[None], centres)
    generator = torch.Generator().manual_seed(0)
    points = (torch.rand(1, 5, 3, generator=generator) - 0.5) * torch.tensor([60.0, 60.0, 6.0])
    bias = ray_distance_bias(points, origins, directions, sigma=1.0)[0, 0]  # [5, N*h*w]
    samples = frustum_points(lidar2img[None], centres, torch.linspace(0.0, 120.0, 12001))[0]  # [N, h, w, S, 3]
    naive = (points[0, :, None, None, None, None] - samples[None]).norm(dim=-1).amin(-1)  # [5, N, h, w]
    torch.testing.assert_close(-bias, naive.reshape(5, -1), atol=0.02, rtol=0)
    for n, (i, j) in [(0, (1, 3)), (3, (2, 9)), (5, (0, 0))]:
        u, v = centres[i, j].tolist()
        depth = 17.0
        point = torch.linalg.inv(lidar2img[n].double()) @ torch.tensor([u * depth, v * depth, depth, 1.0]).double()
        token_bias = ray_distance_bias(point[None, None, :3].float(), origins, directions, sigma=1.0)[0, 0, 0]
        assert int(token_bias.argmax()) == n * h * w + i * w + j
        assert token_bias.max().item() == pytest.approx(0.0, abs=1e-3)


def test_ray_bias_option_changes_the_forward_only_when_enabled():
    """ray_bias_sigma > 0 changes the outputs of the same weights on the same batch, losses stay finite and the
    learned position embedding still gets gradients; the option adds no parameters."""
    outputs = {}
    for sigma in (0.0, 2.0):
        torch.manual_seed(0)
        model = StreamPETR(tiny_config(ray_bias_sigma=sigma, grid_mask=False)).train()
        torch.manual_seed(1)
        output = model(make_batch(0, [True, True]))
        losses = model.criterion(output, make_batch(0, [True, True]))
        sum(losses.values()).backward()
        assert all(torch.isfinite(v) for v in losses.values())
        assert model.position_embedding.encoder[0].weight.grad.abs().sum() > 0
        outputs[sigma] = (output.pred_boxes.detach(), sorted(model.state_dict()))
    assert outputs[0.0][1] == outputs[2.0][1]
    assert not torch.allclose(outputs[0.0][0], outputs[2.0][0])


def test_backbone_initialised_from_a_sparsebev_checkpoint(tmp_path):
    """`streampetr_sparsebev_init`: a trained SparseBEV's checkpoint gives StreamPETR its ResNet, not its FPN."""
    torch.manual_seed(0)
    sparsebev = SparseBEV(SparseBEVConfig(
        backbone=BackboneConfig(depth=18, fpn_channels=32, channels_last=False),
        embed_dims=32, num_heads=4, ffn_dims=32, num_queries=9, num_layers=1, num_frames=2,
    ))  # fmt: skip
    with torch.no_grad():  # trained-looking statistics, which a fresh BatchNorm would not have
        sparsebev.backbone.bn1.running_var.uniform_(0.5, 2.0)
    path = save_checkpoint({"config": "{}", "model": sparsebev.state_dict()}, tmp_path / "final.pt")
    model = StreamPETR(tiny_config(backbone=BackboneConfig(
        depth=18, frozen_stages=0, out_levels=(2, 3), fpn_channels=32, channels_last=False, pretrained=str(path))))
    source, target = sparsebev.backbone.state_dict(), model.backbone.state_dict()
    resnet_keys = [k for k in target if not k.startswith(("lateral_convs", "fpn_convs"))]
    assert resnet_keys and all(torch.equal(target[k], source[k]) for k in resnet_keys)
    assert not torch.equal(target["fpn_convs.0.weight"], source["fpn_convs.0.weight"])  # the neck is StreamPETR's own
