"""PyTorch sections of the speed benchmark (`benchmarks/speed.py`): the synthetic stream of batches, per-call timing
on the device, and the torch measurements of the two online students (eager fp32 / bf16, CUDA-graph bf16, logit
parity, backbone only, training step; for SparseBEV also its opt-in inference options, bf16 weights and a compiled
decoder layer), each returning one JSON section as a dict.

Not a script: `benchmarks/speed.py` imports it (benchmarks/ is not a package); the online runners and the CUDA-graph
wrapper are imported inside the sections that use them.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ftkd.config import load_config
from ftkd.constants import CAMERA_NAMES
from ftkd.data.synth.rig import build_rig
from ftkd.models.build import build_model
from ftkd.structures import Batch, SampleMeta

NEEDS_CUDA = {"skipped": "needs CUDA"}
PROFILE_STEPS = 5  # profiled eager steps (SparseBEV kernel table)
NUM_POOL_FRAMES = 4  # distinct random camera frames cycled through a stream (timing does not depend on content)


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


def warm_up(function: Callable[[int], Any], calls: int, device: torch.device) -> float:
    """Seconds of `calls` untimed calls `function(0..calls-1)` (compiles and CUDA-graph captures happen here)."""
    start = time.perf_counter()
    for step in range(calls):
        function(step)
    synchronize(device)
    return time.perf_counter() - start


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


class StudentBench:
    """What both students' sections share: the config, one eval model, a stream of batches, the backbone-only and
    training-step sections, and releasing it all before training builds its own model."""

    stream_frames: int  # frames per sample of the stream (set by each student)
    min_batches: int  # the parity sequence's length

    def __init__(self, config_path: str, device: torch.device, steps: int, warmup: int) -> None:
        self.config_path, self.device, self.steps, self.warmup = config_path, device, steps, warmup
        self.config = load_config(config_path)
        self.size = tuple(self.config.data.image_size)
        self._model: torch.nn.Module | None = None
        self._batches: list[Batch] | None = None

    def model(self) -> torch.nn.Module:
        if self._model is None:
            torch.manual_seed(0)
            self._model = build_model(self.config.model).to(self.device).eval()
        return self._model

    def batches(self) -> list[Batch]:
        if self._batches is None:
            count = max(self.warmup + self.steps, self.min_batches)
            self._batches = Stream(self.stream_frames, self.size, self.device).batches(count)
        return self._batches

    def backbone(self, dtype: torch.dtype | None) -> dict:
        return backbone_only(self.model(), self.size, self.steps, self.warmup, dtype, self.device)

    def train(self) -> dict:
        self.release()
        return train_step(self.config_path, train_steps(self.steps), min(5, self.warmup), self.device)

    def option_sections(self, compile_backend: str) -> list[tuple[str, Callable[[], dict] | dict]]:
        """Sections of opt-in inference options, run after every other section (none by default)."""
        return []

    def release(self) -> None:
        """Drop the eval model, its runners (CUDA graphs) and batches before training builds its own model."""
        self.drop_runners()
        self._model = self._batches = None
        release_memory(self.device)

    def drop_runners(self) -> None:
        raise NotImplementedError


class SparseBEVBench(StudentBench):
    """Sections of the online SparseBEV (`OnlineSparseBEV`: FPN features of past frames from a FIFO cache)."""

    def __init__(self, config_path: str, device: torch.device, steps: int, warmup: int) -> None:
        super().__init__(config_path, device, steps, warmup)
        self.T = self.stream_frames = self.config.model.num_frames
        self.min_batches = self.T + 2  # the parity stream is T + 2 samples long
        self.runners: dict[str, Any] = {}
        self._parity_reference: dict[str, list[torch.Tensor]] | None = None  # eager fp32 / bf16 logits

    def info(self) -> dict:
        model = self.config.model
        return {"config": self.config_path, "queries": model.num_queries, "frames": self.T,
                "image_size": list(self.size)}  # fmt: skip

    def sections(self) -> list[tuple[str, Callable[[], dict] | dict]]:
        cuda = self.device.type == "cuda"
        return [
            ("eager_fp32", lambda: self.online("eager_fp32", None, False)),
            ("eager_bf16", lambda: self.online("eager_bf16", torch.bfloat16, False)),
            ("graph_bf16", (lambda: self.online("graph_bf16", torch.bfloat16, True)) if cuda else NEEDS_CUDA),
            ("parity", self.parity),
            ("decoder_eager_bf16", lambda: self.decoder_only(torch.bfloat16, False)),
            ("decoder_graph_bf16", (lambda: self.decoder_only(torch.bfloat16, True)) if cuda else NEEDS_CUDA),
            ("profile_bf16", self.profile),
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

    def decoder_only(self, dtype: torch.dtype | None, graph: bool) -> dict:
        """The same sample again and again: every frame is cached, so only the decoder runs (the head's share of
        an end-to-end step)."""
        from ftkd.models.sparsebev.online import OnlineSparseBEV

        runner = OnlineSparseBEV(self.model(), max_cached_frames=2 * self.T, autocast_dtype=dtype, cuda_graph=graph)
        batch = self.batches()[self.T]
        runner(batch)  # fills the cache
        result = summary(time_calls(lambda _: runner(batch), self.steps, self.warmup, self.device))
        if runner.last_backbone_frames != 0:
            raise RuntimeError(f"decoder_only: the backbone ran on {runner.last_backbone_frames} frames")
        return result

    def profile(self) -> dict:
        """Where the time of an eager bf16 step goes: `torch.profiler` over `PROFILE_STEPS` steps of the stream, the
        kernels (CUDA; operators on the CPU) with the most self time per step, and the kernel count per step."""
        from torch.profiler import ProfilerActivity, profile

        from ftkd.models.sparsebev.online import OnlineSparseBEV

        runner = OnlineSparseBEV(self.model(), max_cached_frames=2 * self.T, autocast_dtype=torch.bfloat16)
        batches = self.batches()
        for k in range(self.T + 1):  # a warm cache: one new frame per profiled step
            runner(batches[k])
        cuda = self.device.type == "cuda"
        activities = [ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
        synchronize(self.device)
        with profile(activities=activities) as prof:
            for k in range(self.T + 1, self.T + 1 + PROFILE_STEPS):
                runner(batches[k % len(batches)])
            synchronize(self.device)
        return kernel_table(prof.key_averages(), cuda, PROFILE_STEPS)

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

    def option_sections(self, compile_backend: str) -> list[tuple[str, Callable[[], dict] | dict]]:
        """`OnlineSparseBEV`'s opt-in options in CUDA graphs: bf16 weights instead of autocast, the decoder layer
        compiled with `compile_backend` (with autocast, with bf16 weights), the decoder alone with both, and one
        parity entry per option. On the CPU the same runners run eagerly (entries say `"cuda_graph": false`)."""
        compiled = {"compile_decoder": True, "compile_backend": compile_backend}
        options = {
            "graph_bf16_weights": {"weights_dtype": torch.bfloat16},
            "graph_compile_bf16": {"autocast_dtype": torch.bfloat16, **compiled},
            "graph_compile_bf16_weights": {"weights_dtype": torch.bfloat16, **compiled},
        }
        sections: list[tuple[str, Callable[[], dict] | dict]] = [
            (name, lambda name=name, option=option: self.option(name, option)) for name, option in options.items()
        ]
        both = "graph_compile_bf16_weights"
        sections.append((f"decoder_{both}", lambda: self.option_decoder(both, options[both])))
        sections += [
            (f"parity_{name[len('graph_'):]}", lambda name=name, option=option: self.option_parity(name, option))
            for name, option in options.items()
        ]
        return sections

    def option_runner(self, options: dict) -> Any:
        from ftkd.models.sparsebev.online import OnlineSparseBEV

        return OnlineSparseBEV(self.model(), max_cached_frames=2 * self.T, cuda_graph=True, **options)

    def option(self, name: str, options: dict) -> dict:
        """An end-to-end section like graph_bf16 with `options`; `warmup_s` is the time of the untimed warm-up calls
        (the compile and the CUDA-graph captures happen in the first)."""
        runner = self.option_runner(options)
        batches = self.batches()
        warmup_s = warm_up(lambda k: runner(batches[k]), self.warmup, self.device)
        result = summary(time_calls(lambda k: runner(batches[self.warmup + k]), self.steps, 0, self.device))
        if runner.last_backbone_frames != 1:
            raise RuntimeError(
                f"{name}: expected one new frame per step, the backbone ran on {runner.last_backbone_frames}"
            )
        self.runners[name] = runner  # for the decoder-only and parity sections (only runners that worked)
        return {**result, "warmup_s": round(warmup_s, 2), "cuda_graph": self.device.type == "cuda"}

    def option_decoder(self, name: str, options: dict) -> dict:
        """decoder_graph_bf16 with `options`, reusing section `name`'s runner (compiled, captured) if it worked."""
        runner = self.runners.get(name) or self.option_runner(options)
        runner.reset()
        batch = self.batches()[self.T]
        warmup_s = warm_up(lambda _: runner(batch), self.warmup + 1, self.device)  # the first call fills the cache
        result = summary(time_calls(lambda _: runner(batch), self.steps, 0, self.device))
        if runner.last_backbone_frames != 0:
            raise RuntimeError(f"decoder_{name}: the backbone ran on {runner.last_backbone_frames} frames")
        return {**result, "warmup_s": round(warmup_s, 2), "cuda_graph": self.device.type == "cuda"}

    def option_parity(self, name: str, options: dict) -> dict:
        """Largest logit difference of option `name` vs eager fp32 over the parity stream (first T + 2 samples from
        an empty cache), next to eager bf16 autocast's for scale; the runner of the timed section `name`."""
        runner = self.runners.get(name)
        if runner is None:
            return {"skipped": f"{name} did not run or failed"}
        from ftkd.models.sparsebev.online import OnlineSparseBEV

        batches = self.batches()[: self.T + 2]
        if self._parity_reference is None:
            reference = {}
            for mode, dtype in (("eager_fp32", None), ("eager_bf16", torch.bfloat16)):
                eager = OnlineSparseBEV(self.model(), max_cached_frames=2 * self.T, autocast_dtype=dtype)
                reference[mode] = [eager(batch).pred_logits.clone() for batch in batches]
            self._parity_reference = reference
        fp32, bf16 = self._parity_reference["eager_fp32"], self._parity_reference["eager_bf16"]
        runner.reset()
        logits = [runner(batch).pred_logits.clone() for batch in batches]
        return {
            "frames": len(batches),
            "options": {key: str(value) for key, value in options.items()},
            "cuda_graph": self.device.type == "cuda",
            "max_abs_logit_fp32": max(float(x.abs().max()) for x in fp32),
            "vs_eager_fp32_max_abs_logit": max(max_abs_difference(a, b) for a, b in zip(logits, fp32)),
            "eager_bf16_vs_fp32_max_abs_logit": max(max_abs_difference(a, b) for a, b in zip(bf16, fp32)),
        }

    def drop_runners(self) -> None:
        self.runners.clear()
        self._parity_reference = None


