"""Inference and training speed of the online students (SPEC section 6), and their ONNX Runtime latency.

For SparseBEV-R50 (8 frames, 900 queries) and StreamPETR-R50 (644 + 256 queries), 6 x 256 x 704, batch 1, one
section per measurement (`<model>.<section>` in the JSON):
- eager_fp32, eager_bf16, graph_bf16: end-to-end online FPS on a stream where each step brings one new frame
  (6 images through the backbone, past-frame features from the cache for SparseBEV, the memory queue for
  StreamPETR), normalisation on the device included; graph_bf16 replays CUDA graphs (CUDA only);
- parity: the largest logit differences graph vs eager bf16 and eager bf16 vs fp32 on a stream from a fresh state;
- backbone_only_fp32, backbone_only_bf16: the backbone on the same 6 images (the ceiling of any end-to-end number);
- train_step_bf16: training step time (and peak memory on CUDA) at batch 1, bf16 autocast, AdamW, grad clip 35;
- onnx: export with `ftkd.deploy.export.export_model` (wall time, file size, opset), then the per-frame latency of
  the graph in ONNX Runtime (CUDAExecutionProvider if this onnxruntime has it, else CPUExecutionProvider), state
  carried frame to frame as `ftkd.deploy.runtime.OnnxStep` does;
- onnx_parity: ONNX Runtime vs the same export wrapper in PyTorch (`TorchStep`, fp32, TF32 off) on the torch device
  over 3 frames with carried state (largest score and box differences, `compare_detections`).

Each section runs in its own try/except (a failure is recorded as {"error": "<type>: <message>"} and the next
section runs) and the JSON is rewritten atomically after every section, so a crash or a kill keeps what was
measured; a section still marked "running" is the one that was cut. Sections not started within --max-seconds are
recorded as skipped. The torch sections of every model run before the ONNX sections (the ONNX export is the slowest
and least important part). Weights are random (speed does not depend on them).

    python benchmarks/speed.py [--models sparsebev,streampetr] [--steps 200] [--out docs/results/speed.json]
    python benchmarks/speed.py --device cpu --steps 2 --sparsebev-config configs/sparsebev_tiny.yaml \\
        --streampetr-config configs/streampetr_tiny.yaml --out /tmp/speed.json      # CPU rehearsal
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ftkd.config import load_config
from ftkd.constants import CAMERA_NAMES
from ftkd.data.synth.rig import build_rig
from ftkd.models.build import build_model
from ftkd.structures import Batch, Detections, SampleMeta

if TYPE_CHECKING:
    from ftkd.deploy.runtime import Frame

NEEDS_CUDA = {"skipped": "needs CUDA"}
NUM_POOL_FRAMES = 4  # distinct random camera frames cycled through a stream (timing does not depend on content)
ONNX_PARITY_FRAMES = 3
ONNX_SCORE_TOLERANCE, ONNX_BOX_TOLERANCE = 5e-4, 5e-3  # those of tests/deploy/test_export.py (docs/deploy.md)
ONNX_LATENCY_BUDGET_S = 30.0  # timed ONNX Runtime frames per model are cut to fit this (CPU provider on big models)


def git_commit() -> str:
    """HEAD's hash (+uncommitted if tracked files changed), or "unknown" outside a git checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return sha + ("+uncommitted" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model and its logical core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical cores)"
    except OSError:
        pass
    return f"{platform.machine()} CPU ({os.cpu_count()} logical cores)"


# ------------------------------------------------------------------------------------------------ inputs


