"""Box conventions against the nuscenes-devkit `Box` (the independent reference)."""

import math

import numpy as np
import pytest
import torch
from nuscenes.utils.data_classes import Box
from pyquaternion import Quaternion

from ftkd.structures.boxes import box_corners, decode_boxes, encode_boxes, transform_boxes


def random_boxes(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xyz = torch.rand(n, 3, generator=g) * 40 - 20
    wlh = torch.rand(n, 3, generator=g) * 4 + 0.3
    yaw = torch.rand(n, 1, generator=g) * 2 * math.pi - math.pi
    vel = torch.randn(n, 2, generator=g) * 3
    return torch.cat([xyz, wlh, yaw, vel], dim=1).double()


def test_encode_decode_round_trip():
    boxes = random_boxes(50)
    codes = encode_boxes(boxes)
    assert codes.shape == (50, 10)
    torch.testing.assert_close(decode_boxes(codes), boxes)


def test_corners_match_devkit_box():
    boxes = random_boxes(20, seed=1)
    corners = box_corners(boxes)  # [M, 8, 3]
    for box, ours in zip(boxes.numpy(), corners.numpy()):
        ref = Box(box[0:3], box[3:6], Quaternion(axis=[0, 0, 1], angle=box[6])).corners().T  # [8, 3]
        np.testing.assert_allclose(ours, ref, atol=1e-9)


def test_transform_matches_devkit_rotate_translate():
    boxes = random_boxes(20, seed=2)
    rotation = Quaternion(axis=[0, 0, 1], angle=0.7)
    translation = np.array([3.0, -2.0, 0.5])
    matrix = torch.from_numpy(rotation.transformation_matrix.copy())
    matrix[:3, 3] = torch.from_numpy(translation)
    moved = transform_boxes(boxes, matrix)
    for box, ours in zip(boxes.numpy(), moved.numpy()):
        ref = Box(box[0:3], box[3:6], Quaternion(axis=[0, 0, 1], angle=box[6]), velocity=(box[7], box[8], 0.0))
        ref.rotate(rotation)
        ref.translate(translation)
        np.testing.assert_allclose(ours[0:3], ref.center, atol=1e-9)
        np.testing.assert_allclose(ours[3:6], ref.wlh, atol=1e-9)
        yaw_ref = ref.orientation.yaw_pitch_roll[0]
        assert math.isclose(math.cos(ours[6] - yaw_ref), 1.0, abs_tol=1e-9)
        np.testing.assert_allclose(ours[7:9], ref.velocity[:2], atol=1e-9)


def test_transform_with_scale_scales_sizes_and_velocity():
    boxes = random_boxes(5, seed=3)
    matrix = torch.eye(4, dtype=torch.float64) * 1.05
    matrix[3, 3] = 1.0
    moved = transform_boxes(boxes, matrix)
    torch.testing.assert_close(moved[:, 0:6], boxes[:, 0:6] * 1.05)
    torch.testing.assert_close(moved[:, 7:9], boxes[:, 7:9] * 1.05)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\[\.\.\., 9\]"):
        encode_boxes(torch.zeros(3, 7))
    with pytest.raises(ValueError, match="4, 4"):
        transform_boxes(torch.zeros(3, 9), torch.eye(3))