class StreamPETRBench(StudentBench):
    """Sections of StreamPETR (its memory queue carries the past; `CudaGraphStreamPETR` replays one captured step)."""

    def __init__(self, config_path: str, device: torch.device, steps: int, warmup: int) -> None:
        super().__init__(config_path, device, steps, warmup)
        self.stream_frames, self.min_batches = 1, 4  # one frame per step; the parity stream is 4 frames long
        self.graph = None

    def info(self) -> dict:
        model = self.config.model
        return {"config": self.config_path, "queries": model.num_queries + model.num_propagated,
                "image_size": list(self.size)}  # fmt: skip

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

    def drop_runners(self) -> None:
        self.graph = None


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


def kernel_table(events: Any, cuda: bool, steps: int, top: int = 25) -> dict:
    """Per-step self time of the `top` most expensive kernels (CUDA) or operators (CPU) of a profile, the total over
    all of them and their count per step (on CUDA, the kernels a graph replays; their sum against the graph's wall
    time says whether a step is bound by kernels or by the gaps between them)."""
    def self_us(event: Any) -> float:
        return event.self_device_time_total if cuda else event.self_cpu_time_total

    rows = [e for e in events if self_us(e) > 0 and (not cuda or e.device_type == torch.autograd.DeviceType.CUDA)]
    rows.sort(key=self_us, reverse=True)
    return {
        "kind": "cuda kernels" if cuda else "cpu operators",
        "steps": steps,
        "total_ms_per_step": sum(self_us(e) for e in rows) / 1000.0 / steps,
        "count_per_step": sum(e.count for e in rows) / steps,
        "top": [{"name": e.key[:120], "ms_per_step": self_us(e) / 1000.0 / steps, "calls_per_step": e.count / steps}
                for e in rows[:top]],  # fmt: skip
    }


def train_steps(steps: int) -> int:
    """Timed training steps: a tenth of the inference steps, at least 10 (fewer only if `steps` itself is)."""
    return min(steps, max(10, steps // 10))


# ------------------------------------------------------------------------------------------------ memory


def release_memory(device: torch.device) -> None:
    """Free what the last section dropped (Python garbage, then CUDA's cached blocks) before the next one."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
