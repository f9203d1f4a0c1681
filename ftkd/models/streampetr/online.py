"""Online StreamPETR inference from one captured CUDA graph (the in-car path: one frame in, detections out).

At batch 1 a StreamPETR step launches a few hundred small kernels; launching them from Python costs more than
running them. `CudaGraphStreamPETR` records one whole step (backbone, position embedding, memory alignment, decoder,
heads, memory update) once and replays it per frame, with the memory kept in static device tensors. Outputs are
identical to `StreamPETR.forward` in eval mode (same kernels, same memory rule).
"""

from __future__ import annotations

from dataclasses import fields

import torch
from torch import Tensor

from ftkd.models.streampetr.memory import MemoryState
from ftkd.models.streampetr.model import StreamPETR
from ftkd.structures import Batch, DetectorOutput


class CudaGraphStreamPETR:
    """Replays a captured StreamPETR step on static input/memory buffers (CUDA only, eval mode).

    Args:
        model: an eval-mode StreamPETR on a CUDA device (its own `memory` attribute is not used).
        batch_size, num_cameras, image_size (H, W): the fixed input geometry of the graph.
        dtype: autocast dtype of the step (torch.bfloat16) or None for fp32.
        image_dtype: dtype of the incoming images (uint8 from the data layer, or 0..255 float).

    The returned DetectorOutput's tensors are the graph's static outputs: they are overwritten by the next call
    (clone what you keep). Call `reset()` to forget the memory (also done automatically on the first frame).
    """

    def __init__(
        self,
        model: StreamPETR,
        batch_size: int = 1,
        num_cameras: int = 6,
        image_size: tuple[int, int] = (256, 704),
        dtype: torch.dtype | None = torch.bfloat16,
        warmup: int = 3,
        image_dtype: torch.dtype = torch.uint8,
    ) -> None:
        device = model.pc_range.device
        if device.type != "cuda":
            raise ValueError(f"CudaGraphStreamPETR needs a model on a CUDA device, got {device}")
        self.model = model.eval()
        self.dtype = dtype
        B, N, (H, W) = batch_size, num_cameras, image_size
        self.images = torch.zeros(B, N, 3, H, W, dtype=image_dtype, device=device)
        self.lidar2img = torch.eye(4, device=device).repeat(B, N, 1, 1)
        self.intrinsics = torch.eye(3, device=device).repeat(B, N, 1, 1)
        self.ego_pose = torch.eye(4, dtype=torch.float64, device=device).repeat(B, 1, 1)
        self.timestamp = torch.zeros(B, dtype=torch.float64, device=device)
        self.keep = torch.zeros(B, dtype=torch.bool, device=device)
        self.memory = MemoryState.empty(B, model.config.memory_len, model.config.embed_dims, device)
        # Warm up on a side stream (cuDNN autotuning, lazy allocations), then record one step.
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                self._step()
        torch.cuda.current_stream(device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = self._step()
        self.reset()

    def _step(self) -> DetectorOutput:
        with torch.no_grad(), torch.autocast(
            "cuda", dtype=self.dtype or torch.float32, enabled=self.dtype is not None, cache_enabled=False
        ):
            output, memory = self.model.forward_frame(
                self.images, self.lidar2img, self.intrinsics, self.ego_pose, self.timestamp, self.keep, self.memory
            )
        for f in fields(MemoryState):
            getattr(self.memory, f.name).copy_(getattr(memory, f.name))
        return output

    def reset(self) -> None:
        """Forget the memory: the next frame starts a new sequence in every slot."""
        for f in fields(MemoryState):
            getattr(self.memory, f.name).zero_()
        self._fresh = True

    def __call__(self, batch: Batch) -> DetectorOutput:
        """One streaming step on the current frame of `batch` (same contract as `StreamPETR.forward`, eval mode)."""
        if batch.future_images is not None:
            raise ValueError("StreamPETR is an online model: the batch must not carry future_images")
        if tuple(batch.images[:, 0].shape) != tuple(self.images.shape) or batch.images.dtype != self.images.dtype:
            raise ValueError(
                f"CudaGraphStreamPETR was captured for images {list(self.images.shape)} {self.images.dtype}, got "
                f"{list(batch.images[:, 0].shape)} {batch.images.dtype}"
            )
        self.images.copy_(batch.images[:, 0], non_blocking=True)
        self.lidar2img.copy_(batch.lidar2img[:, 0], non_blocking=True)
        self.intrinsics.copy_(batch.intrinsics[:, 0], non_blocking=True)
        self.ego_pose.copy_(batch.ego_pose, non_blocking=True)
        self.timestamp.copy_(batch.timestamp, non_blocking=True)
        keep: Tensor = ~batch.scene_start.to(self.keep.device, torch.bool, non_blocking=True)
        self.keep.copy_(keep & (not self._fresh))
        self._fresh = False
        self.graph.replay()
        return self.output
