"""Box conventions: the 9-value layout, the 10-value regression code, corners and rigid transforms.

Layouts (see ftkd.constants): boxes `[..., 9]` = x, y, z (gravity centre), w, l, h, yaw, vx, vy;
codes `[..., 10]` = x, y, z, log w, log l, log h, sin yaw, cos yaw, vx, vy. A box's local x axis is its
length direction (nuScenes `Box` convention), so a yaw of 0 means the box is aligned with the frame's +x.
"""

from __future__ import annotations

import torch
from torch import Tensor


def encode_boxes(boxes: Tensor) -> Tensor:
    """[..., 9] boxes -> [..., 10] regression codes (sizes are clamped to 1 mm before the log)."""
    if boxes.shape[-1] != 9:
        raise ValueError(f"expected boxes [..., 9], got {tuple(boxes.shape)}")
    xyz, wlh, yaw, vel = boxes[..., 0:3], boxes[..., 3:6], boxes[..., 6:7], boxes[..., 7:9]
    return torch.cat([xyz, wlh.clamp(min=1e-3).log(), yaw.sin(), yaw.cos(), vel], dim=-1)


def decode_boxes(codes: Tensor) -> Tensor:
    """[..., 10] regression codes -> [..., 9] boxes (yaw = atan2(sin, cos))."""
    if codes.shape[-1] != 10:
        raise ValueError(f"expected box codes [..., 10], got {tuple(codes.shape)}")
    xyz, log_wlh, sin, cos, vel = codes[..., 0:3], codes[..., 3:6], codes[..., 6:7], codes[..., 7:8], codes[..., 8:10]
    return torch.cat([xyz, log_wlh.exp(), torch.atan2(sin, cos), vel], dim=-1)


def box_corners(boxes: Tensor) -> Tensor:
    """[M, 9] boxes -> [M, 8, 3] corners in the boxes' frame.

    Corner order follows nuscenes-devkit `Box.corners()`: the first four face forward (+l/2), the last four
    backward; within each face: (+w/2, +h/2), (-w/2, +h/2), (-w/2, -h/2), (+w/2, -h/2).
    """
    w, l, h = boxes[:, 3:4], boxes[:, 4:5], boxes[:, 5:6]
    x_sign = boxes.new_tensor([1, 1, 1, 1, -1, -1, -1, -1])
    y_sign = boxes.new_tensor([1, -1, -1, 1, 1, -1, -1, 1])
    z_sign = boxes.new_tensor([1, 1, -1, -1, 1, 1, -1, -1])
    local = torch.stack([x_sign * l / 2, y_sign * w / 2, z_sign * h / 2], dim=-1)  # [M, 8, 3]
    cos, sin = boxes[:, 6].cos(), boxes[:, 6].sin()
    rot = torch.stack(
        [torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], dim=-2
    )  # [M, 2, 2] rotation about +z
    xy = torch.einsum("mij,mkj->mki", rot, local[..., :2])  # [M, 8, 2]
    return torch.cat([xy, local[..., 2:]], dim=-1) + boxes[:, None, 0:3]


def transform_boxes(boxes: Tensor, matrix: Tensor) -> Tensor:
    """Apply a rigid (or rotation + uniform scale) 4x4 transform to [M, 9] boxes.

    Centres are transformed as points, velocities as vectors; yaw gains the transform's rotation about z
    (only the z-rotation part of `matrix` is reflected in yaw, as boxes stay upright). Sizes are multiplied
    by the transform's scale.
    """
    if matrix.shape != (4, 4):
        raise ValueError(f"expected a [4, 4] transform, got {tuple(matrix.shape)}")
    matrix = matrix.to(boxes)
    linear = matrix[:3, :3]
    scale = linear[:, 0].norm()
    centre = boxes[:, 0:3] @ linear.T + matrix[:3, 3]
    vel3 = torch.cat([boxes[:, 7:9], boxes.new_zeros(len(boxes), 1)], dim=-1) @ linear.T
    yaw = boxes[:, 6] + torch.atan2(linear[1, 0], linear[0, 0])
    yaw = torch.atan2(yaw.sin(), yaw.cos())
    return torch.cat([centre, boxes[:, 3:6] * scale, yaw[:, None], vel3[:, :2]], dim=-1)
