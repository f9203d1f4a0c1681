"""The frozen teacher: loaded from a checkpoint, kept in eval mode, run without autograd (bf16 on a GPU).

The teacher consumes the same augmented batch as the student (same images, same `lidar2img` with the image and BEV
augmentation folded in) plus its future frames; it never receives gradients.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from torch import nn

from ftkd.data.config import DataConfig
from ftkd.structures import Batch, DetectorOutput

if TYPE_CHECKING:
    from ftkd.config import ExperimentConfig

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def teacher_view(batch: Batch, num_frames: int) -> Batch:
    """The batch with its first `num_frames` past/current frames and all of its future frames (images shared)."""
    T, F = batch.num_frames, batch.num_future_frames
    if not 1 <= num_frames <= T:
        raise ValueError(f"teacher_view: the batch holds {T} past/current frames, the teacher needs {num_frames}")
    if num_frames == T:
        return batch

    def frames(x: torch.Tensor) -> torch.Tensor:
        # [B, T+F, ...] -> [B, num_frames+F, ...]: drop the oldest past frames, keep the future
        return torch.cat([x[:, :num_frames], x[:, T : T + F]], dim=1)

    return replace(
        batch,
        images=batch.images[:, :num_frames],
        lidar2img=frames(batch.lidar2img),
        intrinsics=frames(batch.intrinsics),
        time_offsets=frames(batch.time_offsets),
        frame_valid=frames(batch.frame_valid),
    )


def resize_view(batch: Batch, size: tuple[int, int]) -> Batch:
    """The batch with every image resized to `size` (H, W) and the pixel geometry scaled to match.

    Images become float (0..255, bilinear); `lidar2img` and `intrinsics` are left-multiplied by the pixel scale
    diag(W'/W, H'/H, 1), so a reference-frame point still projects onto the same image content.
    """
    H, W = batch.images.shape[-2:]
    if (H, W) == tuple(size):
        return batch
    scale_x, scale_y = size[1] / W, size[0] / H

    def resize(images: torch.Tensor) -> torch.Tensor:
        flat = images.flatten(0, 2).float()  # [B, T, N, 3, H, W] -> [B*T*N, 3, H, W]
        out = torch.nn.functional.interpolate(flat, size=size, mode="bilinear", align_corners=False, antialias=True)
        return out.view(*images.shape[:3], 3, *size)  # [B*T*N, 3, H', W'] -> [B, T, N, 3, H', W']

    pixel_scale = torch.diag(batch.lidar2img.new_tensor([scale_x, scale_y, 1.0, 1.0]))
    return replace(
        batch,
        images=resize(batch.images),
        future_images=None if batch.future_images is None else resize(batch.future_images),
        lidar2img=pixel_scale @ batch.lidar2img,
        intrinsics=pixel_scale[:3, :3] @ batch.intrinsics,
    )


class Teacher(nn.Module):
    """A frozen detector that stays in eval mode (even under `.train()`) and runs under `torch.no_grad()`.

    Args:
        model: the teacher detector (SparseBEV; offline when it uses future frames).
        num_frames: its past + current frames (the batch may hold more past frames for the student).
        num_future_frames: its future frames (0 for the "no future" baseline teacher).
        precision: "bf16", "fp16" or "fp32"; autocast is used on CUDA only (a CPU runs fp32).
        image_size: (H, W) the teacher's input size if it differs from the student's (e.g. a teacher trained at
            512x1408 fed the student's 256x704 images upsampled); None = the batch's size.
    """

    def __init__(
        self,
        model: nn.Module,
        num_frames: int,
        num_future_frames: int,
        precision: str = "bf16",
        image_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if precision not in _DTYPES:
            raise ValueError(f"teacher precision: expected one of {list(_DTYPES)}, got {precision!r}")
        self.model = model.eval().requires_grad_(False)
        self.num_frames = num_frames
        self.num_future_frames = num_future_frames
        self.precision = precision
        self.image_size = image_size

    def train(self, mode: bool = True) -> "Teacher":
        """The teacher is always in eval mode (no dropout, frozen BatchNorm statistics, no GridMask)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, batch: Batch) -> DetectorOutput:
        """Run the teacher on its view of `batch` ([B, T_t + F] frames)."""
        if batch.num_future_frames != self.num_future_frames:
            raise ValueError(
                f"the teacher expects {self.num_future_frames} future frames, the batch holds "
                f"{batch.num_future_frames} (set data.num_future_frames to the teacher's)"
            )
        view = teacher_view(batch, self.num_frames)
        if self.image_size is not None:
            view = resize_view(view, self.image_size)
        device_type = view.images.device.type
        autocast = (
            torch.autocast("cuda", dtype=_DTYPES[self.precision], enabled=self.precision != "fp32")
            if device_type == "cuda"
            else contextlib.nullcontext()
        )
        with autocast:
            return self.model(view)


def load_teacher(
    path: str,
    precision: str = "bf16",
    image_size: tuple[int, int] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Teacher, "ExperimentConfig"]:
    """Load a teacher checkpoint written by `ftkd train` -> (frozen Teacher, its ExperimentConfig)."""
    from ftkd.engine.checkpoint import load_model

    model, config = load_model(path, device)
    data = config.data
    teacher = Teacher(model, data.num_past_frames + 1, data.num_future_frames, precision, image_size)
    return teacher, config


def distillation_data_config(student: DataConfig, teacher: DataConfig, student_frames: int) -> DataConfig:
    """The training data config of a distillation run: the student's data, the teacher's frames.

    Past frames = max(student's, teacher's), future frames = the teacher's; the frame selection (source and
    intervals) is the teacher's, so frame i is the same image for both models. A student that uses past frames
    must therefore select them exactly as the teacher does. Everything else (dataset, splits, image size,
    augmentation, batch) is the student's.
    """
    selection = ("frame_source", "train_interval", "test_interval")
    if student_frames > 1:
        differ = [k for k in selection if getattr(student, k) != getattr(teacher, k)]
        if differ:
            details = ", ".join(f"data.{k} {getattr(student, k)!r} vs teacher {getattr(teacher, k)!r}" for k in differ)
            raise ValueError(f"student and teacher must select past frames alike to share them: {details}")
    return replace(
        student,
        num_past_frames=max(student.num_past_frames, teacher.num_past_frames),
        num_future_frames=teacher.num_future_frames,
        **{k: getattr(teacher, k) for k in selection},
    )
