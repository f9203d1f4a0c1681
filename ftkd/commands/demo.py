"""`ftkd demo`: the whole FTKD story, tiny, on a CPU in about ten minutes.

1. a small synthetic world (nuScenes format; reused from the output folder when present);
2. the metric works: ground truth through the prediction path scores ~1, a perturbed copy scores less;
3. `ftkd train` an offline teacher (past + current + future frames), 4. `ftkd train` an online student (past +
   current), 5. `ftkd distill` the same student from the teacher (FTKD: PV/query FFR + FLD);
6. the official metric of the three (and of the untrained student) on the val split, one table;
7. BEV and camera pictures of the three on the same val sample and a side-by-side BEV figure;
8. `summary.json` and `summary.md` in the output folder.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace
from pathlib import Path

VERSION = "v1.0-synth"
VAL_SPLIT = "synth_val"


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (dataset, runs, metrics, pictures, summary)")
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="training budget: scales every model's optimiser steps by MINUTES/10 (the default "
                             "plan, 10, takes 5-7 min on a busy 2-core CPU)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the world, the weights, the data order, the noise")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke version in well under a minute (2 steps per model)")
    parser.add_argument("--workers", type=int, default=1, help="processes generating the world")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest for these tiny models on a busy 2-core machine)")


def perturb(predictions: list, seed: int) -> list:
    """A plausible imperfect detector made from ground truth: noisy boxes, misses, false positives, varied scores.

    Per box: centre x/y noise sigma 0.3 m, size x U(0.85, 1.15), yaw noise sigma 0.15 rad, velocity noise sigma
    0.5 m/s, 15% dropped; scores U(0.3, 1); per sample one false positive car 3-20 m from a true box.
    """
    import torch

    from ftkd.structures import Detections

    generator = torch.Generator().manual_seed(seed)
    perturbed = []
    for prediction in predictions:
        boxes = prediction.detections.boxes.double().clone()
        labels = prediction.detections.labels.clone()
        M = len(boxes)
        boxes[:, 0:2] += 0.3 * torch.randn(M, 2, generator=generator, dtype=torch.float64)
        boxes[:, 3:6] *= 0.85 + 0.3 * torch.rand(M, 3, generator=generator, dtype=torch.float64)
        boxes[:, 6] += 0.15 * torch.randn(M, generator=generator, dtype=torch.float64)
        boxes[:, 7:9] += 0.5 * torch.randn(M, 2, generator=generator, dtype=torch.float64)
        keep = torch.rand(M, generator=generator) > 0.15
        boxes, labels = boxes[keep], labels[keep]
        if len(boxes):
            false_positive = boxes[:1].clone()
            angle = 2 * math.pi * float(torch.rand(1, generator=generator))
            offset = 3 + 17 * float(torch.rand(1, generator=generator))
            false_positive[0, 0] += offset * math.cos(angle)
            false_positive[0, 1] += offset * math.sin(angle)
            false_positive[0, 3:6] = torch.tensor([1.9, 4.6, 1.7], dtype=torch.float64)
            boxes = torch.cat([boxes, false_positive])
            labels = torch.cat([labels, torch.zeros(1, dtype=labels.dtype)])
        scores = 0.3 + 0.7 * torch.rand(len(boxes), generator=generator, dtype=torch.float64)
        perturbed.append(replace(prediction, detections=Detections(boxes.float(), scores.float(), labels),
                                 attributes=None))
    return perturbed


class Stages:
    """Prints numbered stages with the elapsed time and keeps each stage's duration (seconds)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def begin(self, key: str, text: str) -> None:
        self.end()
        self.count += 1
        now = time.perf_counter()
        print(f"\n[{self.count}/{self.total}] {text}  (elapsed {now - self.start:.0f} s)", flush=True)
        self._current = (key, now)

    def end(self) -> None:
        if self._current is not None:
            key, began = self._current
            self.seconds[key] = time.perf_counter() - began
            self._current = None

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def run(args: argparse.Namespace) -> int:
    import torch

    from ftkd.data.check import check_data, ground_truth_predictions, write_ground_truth_results
    from ftkd.demo import (
        FOOTNOTE, FTKD_CONFIG, STUDENT_CONFIG, TEACHER_CONFIG, demo_plan, draw_models, evaluate_checkpoint,
        evaluate_model, experiment_overrides, format_table, frames_seen, make_world, metric_row, plan_dict,
        side_by_side, train_model, write_summary,
    )
    from ftkd.engine.evaluation import evaluate, load_nuscenes, split_sample_tokens
    from ftkd.models.build import build_model
    from ftkd.utils.seed import seed_everything

    if args.threads < 1 or args.workers < 1:
        print(f"ftkd demo: --threads and --workers must be >= 1, got {args.threads} and {args.workers}")
        return 2
    plan = demo_plan(args.quick, args.minutes)
    out = Path(args.out)
    runs = out / "runs"
    torch.set_num_threads(args.threads)
    stages = Stages(total=9)

    stages.begin("world", f"synthetic world: {plan.scenes} scenes ({plan.val_scenes} val) x {plan.samples_per_scene} "
                          f"keyframes, 6 cameras at {plan.stored_size[0]}x{plan.stored_size[1]}")
    dataroot, reused = make_world(out / "data", plan, args.seed, args.workers)
    print(f"{'reused' if reused else 'generated'} {dataroot}")

    stages.begin("metric_check", "the metric works: ground truth as a prediction, then a perturbed copy "
                                 f"(official nuScenes metric on {VAL_SPLIT})")
    report = check_data(dataroot, VERSION, VAL_SPLIT, out_dir=out / "gt_as_prediction")
    if not report.ok:
        print(report.format())
        print("the synthetic world failed its data check; stopping")
        return 1
    nusc = load_nuscenes(dataroot, VERSION)
    tokens = split_sample_tokens(nusc, VAL_SPLIT)
    predictions = perturb(ground_truth_predictions(dataroot, VERSION, VAL_SPLIT, nusc=nusc), args.seed)
    perturbed_path = write_ground_truth_results(predictions, out / "perturbed" / "results.json", sample_tokens=tokens)
    perturbed = evaluate(perturbed_path, dataroot, VERSION, VAL_SPLIT, out / "perturbed", nusc=nusc)
    print(f"ground truth NDS {report.metrics['nd_score']:.4f} mAP {report.metrics['mean_ap']:.4f}; "
          f"perturbed NDS {perturbed['nd_score']:.4f} mAP {perturbed['mean_ap']:.4f}")

    teacher_steps, student_steps = plan.teacher_steps, plan.student_steps
    stages.begin("teacher", f"ftkd train {TEACHER_CONFIG.name}: the offline teacher (past + current + future), "
                            f"{teacher_steps} steps")
    teacher = train_model(TEACHER_CONFIG, experiment_overrides(plan, dataroot, runs / "teacher", teacher_steps,
                                                               args.seed))
    stages.begin("student", f"ftkd train {STUDENT_CONFIG.name}: the online student (past + current), "
                            f"{student_steps} steps")
    student = train_model(STUDENT_CONFIG, experiment_overrides(plan, dataroot, runs / "student", student_steps,
                                                               args.seed))
    stages.begin("distill", f"ftkd distill {FTKD_CONFIG.name}: the same student taught by the teacher (FTKD), "
                            f"{student_steps} steps")
    distilled = train_model(FTKD_CONFIG, experiment_overrides(plan, dataroot, runs / "ftkd_student", student_steps,
                                                              args.seed), teacher=teacher)

    stages.begin("evaluate", f"official nuScenes metric of every model on {VAL_SPLIT} ({len(tokens)} samples)")
    metrics, records, configs = {}, {}, {}
    for name, checkpoint in (("teacher", teacher), ("student", student), ("FTKD student", distilled)):
        metrics[name], records[name], configs[name] = evaluate_checkpoint(
            checkpoint, out / "eval" / name.replace(" ", "_"), nusc
        )
        print(f"{name:<14} NDS {metrics[name]['nd_score']:.4f} mAP {metrics[name]['mean_ap']:.4f}")
    frames = {name: frames_seen(config.data) for name, config in configs.items()}
    seed_everything(args.seed)  # the student's initial weights: what both students start from
    untrained = build_model(configs["student"].model).eval()
    metrics["untrained student"], _ = evaluate_model(untrained, configs["student"].data,
                                                     out / "eval" / "untrained_student", nusc)
    frames["untrained student"] = frames["student"]

    stages.begin("table", "one comparison table")
    rows = [
        metric_row("ground truth as prediction", "annotations", report.metrics),
        metric_row("perturbed ground truth", "annotations", perturbed),
        *(metric_row(name, frames[name], metrics[name])
          for name in ("untrained student", "teacher", "student", "FTKD student")),
    ]
    table = format_table(rows)
    print(table)
    print(FOOTNOTE)

    token = tokens[len(tokens) // 2]  # mid-scene: every model has its past (and the teacher its future) frames
    stages.begin("pictures", f"pictures of the three models on val sample {token}")
    models = ("teacher", "student", "FTKD student")
    titles = {name: f"{name} ({frames[name]}): NDS {metrics[name]['nd_score']:.3f}, mAP {metrics[name]['mean_ap']:.3f}"
              for name in models}
    drawn = draw_models(nusc, token, {name: records[name][token] for name in models}, titles, out / "pictures")
    pictures: dict[str, str] = {}
    for name, (bev, cameras, _) in drawn.items():
        pictures[f"{name} BEV"], pictures[f"{name} cameras"] = str(bev), str(cameras)
    side = side_by_side([drawn[name][0] for name in models], list(models), out / "pictures" / "bev_side_by_side.png")
    pictures["side by side BEV"] = str(side)
    for picture in pictures.values():
        print(f"wrote {picture}")

    stages.begin("summary", "summary.json and summary.md")
    stages.end()
    summary = {
        "seed": args.seed,
        "minutes": args.minutes,
        "quick": args.quick,
        "plan": plan_dict(plan),
        "dataroot": str(dataroot),
        "checkpoints": {"teacher": str(teacher), "student": str(student), "FTKD student": str(distilled)},
        "metrics_files": {name: str(out / "eval" / name.replace(" ", "_") / "metrics.json") for name in metrics},
        "rows": rows,
        "picture_sample": token,
        "picture_score_thresholds": {name: threshold for name, (_, _, threshold) in drawn.items()},
        "pictures": pictures,
        "seconds": {**stages.seconds, "total": stages.elapsed},
    }
    json_path, md_path = write_summary(out, summary)
    print(f"wrote {json_path} and {md_path}; total {stages.elapsed / 60:.1f} min")
    return 0
