"""The batch: one dataclass of tensors built by the data layer's collate function (SPEC section 2).

Frame axis: frame 0 is the current keyframe, frames 1..T-1 go back in time. An offline teacher's future
frames are kept apart in `future_images`; the per-frame geometry (`lidar2img`, `time_offsets`, `frame_valid`)
of a teacher batch holds T + F frames, past/current first, then future frames going forward in time.

Reference frame: the current keyframe's ego frame (x forward, y left, z up, origin on the ground below the
rear axle), after BEV augmentation. `ego_pose` maps it to the global frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor


@dataclass
class SampleMeta:
    """What the results writer and the streaming models need to know about one sample."""

    sample_token: str
    scene_token: str
    timestamp: float  # current keyframe, seconds (Unix)
    ref_to_global: np.ndarray  # [4, 4] float64: un-augmented reference (ego) frame -> global frame
    extra: dict = field(default_factory=dict)  # free-form, for analysis only (e.g. GT visibility)


@dataclass
class Batch:
    """A collated batch of temporal multi-view samples.

    Shapes: B batch, T frames (current + past), F future frames (teacher only), N = 6 cameras, M_b boxes.
    """

    images: Tensor  # [B, T, N, 3, H, W] uint8 (RGB) or float; normalised on the device by the model
    lidar2img: Tensor  # [B, T(+F), N, 4, 4] float32: reference frame -> pixel (ego motion + augmentation folded in)
    intrinsics: Tensor  # [B, T(+F), N, 3, 3] float32: camera matrices after image augmentation
    time_offsets: Tensor  # [B, T(+F)] float32 seconds: current - frame (past > 0, current 0, future < 0)
    frame_valid: Tensor  # [B, T(+F)] bool: False where a frame was padded by repeating its neighbour
    ego_pose: Tensor  # [B, 4, 4] float64: (augmented) reference frame -> global
    timestamp: Tensor  # [B] float64 seconds (Unix) of the current keyframe
    scene_start: Tensor  # [B] bool: first sample of its sequence (streaming memory must be reset)
    gt_boxes: list[Tensor]  # B x [M_b, 9] float32 (see ftkd.constants box layout), reference frame
    gt_labels: list[Tensor]  # B x [M_b] int64 class indices into CLASS_NAMES
    meta: list[SampleMeta]
    future_images: Tensor | None = None  # [B, F, N, 3, H, W], teacher batches only

    def __post_init__(self) -> None:
        if self.images.dim() != 6:
            raise ValueError(f"expected images of shape [B, T, N, 3, H, W], got {tuple(self.images.shape)}")
        B, T, N = self.images.shape[:3]
        F = 0 if self.future_images is None else self.future_images.shape[1]
        if self.future_images is not None and self.future_images.shape[::2] != self.images.shape[::2]:
            raise ValueError(
                f"future_images {tuple(self.future_images.shape)} do not match images {tuple(self.images.shape)}"
            )
        expected = {
            "lidar2img": (B, T + F, N, 4, 4),
            "intrinsics": (B, T + F, N, 3, 3),
            "time_offsets": (B, T + F),
            "frame_valid": (B, T + F),
            "ego_pose": (B, 4, 4),
            "timestamp": (B,),
            "scene_start": (B,),
        }
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"expected {name} of shape {list(shape)}, got {list(got)}")
        if not (len(self.gt_boxes) == len(self.gt_labels) == len(self.meta) == B):
            raise ValueError(
                f"expected {B} gt_boxes/gt_labels/meta entries, got "
                f"{len(self.gt_boxes)}/{len(self.gt_labels)}/{len(self.meta)}"
            )
        for b, (boxes, labels) in enumerate(zip(self.gt_boxes, self.gt_labels)):
            if boxes.dim() != 2 or boxes.shape[1] != 9 or labels.shape != boxes.shape[:1]:
                raise ValueError(
                    f"sample {self.meta[b].sample_token}: expected gt_boxes [M, 9] and gt_labels [M], "
                    f"got {tuple(boxes.shape)} and {tuple(labels.shape)}"
                )

    @property
    def batch_size(self) -> int:
        return self.images.shape[0]

    @property
    def num_frames(self) -> int:
        """T: current + past frames."""
        return self.images.shape[1]

    @property
    def num_future_frames(self) -> int:
        """F: future frames (0 for a student batch)."""
        return 0 if self.future_images is None else self.future_images.shape[1]

    def all_images(self) -> Tensor:
        """[B, T+F, N, 3, H, W]: past/current then future images, aligned with `lidar2img`."""
        if self.future_images is None:
            return self.images
        return torch.cat([self.images, self.future_images], dim=1)

    def student_view(self, num_frames: int | None = None) -> "Batch":
        """The same augmented sample without its future (and optionally with fewer past frames).

        This is what an online student may see; it shares tensors with `self` (no copy).
        """
        T = self.num_frames if num_frames is None else num_frames
        if not 1 <= T <= self.num_frames:
            raise ValueError(f"student_view: num_frames must be in [1, {self.num_frames}], got {T}")
        return replace(
            self,
            images=self.images[:, :T],
            lidar2img=self.lidar2img[:, :T],
            intrinsics=self.intrinsics[:, :T],
            time_offsets=self.time_offsets[:, :T],
            frame_valid=self.frame_valid[:, :T],
            future_images=None,
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """Move every tensor to `device` (meta stays on the host)."""

        def move(x: Tensor) -> Tensor:
            return x.to(device, non_blocking=non_blocking)

        return replace(
            self,
            images=move(self.images),
            lidar2img=move(self.lidar2img),
            intrinsics=move(self.intrinsics),
            time_offsets=move(self.time_offsets),
            frame_valid=move(self.frame_valid),
            ego_pose=move(self.ego_pose),
            timestamp=move(self.timestamp),
            scene_start=move(self.scene_start),
            gt_boxes=[move(b) for b in self.gt_boxes],
            gt_labels=[move(lab) for lab in self.gt_labels],
            future_images=None if self.future_images is None else move(self.future_images),
        )

    def pin_memory(self) -> "Batch":
        """Called by DataLoader(pin_memory=True)."""
        return replace(
            self,
            images=self.images.pin_memory(),
            future_images=None if self.future_images is None else self.future_images.pin_memory(),
        )
