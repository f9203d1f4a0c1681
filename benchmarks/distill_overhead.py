"""Cost of FTKD training against student-only training (GPU): step time and peak memory.

Student: SparseBEV-R50 at paper size (configs/ftkd_sparsebev_r50.yaml: 8 frames, 900 queries, 256x704).
Teacher: the offline SparseBEV-R101 with 7 past + current + 7 future frames, frozen, eval mode, no autograd,
bf16 autocast, channels_last. Both steps run the same random batch under bf16 autocast with AdamW.
The target (SPEC section 6) is an FTKD step <= 1.5x a student-only step.

    python benchmarks/distill_overhead.py [--steps 20] [--teacher-image-size 512x1408]

Prints a table and writes docs/results/distill_overhead.json (device, commit, settings, results).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from ftkd.config import load_config
from ftkd.distill.objective import build_distillation_objective
from ftkd.distill.teacher import Teacher
from ftkd.engine.objective import DetectionObjective
from ftkd.models.build import build_model
from ftkd.structures import Batch, SampleMeta

ROOT = Path(__file__).resolve().parents[1]


def ring_lidar2img(image_size: tuple[int, int]) -> torch.Tensor:
    """[6, 4, 4] reference frame -> pixel matrices of six pinhole cameras around the car, 1.5 m up."""
    H, W = image_size
    K = torch.tensor([[0.7 * W, 0, W / 2, 0], [0, 0.7 * W, H / 2, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float64)
    mats = []
    for yaw in np.deg2rad([0, -55, 55, 180, 110, -110]):
        forward = torch.tensor([math.cos(yaw), math.sin(yaw), 0.0], dtype=torch.float64)
        right = torch.tensor([math.sin(yaw), -math.cos(yaw), 0.0], dtype=torch.float64)
        down = torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64)
        world_to_cam = torch.eye(4, dtype=torch.float64)
        world_to_cam[:3, :3] = torch.stack([right, down, forward])  # rows: camera x, y, z axes
        world_to_cam[:3, 3] = -world_to_cam[:3, :3] @ torch.tensor([1.0, 0.0, 1.5], dtype=torch.float64)
        mats.append(K @ world_to_cam)
    return torch.stack(mats).float()


def random_batch(B: int, T: int, F: int, image_size: tuple[int, int], num_boxes: int, device: torch.device) -> Batch:
    """A batch of random images with the ring geometry, frames 0.5 s apart, `num_boxes` random cars per sample."""
    generator = torch.Generator().manual_seed(0)
    H, W = image_size
    N = 6
    offsets = torch.cat([torch.arange(T) * 0.5, -(torch.arange(F) + 1) * 0.5]).float()
    boxes = []
    for _ in range(B):
        xy = (torch.rand(num_boxes, 2, generator=generator) - 0.5) * 90
        size = torch.tensor([1.9, 4.6, 1.7]).expand(num_boxes, 3)
        yaw = torch.rand(num_boxes, 1, generator=generator) * 6.28 - 3.14
        vel = torch.randn(num_boxes, 2, generator=generator) * 3
        boxes.append(torch.cat([xy, torch.full((num_boxes, 1), 0.85), size, yaw, vel], dim=1))
    batch = Batch(
        images=torch.randint(0, 255, (B, T, N, 3, H, W), dtype=torch.uint8, generator=generator),
        future_images=torch.randint(0, 255, (B, F, N, 3, H, W), dtype=torch.uint8, generator=generator) if F else None,
        lidar2img=ring_lidar2img(image_size).expand(B, T + F, N, 4, 4).clone(),
        intrinsics=torch.eye(3).expand(B, T + F, N, 3, 3).clone(),
        time_offsets=offsets.expand(B, T + F).clone(),
        frame_valid=torch.ones(B, T + F, dtype=torch.bool),
        ego_pose=torch.eye(4, dtype=torch.float64).expand(B, 4, 4).clone(),
        timestamp=torch.zeros(B, dtype=torch.float64),
        scene_start=torch.ones(B, dtype=torch.bool),
        gt_boxes=boxes,
        gt_labels=[torch.randint(0, 10, (num_boxes,), generator=generator) for _ in range(B)],
        meta=[SampleMeta(f"bench{b}", "bench", 0.0, np.eye(4)) for b in range(B)],
    )
    return batch.to(device)


def time_steps(objective: torch.nn.Module, batch: Batch, steps: int, warmup: int) -> dict[str, float]:
    """Mean ms per training step (forward + backward + AdamW, bf16 autocast) and peak GiB allocated."""
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=True)
    objective.train()
    device = batch.images.device

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            losses, _ = objective(batch)
        total = sum(losses[k].float() * w for k, w in objective.weight_dict.items() if k in losses)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 35.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    return {"ms_per_step": 1000 * elapsed / steps, "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30}


@torch.no_grad()
def time_teacher(teacher: Teacher, batch: Batch, steps: int, warmup: int) -> float:
    """Mean ms of one teacher forward (inference mode, its precision)."""
    for _ in range(warmup):
        teacher(batch)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        teacher(batch)
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start) / steps


def breakdown(objective: torch.nn.Module, batch: Batch, steps: int) -> dict[str, float]:
    """Mean ms of the distillation-only parts on fixed outputs: matching (CPU Hungarian) and all KD losses."""
    from ftkd.distill.fld import match_queries

    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        student_out = objective.model(batch.student_view(objective.student_frames))
        teacher_out = objective.teacher(batch)
    config = objective.config

    def matching() -> None:
        match_queries(
            teacher_out.pred_logits, teacher_out.pred_boxes, student_out.pred_logits, student_out.pred_boxes,
            objective.code_weights, config.match_cls_weight, config.match_box_weight, config.fg_score_threshold,
            config.matching,
        )  # fmt: skip

    def kd_losses() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            objective.kd_losses(student_out, teacher_out)

    # Predictions shaped like a trained pair's: queries spread over the BEV range, the student's 1 m off the
    # teacher's, 40 confident teacher queries. Untrained models (this benchmark's random weights) give nearly tied
    # costs, the Hungarian solver's worst case.
    generator = torch.Generator().manual_seed(0)
    Q, K = teacher_out.pred_logits.shape[1:]
    side = math.isqrt(Q)
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-50, 50, side)] * 2, indexing="ij"), -1).reshape(-1, 2)
    teacher_boxes = torch.randn(1, Q, 10, generator=generator) * 0.3
    teacher_boxes[0, : side * side, :2] += grid + torch.randn(side * side, 2, generator=generator) * 2
    student_boxes = teacher_boxes + torch.randn(1, Q, 10, generator=generator) * 0.5
    student_boxes[..., :2] += torch.randn(1, Q, 2, generator=generator)
    teacher_logits = torch.randn(1, Q, K, generator=generator) - 5
    teacher_logits[0, :40, 0] = 2.0
    student_logits = teacher_logits + torch.randn(1, Q, K, generator=generator)
    device = teacher_out.pred_logits.device
    structured = [t.to(device) for t in (teacher_logits, teacher_boxes, student_logits, student_boxes)]

    def matching_structured(topk: int = 0) -> None:
        match_queries(*structured, objective.code_weights, config.match_cls_weight, config.match_box_weight,
                      config.fg_score_threshold, config.matching, topk)

    times = {}
    for name, fn in (("matching_ms", matching), ("matching_structured_ms", matching_structured),
                     ("matching_structured_top300_ms", lambda: matching_structured(300)),
                     ("kd_losses_ms", kd_losses)):
        fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
        times[name] = 1000 * (time.perf_counter() - start) / steps
    return times


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
        return sha.stdout.strip() + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def parse_size(text: str) -> tuple[int, int]:
    height, width = text.lower().split("x")
    return int(height), int(width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs/ftkd_sparsebev_r50.yaml"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1, help="per-GPU batch (official recipe: 1)")
    parser.add_argument("--teacher-depth", type=int, default=101)
    parser.add_argument("--future-frames", type=int, default=7)
    parser.add_argument("--teacher-image-size", type=parse_size, default=None, help="HxW, default: the student's")
    parser.add_argument("--num-boxes", type=int, default=30)
    parser.add_argument("--out", default=str(ROOT / "docs/results/distill_overhead.json"))
    parser.add_argument("--commit", default=None, help="commit to record (default: git rev-parse HEAD here)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="dotted overrides of the config, e.g. distill.match_teacher_topk=300")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("distill_overhead.py needs a CUDA GPU")
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True

    config = load_config(args.config, args.set)
    student_config = config.model
    T = student_config.num_frames
    teacher_config = dataclasses.replace(
        student_config,
        offline=True,
        num_frames=T + args.future_frames,
        backbone=dataclasses.replace(student_config.backbone, depth=args.teacher_depth, with_checkpoint=False),
    )
    image_size = tuple(config.data.image_size)
    batch = random_batch(args.batch, T, args.future_frames, image_size, args.num_boxes, device)
    results = {}

    torch.manual_seed(0)
    student = build_model(student_config).to(device)
    results["student"] = time_steps(DetectionObjective(student), batch.student_view(), args.steps, args.warmup)
    del student
    torch.cuda.empty_cache()

    torch.manual_seed(0)
    teacher = Teacher(
        build_model(teacher_config), T, args.future_frames, config.distill.teacher_precision, args.teacher_image_size
    ).to(device)
    teacher_ms = time_teacher(teacher, batch, args.steps, args.warmup)
    student = build_model(student_config)
    objective = build_distillation_objective(student, student_config, teacher, teacher_config, config.distill)
    objective.to(device)
    results["ftkd"] = time_steps(objective, batch, args.steps, args.warmup)
    results["ftkd"]["teacher_forward_ms"] = teacher_ms
    results["ftkd"].update(breakdown(objective, batch, args.steps))

    ratio_time = results["ftkd"]["ms_per_step"] / results["student"]["ms_per_step"]
    ratio_memory = results["ftkd"]["peak_gib"] / results["student"]["peak_gib"]
    device_name = torch.cuda.get_device_name(device)
    print(f"device {device_name}, torch {torch.__version__}, batch {args.batch}, {image_size[0]}x{image_size[1]}")
    print(f"student SparseBEV-R{student_config.backbone.depth} {T} frames {student_config.num_queries} queries; "
          f"teacher SparseBEV-R{args.teacher_depth} {T}+{args.future_frames} frames "
          f"({config.distill.teacher_precision})")
    print(f"{'training step':<16}{'ms/step':>10}{'peak GiB':>10}")
    for name, row in results.items():
        print(f"{name:<16}{row['ms_per_step']:>10.1f}{row['peak_gib']:>10.2f}")
    parts = results["ftkd"]
    print(f"FTKD parts: teacher forward {teacher_ms:.1f} ms, teacher-student matching {parts['matching_ms']:.1f} ms "
          f"(on trained-like predictions: {parts['matching_structured_ms']:.1f} ms), all KD losses incl. matching "
          f"{parts['kd_losses_ms']:.1f} ms")
    print(f"FTKD / student: time {ratio_time:.2f}x (target <= 1.5), memory {ratio_memory:.2f}x")

    record = {
        "device": device_name,
        "commit": args.commit or git_commit(),
        "torch": torch.__version__,
        "settings": {
            "config": os.path.relpath(args.config, ROOT),
            "overrides": args.set,
            "batch_per_gpu": args.batch,
            "image_size": list(image_size),
            "teacher_image_size": list(args.teacher_image_size or image_size),
            "student": f"SparseBEV-R{student_config.backbone.depth}, {T} frames, {student_config.num_queries} queries",
            "teacher": f"SparseBEV-R{args.teacher_depth}, {T} + {args.future_frames} frames, "
            f"{config.distill.teacher_precision}, eval, no autograd",
            "precision": "bf16 autocast",
            "steps": args.steps,
            "warmup": args.warmup,
        },
        "results": results,
        "time_ratio": ratio_time,
        "memory_ratio": ratio_memory,
        "target_time_ratio": 1.5,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
