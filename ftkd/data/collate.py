"""Stack per-sample `Sample`s into one `Batch` (the data contract of ftkd.structures.batch)."""

from __future__ import annotations

import torch

from ftkd.data.dataset import Sample
from ftkd.structures.batch import Batch


def collate(samples: list[Sample]) -> Batch:
    """B samples -> Batch; all samples must have the same frame counts and image size (one DataConfig)."""
    if not samples:
        raise ValueError("collate: expected at least one sample, got an empty list")
    shapes = {tuple(s.images.shape) for s in samples}
    if len(shapes) != 1:
        raise ValueError(f"collate: expected one image shape [T, N, 3, H, W] for all samples, got {sorted(shapes)}")
    has_future = [s.future_images is not None for s in samples]
    if any(has_future) and not all(has_future):
        raise ValueError("collate: some samples have future frames and some do not")
    return Batch(
        images=torch.stack([s.images for s in samples]),
        future_images=torch.stack([s.future_images for s in samples]) if all(has_future) else None,
        lidar2img=torch.stack([s.lidar2img for s in samples]),
        intrinsics=torch.stack([s.intrinsics for s in samples]),
        time_offsets=torch.stack([s.time_offsets for s in samples]),
        frame_valid=torch.stack([s.frame_valid for s in samples]),
        ego_pose=torch.stack([s.ego_pose for s in samples]),
        timestamp=torch.tensor([s.timestamp for s in samples], dtype=torch.float64),
        scene_start=torch.tensor([s.scene_start for s in samples], dtype=torch.bool),
        gt_boxes=[s.gt_boxes for s in samples],
        gt_labels=[s.gt_labels for s in samples],
        meta=[s.meta for s in samples],
    )