class Stream:
    """Batches of a synthetic drive on `device`: the real nuScenes rig, the ego moving 5 m/s forward, frames 0.5 s
    apart, random uint8 images. Stream frame j has the images `pool[j % NUM_POOL_FRAMES]`; sample k holds frames
    k, k-1, ..., k-T+1 (frame keys in `meta.extra`), so each new sample brings exactly one new frame."""

    def __init__(self, num_frames: int, image_size: tuple[int, int], device: torch.device) -> None:
        H, W = image_size
        rig = build_rig(W, H)
        N, T = len(CAMERA_NAMES), num_frames
        lidar2img = np.zeros((T, N, 4, 4))
        intrinsics = np.zeros((T, N, 3, 3))
        for t in range(T):
            now_to_then = np.eye(4)
            now_to_then[0, 3] = 5.0 * 0.5 * t  # a point now at x was at x + 2.5 t metres ahead of the past ego
            for n, name in enumerate(CAMERA_NAMES):
                K = np.eye(4)
                K[:3, :3] = rig[name].intrinsic
                lidar2img[t, n] = K @ np.linalg.inv(rig[name].sensor_to_ego) @ now_to_then
                intrinsics[t, n] = rig[name].intrinsic
        generator = torch.Generator().manual_seed(0)
        pool = torch.randint(0, 256, (NUM_POOL_FRAMES, N, 3, H, W), dtype=torch.uint8, generator=generator)
        # sample k's images depend on k % NUM_POOL_FRAMES only: [P, 1, T, N, 3, H, W]
        self.images = torch.stack(
            [torch.stack([pool[(k - t) % NUM_POOL_FRAMES] for t in range(T)])[None] for k in range(NUM_POOL_FRAMES)]
        ).to(device)
        self.lidar2img = torch.from_numpy(lidar2img).float()[None].to(device)  # [1, T, N, 4, 4]
        self.intrinsics = torch.from_numpy(intrinsics).float()[None].to(device)  # [1, T, N, 3, 3]
        self.time_offsets = (torch.arange(T, dtype=torch.float32)[None] * 0.5).to(device)
        self.frame_valid = torch.ones(1, T, dtype=torch.bool, device=device)
        self.gt_boxes = torch.tensor(
            [[12.0, 2.0, 0.9, 1.9, 4.6, 1.7, 0.3, 4.0, 0.0], [-9.0, -5.0, 0.9, 0.7, 0.7, 1.8, 1.2, 1.0, 0.5]],
            device=device,
        )
        self.gt_labels = torch.tensor([0, 8], device=device)
        self.num_frames = T
        self.device = device

    def batch(self, k: int) -> Batch:
        """Sample k of the stream (k = 0 starts the sequence)."""
        ego_pose = torch.eye(4, dtype=torch.float64)
        ego_pose[0, 3] = 2.5 * k
        timestamp = 1.5e9 + 0.5 * k
        frame_keys = [k - t for t in range(self.num_frames)]
        meta = SampleMeta(f"stream{k}", "stream", timestamp, np.eye(4), {"frame_keys": frame_keys})
        return Batch(
            images=self.images[k % NUM_POOL_FRAMES],
            lidar2img=self.lidar2img,
            intrinsics=self.intrinsics,
            time_offsets=self.time_offsets,
            frame_valid=self.frame_valid,
            ego_pose=ego_pose[None].to(self.device),
            timestamp=torch.tensor([timestamp], dtype=torch.float64, device=self.device),
            scene_start=torch.tensor([k == 0], device=self.device),
            gt_boxes=[self.gt_boxes],
            gt_labels=[self.gt_labels],
            meta=[meta],
        )

    def batches(self, count: int) -> list[Batch]:
        return [self.batch(k) for k in range(count)]


# ----------------------------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(function: Callable[[int], Any], steps: int, warmup: int, device: torch.device) -> list[float]:
    """Milliseconds per call of `function(step)` for steps warmup..warmup+steps-1, after `warmup` untimed calls;
    each call is synchronised with the device (CUDA only: CPU calls are synchronous)."""
    for step in range(warmup):
        function(step)
    synchronize(device)
    times = []
    for step in range(warmup, warmup + steps):
        start = time.perf_counter()
        function(step)
        synchronize(device)
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def summary(times: list[float]) -> dict[str, float]:
    """Median / mean milliseconds per call, FPS at the median, number of timed calls."""
    median = statistics.median(times)
    return {"median_ms": median, "mean_ms": statistics.fmean(times), "fps": 1000.0 / median, "samples": len(times)}


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """bf16 (or other `dtype`) autocast on `device`; disabled (fp32) for None."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def max_abs_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


# ------------------------------------------------------------------------------------ shared measurements


def backbone_only(model: torch.nn.Module, image_size: tuple[int, int], steps: int, warmup: int,
                  dtype: torch.dtype | None, device: torch.device) -> dict:  # fmt: skip
    """The backbone + FPN on one frame's 6 uint8 images, normalisation included."""
    from ftkd.models.common.image_ops import normalize_images

    images = torch.randint(0, 256, (len(CAMERA_NAMES), 3, *image_size), dtype=torch.uint8, device=device)

    @torch.no_grad()
    def run(_: int) -> None:
        with autocast(device, dtype):
            model.backbone(normalize_images(images))

    return summary(time_calls(run, steps, warmup, device))


