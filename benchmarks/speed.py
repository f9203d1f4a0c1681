"""Inference and training speed of the online students (SPEC section 6), on one GPU.

For SparseBEV-R50 (8 frames, 900 queries) and StreamPETR-R50 (644 + 256 queries), 6 x 256 x 704, batch 1:
- end to end online FPS: a stream of frames where each step brings one new frame (6 images through the backbone,
  past-frame features from the cache for SparseBEV, the memory queue for StreamPETR), GPU normalisation included;
  eager fp32, eager bf16 and CUDA-graph bf16 (the outputs of the graph are checked against eager);
- backbone-only FPS on the same 6 images (the ceiling of any end-to-end number);
- training step time and peak memory at batch 1 (bf16 autocast, AdamW), the student as `ftkd train` runs it.

Weights are random (speed does not depend on them). Run from the repository root:
    python benchmarks/speed.py [--models sparsebev,streampetr] [--steps 200] [--out docs/results/speed.json]
Writes one JSON with the device, commit and every number, and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ftkd.config import load_config
from ftkd.constants import CAMERA_NAMES
from ftkd.data.synth.rig import build_rig
from ftkd.models.build import build_model
from ftkd.structures import Batch, SampleMeta


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return sha + ("+uncommitted" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def stream_batch(step: int, num_frames: int, image_size: tuple[int, int], device: torch.device) -> Batch:
    """Frame `step` of a synthetic drive: the real nuScenes rig, the ego moving 5 m/s forward, random images.

    Frame t of the sample is stream frame `step - t` (0.5 s apart), so each new step brings exactly one new frame.
    """
    H, W = image_size
    rig = build_rig(W, H)
    ego_from_camera = [rig[name].sensor_to_ego for name in CAMERA_NAMES]
    lidar2img = np.zeros((num_frames, len(CAMERA_NAMES), 4, 4))
    intrinsics = np.zeros((num_frames, len(CAMERA_NAMES), 3, 3))
    for t in range(num_frames):
        now_to_then = np.eye(4)
        now_to_then[0, 3] = 5.0 * 0.5 * t  # a point now at x was at x + 2.5 t metres ahead of the past ego
        for n, name in enumerate(CAMERA_NAMES):
            K = np.eye(4)
            K[:3, :3] = rig[name].intrinsic
            lidar2img[t, n] = K @ np.linalg.inv(ego_from_camera[n]) @ now_to_then
            intrinsics[t, n] = rig[name].intrinsic
    generator = torch.Generator().manual_seed(step)
    images = torch.randint(0, 256, (1, num_frames, len(CAMERA_NAMES), 3, H, W), dtype=torch.uint8, generator=generator)
    ego_pose = torch.eye(4, dtype=torch.float64)
    ego_pose[0, 3] = 2.5 * step
    return Batch(
        images=images,
        lidar2img=torch.from_numpy(lidar2img).float()[None],
        intrinsics=torch.from_numpy(intrinsics).float()[None],
        time_offsets=torch.arange(num_frames, dtype=torch.float32)[None] * 0.5,
        frame_valid=torch.ones(1, num_frames, dtype=torch.bool),
        ego_pose=ego_pose[None],
        timestamp=torch.tensor([1.5e9 + 0.5 * step], dtype=torch.float64),
        scene_start=torch.tensor([step == 0]),
        gt_boxes=[torch.tensor([[12.0, 2.0, 0.9, 1.9, 4.6, 1.7, 0.3, 4.0, 0.0], [-9.0, -5.0, 0.9, 0.7, 0.7, 1.8, 1.2, 1.0, 0.5]])],
        gt_labels=[torch.tensor([0, 8])],
        meta=[SampleMeta(f"stream{step}", "stream", 1.5e9 + 0.5 * step, np.eye(4), {"frame_keys": [step - t for t in range(num_frames)]})],
    ).to(device)


def time_calls(function, steps: int, warmup: int) -> list[float]:
    """Milliseconds per call of `function(step)` after `warmup` calls, synchronised."""
    for step in range(warmup):
        function(step)
    torch.cuda.synchronize()
    times = []
    for step in range(warmup, warmup + steps):
        start = time.perf_counter()
        function(step)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def summary(times: list[float]) -> dict:
    median = statistics.median(times)
    return {"median_ms": median, "mean_ms": statistics.fmean(times), "fps": 1000.0 / median, "samples": len(times)}


def backbone_only(model: torch.nn.Module, image_size: tuple[int, int], steps: int, dtype: torch.dtype | None) -> dict:
    from ftkd.models.common.image_ops import normalize_images

    H, W = image_size
    images = torch.randint(0, 256, (len(CAMERA_NAMES), 3, H, W), dtype=torch.uint8, device="cuda")

    @torch.no_grad()
    def run(_: int) -> None:
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            model.backbone(normalize_images(images))

    return summary(time_calls(run, steps, warmup=20))


def train_step(config_path: str, steps: int) -> dict:
    """Step time and peak memory of student training at batch 1 (bf16 autocast, AdamW, grad clip)."""
    config = load_config(config_path)
    model = build_model(config.model).cuda().train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    num_frames = getattr(config.model, "num_frames", 1)
    batches = [stream_batch(k, num_frames, config.data.image_size, torch.device("cuda")) for k in range(4)]

    def run(step: int) -> None:
        batch = batches[step % len(batches)]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            output = model(batch)
        losses = model.criterion(output, batch)
        total = sum(losses[k] * w for k, w in model.criterion.weight_dict.items() if k in losses)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 35.0)
        optimizer.step()

    torch.cuda.reset_peak_memory_stats()
    result = summary(time_calls(run, steps, warmup=5))
    result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def max_abs_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def bench_sparsebev(config_path: str, steps: int) -> dict:
    from ftkd.models.sparsebev.online import OnlineSparseBEV

    config = load_config(config_path)
    model = build_model(config.model).cuda().eval()
    T, size = config.model.num_frames, config.data.image_size
    batches = [stream_batch(k, T, size, torch.device("cuda")) for k in range(steps + 40)]
    result = {"config": config_path, "queries": config.model.num_queries, "frames": T, "image_size": list(size)}
    outputs = {}
    for name, dtype, graph in [("eager_fp32", None, False), ("eager_bf16", torch.bfloat16, False), ("graph_bf16", torch.bfloat16, True)]:
        online = OnlineSparseBEV(model, max_cached_frames=2 * T, autocast_dtype=dtype, cuda_graph=graph)
        result[name] = summary(time_calls(lambda k: online(batches[k]), steps, warmup=20))
        if online.last_backbone_frames != 1:
            raise RuntimeError(f"{name}: expected one new frame per step, the backbone ran on {online.last_backbone_frames}")
        online.reset()
        outputs[name] = [online(batches[k]).pred_logits.clone() for k in range(T + 2)][-1]
    result["graph_vs_eager_bf16_max_abs_logit"] = max_abs_difference(outputs["graph_bf16"], outputs["eager_bf16"])
    result["bf16_vs_fp32_max_abs_logit"] = max_abs_difference(outputs["eager_bf16"], outputs["eager_fp32"])
    result["backbone_only_fp32"] = backbone_only(model, size, steps, None)
    result["backbone_only_bf16"] = backbone_only(model, size, steps, torch.bfloat16)
    del model
    torch.cuda.empty_cache()
    result["train_step_bf16"] = train_step(config_path, max(10, steps // 10))
    return result


def bench_streampetr(config_path: str, steps: int) -> dict:
    from ftkd.models.streampetr.online import CudaGraphStreamPETR

    config = load_config(config_path)
    model = build_model(config.model).cuda().eval()
    size = config.data.image_size
    batches = [stream_batch(k, 1, size, torch.device("cuda")) for k in range(steps + 40)]
    result = {
        "config": config_path,
        "queries": config.model.num_queries + config.model.num_propagated,
        "image_size": list(size),
    }

    result["eager_fp32"] = summary(time_calls(lambda k: eager_step(model, batches[k], None), steps, warmup=20))
    result["eager_bf16"] = summary(time_calls(lambda k: eager_step(model, batches[k], torch.bfloat16), steps, warmup=20))
    graph = CudaGraphStreamPETR(model, image_size=tuple(size), dtype=torch.bfloat16)
    result["graph_bf16"] = summary(time_calls(lambda k: graph(batches[k]), steps, warmup=20))
    # parity: the same 4-frame sequence from a fresh memory, eager vs graph
    model.reset_memory()
    graph.reset()
    sequence = [replace(batches[k], scene_start=torch.tensor([k == 0], device="cuda")) for k in range(4)]
    eager_logits = [eager_step(model, b, torch.bfloat16).pred_logits.clone() for b in sequence]
    graph_logits = [graph(b).pred_logits.clone() for b in sequence]
    result["graph_vs_eager_bf16_max_abs_logit"] = max(max_abs_difference(a, b) for a, b in zip(graph_logits, eager_logits))
    result["backbone_only_fp32"] = backbone_only(model, size, steps, None)
    result["backbone_only_bf16"] = backbone_only(model, size, steps, torch.bfloat16)
    del model, graph
    torch.cuda.empty_cache()
    result["train_step_bf16"] = train_step(config_path, max(10, steps // 10))
    return result


@torch.no_grad()
def eager_step(model: torch.nn.Module, batch: Batch, dtype: torch.dtype | None):
    """One eval-mode forward under bf16 autocast (dtype) or in fp32 (None)."""
    with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
        return model(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="sparsebev,streampetr")
    parser.add_argument("--sparsebev-config", default="configs/sparsebev_r50.yaml")
    parser.add_argument("--streampetr-config", default="configs/streampetr_r50.yaml")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", default="docs/results/speed.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/speed.py measures GPU speed: no CUDA device is available")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    results = {
        "device": torch.cuda.get_device_name(),
        "commit": git_commit(),
        "torch": torch.__version__,
        "protocol": "batch 1, 6 cameras, one new frame per step (backbone on 6 images, GPU normalisation "
        "included), median of synchronised per-step wall times after warm-up, random weights",
    }
    benches = {"sparsebev": (bench_sparsebev, args.sparsebev_config), "streampetr": (bench_streampetr, args.streampetr_config)}
    for name in args.models.split(","):
        function, config_path = benches[name]
        results[name] = function(config_path, args.steps)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(out)
    print(f"device: {results['device']}  commit: {results['commit']}")
    print(f"{'model':<11} {'mode':<20} {'ms':>8} {'FPS':>8}")
    for name in args.models.split(","):
        for mode in ("eager_fp32", "eager_bf16", "graph_bf16", "backbone_only_fp32", "backbone_only_bf16", "train_step_bf16"):
            row = results[name][mode]
            extra = f"  peak {row['peak_gib']:.1f} GiB" if "peak_gib" in row else ""
            print(f"{name:<11} {mode:<20} {row['median_ms']:8.2f} {row['fps']:8.1f}{extra}")


if __name__ == "__main__":
    main()
