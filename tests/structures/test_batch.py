"""The Batch dataclass checks its shapes and gives students a future-free view."""

import numpy as np
import pytest
import torch

from ftkd.structures import Batch, SampleMeta


def make_batch(B=2, T=3, F=2, N=6, H=8, W=16) -> Batch:
    return Batch(
        images=torch.zeros(B, T, N, 3, H, W, dtype=torch.uint8),
        future_images=torch.ones(B, F, N, 3, H, W, dtype=torch.uint8) if F else None,
        lidar2img=torch.eye(4).expand(B, T + F, N, 4, 4).clone(),
        intrinsics=torch.eye(3).expand(B, T + F, N, 3, 3).clone(),
        time_offsets=torch.arange(T + F, dtype=torch.float32).expand(B, T + F).clone(),
        frame_valid=torch.ones(B, T + F, dtype=torch.bool),
        ego_pose=torch.eye(4, dtype=torch.float64).expand(B, 4, 4).clone(),
        timestamp=torch.zeros(B, dtype=torch.float64),
        scene_start=torch.zeros(B, dtype=torch.bool),
        gt_boxes=[torch.zeros(1, 9) for _ in range(B)],
        gt_labels=[torch.zeros(1, dtype=torch.long) for _ in range(B)],
        meta=[SampleMeta(f"s{b}", "scene", 0.0, np.eye(4)) for b in range(B)],
    )


def test_student_view_drops_the_future():
    batch = make_batch()
    assert batch.num_frames == 3 and batch.num_future_frames == 2
    assert batch.all_images().shape[1] == 5
    student = batch.student_view()
    assert student.future_images is None and student.num_future_frames == 0
    assert student.lidar2img.shape[1] == 3 and student.time_offsets.shape == (2, 3)
    assert torch.equal(student.time_offsets, batch.time_offsets[:, :3])
    assert student.student_view(num_frames=1).images.shape[1] == 1
    with pytest.raises(ValueError, match="num_frames must be in"):
        batch.student_view(num_frames=4)


def test_shape_errors_name_the_field():
    batch = make_batch(F=0)
    with pytest.raises(ValueError, match=r"expected lidar2img of shape \[2, 3, 6, 4, 4\]"):
        Batch(**{**batch.__dict__, "lidar2img": torch.eye(4).expand(2, 5, 6, 4, 4)})
    with pytest.raises(ValueError, match="gt_boxes"):
        Batch(**{**batch.__dict__, "gt_boxes": [torch.zeros(1, 7), torch.zeros(1, 9)]})