def train_step(config_path: str, steps: int, warmup: int, device: torch.device) -> dict:
    """Step time (and peak memory on CUDA) of student training at batch 1: bf16 autocast, AdamW, grad clip 35, the
    model's own criterion weighted by its weight_dict (what `ftkd train` optimises)."""
    config = load_config(config_path)
    torch.manual_seed(0)
    model = build_model(config.model).to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    stream = Stream(getattr(config.model, "num_frames", 1), tuple(config.data.image_size), device)
    batches = stream.batches(NUM_POOL_FRAMES)

    def run(step: int) -> None:
        batch = batches[step % len(batches)]
        with autocast(device, torch.bfloat16):
            output = model(batch)
        losses = model.criterion(output, batch)
        total = sum(losses[k] * w for k, w in model.criterion.weight_dict.items() if k in losses)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 35.0)
        optimizer.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = summary(time_calls(run, steps, warmup, device))
    if device.type == "cuda":
        result["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


@torch.no_grad()
def eager_step(model: torch.nn.Module, batch: Batch, dtype: torch.dtype | None, device: torch.device):
    """One eval-mode forward under autocast (dtype) or in fp32 (None)."""
    with autocast(device, dtype):
        return model(batch)


# ------------------------------------------------------------------------------------------ the students


class SparseBEVBench:
    """Sections of the online SparseBEV (`OnlineSparseBEV`: FPN features of past frames from a FIFO cache)."""

    def __init__(self, config_path: str, device: torch.device, steps: int, warmup: int) -> None:
        self.config_path, self.device, self.steps, self.warmup = config_path, device, steps, warmup
        self.config = load_config(config_path)
        self.size = tuple(self.config.data.image_size)
        self.T = self.config.model.num_frames
        self.runners: dict[str, Any] = {}
        self._model: torch.nn.Module | None = None
        self._batches: list[Batch] | None = None

    def info(self) -> dict:
        model = self.config.model
        return {"config": self.config_path, "queries": model.num_queries, "frames": self.T,
                "image_size": list(self.size)}  # fmt: skip

    def model(self) -> torch.nn.Module:
        if self._model is None:
            torch.manual_seed(0)
            self._model = build_model(self.config.model).to(self.device).eval()
        return self._model

    def batches(self) -> list[Batch]:
        if self._batches is None:
            count = max(self.warmup + self.steps, self.T + 2)  # the parity stream is T + 2 samples long
            self._batches = Stream(self.T, self.size, self.device).batches(count)
        return self._batches

    def sections(self) -> list[tuple[str, Callable[[], dict] | dict]]:
        cuda = self.device.type == "cuda"
        return [
            ("eager_fp32", lambda: self.online("eager_fp32", None, False)),
            ("eager_bf16", lambda: self.online("eager_bf16", torch.bfloat16, False)),
            ("graph_bf16", (lambda: self.online("graph_bf16", torch.bfloat16, True)) if cuda else NEEDS_CUDA),
            ("parity", self.parity),
            ("backbone_only_fp32", lambda: self.backbone(None)),
            ("backbone_only_bf16", lambda: self.backbone(torch.bfloat16)),
            ("train_step_bf16", self.train),
        ]

    def online(self, name: str, dtype: torch.dtype | None, graph: bool) -> dict:
        from ftkd.models.sparsebev.online import OnlineSparseBEV

        runner = OnlineSparseBEV(self.model(), max_cached_frames=2 * self.T, autocast_dtype=dtype, cuda_graph=graph)
        batches = self.batches()
        result = summary(time_calls(lambda k: runner(batches[k]), self.steps, self.warmup, self.device))
        if runner.last_backbone_frames != 1:
            raise RuntimeError(
                f"{name}: expected one new frame per step, the backbone ran on {runner.last_backbone_frames}"
            )
        self.runners[name] = runner  # for the parity section (only runners that worked)
        return result

    def parity(self) -> dict:
        """Largest logit differences over the first T + 2 samples of the stream from an empty cache (the first
        sample runs the backbone on all T frames, the others on one): graph vs eager bf16, eager bf16 vs fp32."""
        from ftkd.models.sparsebev.online import OnlineSparseBEV

        batches = self.batches()[: self.T + 2]
        logits = {}
        for name, dtype in (("eager_fp32", None), ("eager_bf16", torch.bfloat16), ("graph_bf16", torch.bfloat16)):
            runner = self.runners.get(name)
            if runner is None and name != "graph_bf16":  # its timed section failed: a fresh eager runner
                runner = OnlineSparseBEV(self.model(), max_cached_frames=2 * self.T, autocast_dtype=dtype)
            if runner is None:
                continue
            runner.reset()
            logits[name] = [runner(batch).pred_logits.clone() for batch in batches]
        return compare_logits(logits, self.device)

    def backbone(self, dtype: torch.dtype | None) -> dict:
        return backbone_only(self.model(), self.size, self.steps, self.warmup, dtype, self.device)

    def train(self) -> dict:
        self.release()
        return train_step(self.config_path, train_steps(self.steps), min(5, self.warmup), self.device)

    def release(self) -> None:
        """Drop the eval model, runners (CUDA graphs) and batches before training builds its own model."""
        self.runners.clear()
        self._model = self._batches = None
        release_memory(self.device)


class StreamPETRBench:
    """Sections of StreamPETR (its memory queue carries the past; `CudaGraphStreamPETR` replays one captured step)."""

    def __init__(self, config_path: str, device: torch.device, steps: int, warmup: int) -> None:
        self.config_path, self.device, self.steps, self.warmup = config_path, device, steps, warmup
        self.config = load_config(config_path)
        self.size = tuple(self.config.data.image_size)
        self.graph = None
        self._model: torch.nn.Module | None = None
        self._batches: list[Batch] | None = None

    def info(self) -> dict:
        model = self.config.model
        return {"config": self.config_path, "queries": model.num_queries + model.num_propagated,
                "image_size": list(self.size)}  # fmt: skip

    def model(self) -> torch.nn.Module:
        if self._model is None:
            torch.manual_seed(0)
            self._model = build_model(self.config.model).to(self.device).eval()
        return self._model

    def batches(self) -> list[Batch]:
        if self._batches is None:
            count = max(self.warmup + self.steps, 4)  # the parity stream is 4 frames long
            self._batches = Stream(1, self.size, self.device).batches(count)
        return self._batches

    def sections(self) -> list[tuple[str, Callable[[], dict] | dict]]:
        cuda = self.device.type == "cuda"
        return [
            ("eager_fp32", lambda: self.eager(None)),
            ("eager_bf16", lambda: self.eager(torch.bfloat16)),
            ("graph_bf16", self.graphed if cuda else NEEDS_CUDA),
            ("parity", self.parity),
            ("backbone_only_fp32", lambda: self.backbone(None)),
            ("backbone_only_bf16", lambda: self.backbone(torch.bfloat16)),
            ("train_step_bf16", self.train),
        ]

    def eager(self, dtype: torch.dtype | None) -> dict:
        model, batches = self.model(), self.batches()
        model.reset_memory()

        def run(k: int) -> None:
            eager_step(model, batches[k], dtype, self.device)

        return summary(time_calls(run, self.steps, self.warmup, self.device))

    def graphed(self) -> dict:
        from ftkd.models.streampetr.online import CudaGraphStreamPETR

        batches = self.batches()
        graph = CudaGraphStreamPETR(self.model(), image_size=self.size, dtype=torch.bfloat16)
        result = summary(time_calls(lambda k: graph(batches[k]), self.steps, self.warmup, self.device))
        self.graph = graph  # for the parity section (only if it worked)
        return result

    def parity(self) -> dict:
        """Largest logit differences over a 4-frame sequence from a fresh memory: graph vs eager bf16 (CUDA), eager
        bf16 vs fp32."""
        model, batches = self.model(), self.batches()[:4]
        logits = {}
        for name, dtype in (("eager_fp32", None), ("eager_bf16", torch.bfloat16)):
            model.reset_memory()
            logits[name] = [eager_step(model, batch, dtype, self.device).pred_logits.clone() for batch in batches]
        if self.graph is not None:
            self.graph.reset()
            logits["graph_bf16"] = [self.graph(batch).pred_logits.clone() for batch in batches]
        return compare_logits(logits, self.device)

    def backbone(self, dtype: torch.dtype | None) -> dict:
        return backbone_only(self.model(), self.size, self.steps, self.warmup, dtype, self.device)

    def train(self) -> dict:
        self.release()
        return train_step(self.config_path, train_steps(self.steps), min(5, self.warmup), self.device)

    def release(self) -> None:
        self.graph = self._model = self._batches = None
        release_memory(self.device)


def compare_logits(logits: dict[str, list[torch.Tensor]], device: torch.device) -> dict:
    """Max |difference| of per-frame logits between modes (over all frames), and the fp32 logits' max |value| for
    scale. A comparison whose mode did not run says why."""
    result: dict[str, Any] = {"frames": len(logits["eager_fp32"])}
    result["max_abs_logit_fp32"] = max(float(x.abs().max()) for x in logits["eager_fp32"])
    result["bf16_vs_fp32_max_abs_logit"] = max(
        max_abs_difference(a, b) for a, b in zip(logits["eager_bf16"], logits["eager_fp32"])
    )
    if "graph_bf16" in logits:
        result["graph_vs_eager_bf16_max_abs_logit"] = max(
            max_abs_difference(a, b) for a, b in zip(logits["graph_bf16"], logits["eager_bf16"])
        )
    else:
        why = "needs CUDA" if device.type != "cuda" else "graph_bf16 did not run"
        result["graph_vs_eager_bf16_max_abs_logit"] = why
    return result


def train_steps(steps: int) -> int:
    """Timed training steps: a tenth of the inference steps, at least 10 (fewer only if `steps` itself is)."""
    return min(steps, max(10, steps // 10))


# ------------------------------------------------------------------------------------------------- ONNX


@torch.no_grad()
def spread_class_scores(
    model: torch.nn.Module, frame: Frame, image_size: tuple[int, int], device: torch.device
) -> None:
    """Redraw the last layer of the class head so that on `frame` (a `Frame` through the export wrapper) each class's
    logit is centred across queries and varies with standard deviation up to 1 (N(0, 1) weights at most).

    A random-weight model gives nearly the same features to every query: with the prior-initialised head all scores
    are ~0.01 (at paper size the top 300 lie within 3e-3 of each other) and an N(0, 1) head saturates them at 1.0;
    either way no rank is 1e-4 away from its neighbours and `compare_detections` could compare no box.
    """
    from ftkd.deploy.runtime import TorchStep

    heads = [module[-1] for name, module in model.named_modules() if name.endswith("cls_branch")]
    if len(heads) != 1:
        raise ValueError(f"expected one cls_branch in {type(model).__name__}, found {len(heads)}")
    head, captured = heads[0], []
    hook = head.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].detach()))
    try:
        with torch.device(device):  # see OnnxBench.parity
            TorchStep(model, image_size, device)(frame)
    finally:
        hook.remove()
        model.cpu()
    queries = model.config.num_queries + getattr(model.config, "num_propagated", 0)
    # SparseBEV calls the head once per decoder layer on [1, Q, C], StreamPETR once on [L, 1, Q, C]: the last Q rows
    # are the last layer's queries
    features = captured[-1].float().reshape(-1, captured[-1].shape[-1])[-queries:].cpu()  # [Q, C]
    weight = torch.randn(head.out_features, head.in_features)
    logits = features @ weight.T  # [Q, K]
    # never above N(0, 1) weights: a larger gain would also amplify the rounding differences being measured
    scale = (1.0 / logits.std(dim=0).clamp(min=1e-12)).clamp(max=1.0)
    head.weight.copy_(weight * scale[:, None])
    head.bias.copy_(-logits.mean(dim=0) * scale)


