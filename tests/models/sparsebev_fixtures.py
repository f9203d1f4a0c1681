"""Hand-built batches for the SparseBEV / shared-component tests (a ring of 6 pinhole cameras, tiny images)."""

from __future__ import annotations

import math

import numpy as np
import torch

from ftkd.structures import Batch, SampleMeta

CAMERA_YAWS_DEG = (0.0, -55.0, 55.0, 180.0, 110.0, -110.0)  # nuScenes camera order, roughly


def camera_matrices(yaw_deg: float, height: int, width: int, fov_deg: float = 70.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(ego -> pixel [4, 4], K [3, 3]) of a camera 1.5 m above the ego origin looking along `yaw_deg`."""
    yaw = math.radians(yaw_deg)
    forward = [math.cos(yaw), math.sin(yaw), 0.0]
    right = [math.sin(yaw), -math.cos(yaw), 0.0]
    down = [0.0, 0.0, -1.0]
    rotation = torch.tensor([right, down, forward])  # rows: camera axes in the ego frame
    focal = width / 2 / math.tan(math.radians(fov_deg / 2))
    K = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])
    ego2cam = torch.eye(4)
    ego2cam[:3, :3] = rotation
    ego2cam[:3, 3] = -rotation @ torch.tensor([0.0, 0.0, 1.5])
    intrinsic = torch.eye(4)
    intrinsic[:3, :3] = K
    return intrinsic @ ego2cam, K


def make_batch(
    batch_size: int = 2,
    num_frames: int = 3,
    image_size: tuple[int, int] = (32, 96),
    num_future: int = 0,
    seed: int = 0,
    frame_gap: float = 0.5,
) -> Batch:
    """Random images, a static rig whose ego moves 2 m forward per frame gap, 0-2 GT boxes per sample."""
    generator = torch.Generator().manual_seed(seed)
    H, W = image_size
    B, T, F = batch_size, num_frames, num_future
    offsets = [frame_gap * t for t in range(T)] + [-frame_gap * (f + 1) for f in range(F)]  # past > 0, future < 0
    rig = [camera_matrices(yaw, H, W) for yaw in CAMERA_YAWS_DEG]
    lidar2img = torch.zeros(B, T + F, 6, 4, 4)
    for t, dt in enumerate(offsets):
        ego_then_from_now = torch.eye(4)
        ego_then_from_now[0, 3] = 4.0 * dt  # the ego drove +x at 4 m/s: a point now at x was at x + 4 dt then
        for n, (ego2pixel, _) in enumerate(rig):
            lidar2img[:, t, n] = ego2pixel @ ego_then_from_now
    intrinsics = torch.stack([K for _, K in rig])[None, None].expand(B, T + F, 6, 3, 3).clone()
    gt_boxes, gt_labels = [], []
    for b in range(B):
        count = b % 3 if B > 1 else 2
        boxes = torch.tensor([[12.0, 1.0, 0.8, 1.9, 4.6, 1.7, 0.2, 3.0, 0.5], [-8.0, -6.0, 0.9, 0.7, 0.8, 1.8, 1.5, 0.0, 1.0]])
        gt_boxes.append(boxes[:count])
        gt_labels.append(torch.tensor([0, 8])[:count])
    images = torch.randint(0, 256, (B, T, 6, 3, H, W), dtype=torch.uint8, generator=generator)
    future = torch.randint(0, 256, (B, F, 6, 3, H, W), dtype=torch.uint8, generator=generator) if F else None
    return Batch(
        images=images,
        lidar2img=lidar2img,
        intrinsics=intrinsics,
        time_offsets=torch.tensor(offsets, dtype=torch.float32)[None].expand(B, -1).clone(),
        frame_valid=torch.ones(B, T + F, dtype=torch.bool),
        ego_pose=torch.eye(4, dtype=torch.float64)[None].repeat(B, 1, 1),
        timestamp=torch.full((B,), 1.5e9, dtype=torch.float64),
        scene_start=torch.zeros(B, dtype=torch.bool),
        gt_boxes=gt_boxes,
        gt_labels=gt_labels,
        meta=[SampleMeta(f"sample{b}", f"scene{b}", 1.5e9, np.eye(4)) for b in range(B)],
        future_images=future,
    )