class OnnxBench:
    """Export of a random-weight student and its ONNX Runtime latency and parity (`ftkd.deploy`).

    The score threshold is 0 and the class head is redrawn by `spread_class_scores`, so that the top-k scores are
    distinct enough for `compare_detections` to compare boxes rank by rank.
    """

    def __init__(self, config_path: str, device: torch.device, steps: int, warmup: int, workdir: Path) -> None:
        self.config_path, self.device, self.steps, self.warmup = config_path, device, steps, warmup
        self.config = load_config(config_path, ["model.score_threshold=0.0"])
        self.size = tuple(self.config.data.image_size)
        self.path = workdir / f"{self.config.model.arch}.onnx"
        self.model: torch.nn.Module | None = None
        self.step = None

    def frames(self, count: int) -> list:
        """`count` frames of a ring-rig drive (`ring_rig`) at 5 m/s forward, 0.5 s apart, random uint8 images."""
        from ftkd.deploy.runtime import Frame, ring_rig

        lidar2img, intrinsics = (x.numpy() for x in ring_rig(self.size))
        rng = np.random.default_rng(0)
        pool = rng.integers(0, 256, (NUM_POOL_FRAMES, len(CAMERA_NAMES), 3, *self.size), dtype=np.uint8)
        frames = []
        for k in range(count):
            pose = np.eye(4)
            pose[0, 3] = 2.5 * k
            frames.append(Frame(pool[k % NUM_POOL_FRAMES], lidar2img, intrinsics, pose, 0.5 * k))
        return frames

    def export(self) -> dict:
        """Export (CPU, fp32), open an ONNX Runtime session and time frames with carried state."""
        import onnxruntime

        from ftkd.deploy.export import DEFAULT_OPSET, export_model
        from ftkd.deploy.runtime import OnnxStep

        torch.manual_seed(0)
        self.model = build_model(self.config.model).eval()
        spread_class_scores(self.model, self.frames(1)[0], self.size, self.device)
        start = time.perf_counter()
        export_model(self.model, self.path, self.size, opset=DEFAULT_OPSET)
        result: dict[str, Any] = {
            "export_s": time.perf_counter() - start,
            "file_mb": self.path.stat().st_size / 1e6,
            "opset": DEFAULT_OPSET,
            "onnxruntime": onnxruntime.__version__,
            "providers_available": onnxruntime.get_available_providers(),
        }
        start = time.perf_counter()
        step = None
        if self.device.type == "cuda" and "CUDAExecutionProvider" in result["providers_available"]:
            try:
                step = OnnxStep(self.path, ["CUDAExecutionProvider", "CPUExecutionProvider"])
                if step.session.get_providers()[0] != "CUDAExecutionProvider":
                    # listed but not loadable (CUDA/cuDNN libraries): the session fell back to the CPU, while
                    # OnnxStep would still bind its state outputs on the GPU
                    result["cuda_provider_failed"] = f"session fell back to {step.session.get_providers()}"
                    step = None
            except Exception as error:
                result["cuda_provider_failed"] = f"{type(error).__name__}: {error}"[:1000]
                step = None
        if step is None:
            step = OnnxStep(self.path)
        result["session_s"] = time.perf_counter() - start
        result["provider"] = step.session.get_providers()[0]
        result["session_providers"] = step.session.get_providers()
        self.step = step

        # CUDA: cuDNN's algorithm search runs in the first calls; CPU: nothing to tune, and a paper-size frame takes
        # seconds there
        warmup = min(self.warmup, 5 if result["provider"] == "CUDAExecutionProvider" else 2)
        frames = self.frames(warmup + self.steps)
        state = None
        warm_ms = []
        for frame in frames[:warmup]:
            start = time.perf_counter()
            _, state = step(frame, state)
            warm_ms.append((time.perf_counter() - start) * 1000.0)
        result["first_frame_ms"] = warm_ms[0]
        # steady frames that fit the time budget (a paper-size graph on the CPU provider takes seconds per frame)
        count = min(self.steps, max(3, int(ONNX_LATENCY_BUDGET_S * 1000.0 / warm_ms[-1])))
        times = []
        for frame in frames[warmup : warmup + count]:
            start = time.perf_counter()
            detections, state = step(frame, state)
            times.append((time.perf_counter() - start) * 1000.0)
        result["latency"] = summary(times)
        result["warmup_frames"] = warmup
        result["detections_last_frame"] = len(detections.scores)
        return result

    def parity(self) -> dict:
        """ONNX Runtime vs `TorchStep` (fp32, TF32 off) on the torch device, 3 frames, each side carrying its state."""
        from ftkd.deploy.runtime import TorchStep

        if self.step is None or self.model is None:
            raise RuntimeError("the onnx section did not produce a session")
        result: dict[str, Any] = {"frames": ONNX_PARITY_FRAMES, "provider": self.step.session.get_providers()[0],
                                  "torch_device": str(self.device)}  # fmt: skip
        if result["provider"] == "CUDAExecutionProvider":
            try:  # ONNX Runtime's CUDA provider uses TF32 by default; compare fp32 with fp32
                self.step.session.set_providers(
                    ["CUDAExecutionProvider", "CPUExecutionProvider"], [{"use_tf32": "0"}, {}]
                )
                result["onnxruntime_tf32"] = False
            except Exception as error:  # an onnxruntime without the option: compare with its default (TF32)
                result["onnxruntime_tf32"] = f"default (use_tf32=0 refused: {type(error).__name__}: {error})"[:1000]
                self.step.session.set_providers(["CUDAExecutionProvider", "CPUExecutionProvider"])
        tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            # the export wrapper builds a few constants without a device: the default device puts them on ours
            with torch.device(self.device):
                reference = TorchStep(self.model, self.size, self.device)
            onnx_state = torch_state = None
            score_diff = box_diff = 0.0
            counts, clear, mismatches = [], [], []
            for t, frame in enumerate(self.frames(ONNX_PARITY_FRAMES)):
                onnx_detections, onnx_state = self.step(frame, onnx_state)
                with torch.device(self.device):
                    torch_detections, torch_state = reference(frame, torch_state)
                counts.append([len(torch_detections.scores), len(onnx_detections.scores)])
                scores, boxes, compared, mismatch = compare_frame(torch_detections, onnx_detections)
                clear.append(compared)
                if mismatch:
                    mismatches.append(f"frame {t}: {mismatch}")
                score_diff, box_diff = max(score_diff, scores), max(box_diff, boxes)
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        result.update(max_score_diff=score_diff, max_box_diff=box_diff if math.isfinite(box_diff) else None)
        result["detections_per_frame"] = counts  # [torch, onnx] per frame
        result["boxes_compared_per_frame"] = clear  # ranks clear of their neighbours (compare_frame)
        if mismatches:
            result["mismatches"] = mismatches
        result["tolerance"] = {"score": ONNX_SCORE_TOLERANCE, "box": ONNX_BOX_TOLERANCE}
        result["within_tolerance"] = (
            not mismatches and sum(clear) > 0 and score_diff <= ONNX_SCORE_TOLERANCE and box_diff <= ONNX_BOX_TOLERANCE
        )
        return result

    def release(self) -> None:
        self.model = self.step = None
        self.path.unlink(missing_ok=True)


def compare_frame(reference: Detections, other: Detections) -> tuple[float, float, int, str | None]:
    """(max |score difference|, max |box difference|, ranks whose boxes were compared, None) of two top-k lists.

    Scores are compared rank by rank; boxes by `compare_detections` at the ranks whose reference score is farther
    from both neighbours than 1e-4 or four times the largest score difference, whichever is larger (closer ranks can
    swap by the rounding being measured). Where it refuses (a label differs at such a rank, or a different count):
    the scores of the common ranks, inf, 0 and why.
    """
    from ftkd.deploy.runtime import compare_detections

    n = min(len(reference.scores), len(other.scores))
    score_diff = float((reference.scores[:n].double() - other.scores[:n].double()).abs().max()) if n else 0.0
    tolerance = max(1e-4, 4.0 * score_diff)
    try:
        score_diff, box_diff = compare_detections(reference, other, tolerance)
    except ValueError as error:
        return score_diff, math.inf, 0, str(error)
    gaps = reference.scores.double().diff().abs() > tolerance
    clear = torch.ones(len(reference.scores), dtype=torch.bool)
    clear[1:] &= gaps
    clear[:-1] &= gaps
    return score_diff, box_diff, int(clear.sum()), None


# -------------------------------------------------------------------------------------------- recording


def release_memory(device: torch.device) -> None:
    """Free what the last section dropped (Python garbage, then CUDA's cached blocks) before the next one."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class Recorder:
    """The results, rewritten atomically to `path` after every section; sections not started before `deadline`
    (time.monotonic seconds) are recorded as skipped."""

    def __init__(self, path: Path, results: dict, started: float, deadline: float, device: torch.device) -> None:
        self.path, self.results, self.started, self.deadline, self.device = path, results, started, deadline, device

    def write(self) -> None:
        self.results["elapsed_s"] = round(time.monotonic() - self.started, 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.results, indent=2))
        os.replace(tmp, self.path)

    def record(self, model: str, name: str, value: dict) -> None:
        self.results.setdefault(model, {})[name] = value
        self.write()

    def section(self, model: str, name: str, function: Callable[[], dict] | dict) -> None:
        """Run one section (or record a ready-made entry such as NEEDS_CUDA) and write the JSON."""
        if isinstance(function, dict):
            self.record(model, name, dict(function))
            return
        if time.monotonic() > self.deadline:
            self.record(model, name, {"skipped": f"time guard: --max-seconds reached before {name} started"})
            return
        self.record(model, name, {"running": "started; killed or crashed before it finished"})
        print(f"[{time.monotonic() - self.started:6.1f} s] {model}.{name} ...", flush=True)
        start = time.perf_counter()
        try:
            value = function()
        except Exception as error:  # one failing section (OOM, a capture error, an export error) must not stop the rest
            traceback.print_exc()
            value = {"error": f"{type(error).__name__}: {error}"[:2000]}
        value["section_s"] = round(time.perf_counter() - start, 2)
        self.record(model, name, value)
        release_memory(self.device)
        print(f"{'':10} {model}.{name}: {summary_text(value)}", flush=True)


# --------------------------------------------------------------------------------------------- printing

TABLE_MODES = ("eager_fp32", "eager_bf16", "graph_bf16", "backbone_only_fp32", "backbone_only_bf16", "train_step_bf16")


def row_text(entry: Any) -> str:
    """One table cell group for a section entry: numbers, or why there are none."""
    if not isinstance(entry, dict):
        return "not run"
    if isinstance(entry.get("median_ms"), (int, float)):
        extra = f"  peak {entry['peak_gib']:.1f} GiB" if isinstance(entry.get("peak_gib"), (int, float)) else ""
        return f"{entry['median_ms']:8.2f} {entry['fps']:8.1f}{extra}"
    for key in ("error", "skipped", "running"):
        if key in entry:
            return f"{key}: {str(entry[key])[:100]}"
    return "no numbers"


def summary_text(entry: dict) -> str:
    """One line on a finished section, for the progress log."""
    if isinstance(entry.get("latency"), dict):
        latency = row_text(entry["latency"])
        return f"{latency} ms/FPS with {entry.get('provider')}, export {entry.get('export_s', 0):.0f} s"
    text = row_text(entry)
    return text if text != "no numbers" else json.dumps(entry)[:300]


def print_table(results: dict, models: list[str]) -> None:
    print(f"device: {results.get('device')}  commit: {results.get('commit')}")
    print(f"{'model':<11} {'mode':<20} {'ms':>8} {'FPS':>8}")
    for name in models:
        entry = results.get(name, {})
        for mode in TABLE_MODES:
            print(f"{name:<11} {mode:<20} {row_text(entry.get(mode))}")
        parity = entry.get("parity", {})
        if "bf16_vs_fp32_max_abs_logit" in parity:
            graph = parity["graph_vs_eager_bf16_max_abs_logit"]
            graph = f"{graph:.3g}" if isinstance(graph, float) else graph
            print(f"{name:<11} {'parity':<20} |bf16-fp32| {parity['bf16_vs_fp32_max_abs_logit']:.3g}, "
                  f"|graph-eager| {graph} (max |logit| {parity['max_abs_logit_fp32']:.3g})")  # fmt: skip
        elif "parity" in entry:
            print(f"{name:<11} {'parity':<20} {row_text(parity)}")
        onnx = entry.get("onnx")
        if isinstance(onnx, dict) and "latency" in onnx:
            print(f"{name:<11} {'onnx':<20} {row_text(onnx['latency'])}  {onnx['provider']}, export "
                  f"{onnx['export_s']:.0f} s, {onnx['file_mb']:.0f} MB, opset {onnx['opset']}")  # fmt: skip
        elif onnx is not None:
            print(f"{name:<11} {'onnx':<20} {row_text(onnx)}")
        check = entry.get("onnx_parity")
        if isinstance(check, dict) and "max_score_diff" in check:
            box = "n/a" if check["max_box_diff"] is None else f"{check['max_box_diff']:.2g}"
            print(f"{name:<11} {'onnx_parity':<20} score {check['max_score_diff']:.2g}, box {box} "
                  f"({check['provider']} vs torch {check['torch_device']}, "
                  f"within tolerance: {check['within_tolerance']})")  # fmt: skip
        elif check is not None:
            print(f"{name:<11} {'onnx_parity':<20} {row_text(check)}")


# ------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="sparsebev,streampetr", help="comma-separated: sparsebev, streampetr")
    parser.add_argument("--sparsebev-config", default="configs/sparsebev_r50.yaml")
    parser.add_argument("--streampetr-config", default="configs/streampetr_r50.yaml")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: a rehearsal of every path "
                        "except the CUDA-graph ones (use the tiny configs)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=200, help="timed calls per inference section")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls before each inference section")
    parser.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=None,
                        help="ONNX export, ONNX Runtime latency and parity (default: on if onnxruntime imports)")
    parser.add_argument("--max-seconds", type=float, default=420.0, help="sections not started by then are skipped")
    parser.add_argument("--out", default="docs/results/speed.json")
    parser.add_argument("--commit", default=None, help="commit to record where the tree has no .git (default: git)")
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - {"sparsebev", "streampetr"})
    if unknown:
        parser.error(f"--models: unknown {unknown}; expected sparsebev and/or streampetr")
    if args.steps < 1 or args.warmup < 1:
        parser.error(f"--steps and --warmup must be >= 1, got {args.steps} and {args.warmup}")
    return args


def onnxruntime_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmarks/speed.py: --device cuda but no CUDA device is available (use --device cpu)")
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    ort_version = onnxruntime_version()
    onnx = ort_version is not None if args.onnx is None else args.onnx
    results = {
        "device": device_name(device),
        "device_type": device.type,
        "commit": args.commit or git_commit(),
        "torch": torch.__version__,
        "onnxruntime": ort_version,
        "argv": sys.argv[1:] if argv is None else list(argv),
        "protocol": "batch 1, 6 cameras, one new frame per step (backbone on 6 images, normalisation on the device "
        "included), median of per-step wall times synchronised with the device, after warm-up; random weights; "
        "fp32 sections with TF32 allowed on CUDA",
        "steps": args.steps,
        "warmup": args.warmup,
        "max_seconds": args.max_seconds,
        "finished": False,
    }
    recorder = Recorder(Path(args.out), results, started, started + args.max_seconds, device)
    recorder.write()
    configs = {"sparsebev": args.sparsebev_config, "streampetr": args.streampetr_config}
    benches = {"sparsebev": SparseBEVBench, "streampetr": StreamPETRBench}
    for name in args.models:
        try:
            bench = benches[name](configs[name], device, args.steps, args.warmup)
        except Exception as error:  # e.g. a config that does not load: record it and go on with the next model
            traceback.print_exc()
            recorder.record(name, "setup", {"error": f"{type(error).__name__}: {error}"[:2000]})
            continue
        results.setdefault(name, {}).update(bench.info())
        for section, function in bench.sections():
            recorder.section(name, section, function)
        bench.release()
    with tempfile.TemporaryDirectory(prefix="ftkd_speed_") as workdir:
        for name in args.models:
            if not onnx:
                recorder.record(name, "onnx", {"skipped": "--no-onnx or onnxruntime does not import"})
                continue
            try:
                bench = OnnxBench(configs[name], device, args.steps, args.warmup, Path(workdir))
            except Exception as error:
                traceback.print_exc()
                recorder.record(name, "onnx", {"error": f"{type(error).__name__}: {error}"[:2000]})
                continue
            recorder.section(name, "onnx", bench.export)
            recorder.section(name, "onnx_parity", bench.parity)
            bench.release()
    results["finished"] = True
    recorder.write()
    print_table(results, args.models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
