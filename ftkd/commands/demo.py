"""`ftkd demo`: a tiny synthetic world, its ground truth through the prediction path and the official metric,
a perturbed prediction scored the same way, and pictures; minutes on a CPU."""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path

VERSION = "v1.0-synth"
VAL_SPLIT = "synth_val"


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (dataset, results, metrics, pictures)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic world and of the perturbation")
    parser.add_argument("--workers", type=int, default=1, help="processes generating the world")


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


def run(args: argparse.Namespace) -> int:
    import json

    from ftkd.data.check import check_data, ground_truth_predictions, write_ground_truth_results
    from ftkd.data.synth import SynthConfig, generate
    from ftkd.engine.evaluation import TP_METRICS, TP_SHORT, evaluate, load_nuscenes, split_sample_tokens
    from ftkd.viz import draw_sample

    out = Path(args.out)
    dataroot = out / "data"
    if (dataroot / VERSION).is_dir():
        print(f"[1/4] reusing the synthetic world in {dataroot}")
    else:
        print(f"[1/4] generating the tiny synthetic world into {dataroot}")
        dataroot = Path(generate(SynthConfig.preset("tiny", seed=args.seed, workers=args.workers), dataroot))

    print(f"[2/4] check-data: ground truth -> loader -> results writer -> official metric ({VAL_SPLIT})")
    report = check_data(dataroot, VERSION, VAL_SPLIT, out_dir=out / "gt_as_prediction")
    print(report.format())

    print("[3/4] a perturbed prediction (noisy boxes, misses, false positives) through the same writer and metric")
    nusc = load_nuscenes(dataroot, VERSION)
    tokens = split_sample_tokens(nusc, VAL_SPLIT)
    predictions = perturb(ground_truth_predictions(dataroot, VERSION, VAL_SPLIT, nusc=nusc), args.seed)
    perturbed_path = write_ground_truth_results(predictions, out / "perturbed" / "results.json", sample_tokens=tokens)
    perturbed = evaluate(perturbed_path, dataroot, VERSION, VAL_SPLIT, out / "perturbed", nusc=nusc)
    header = f"{'':<22}{'NDS':>8}{'mAP':>8}" + "".join(f"{TP_SHORT[m]:>8}" for m in TP_METRICS)
    print(header)
    for name, metrics in (("ground truth", report.metrics), ("perturbed", perturbed)):
        if metrics is None:
            continue
        print(f"{name:<22}{metrics['nd_score']:>8.4f}{metrics['mean_ap']:>8.4f}"
              + "".join(f"{metrics['tp_errors'][m]:>8.4f}" for m in TP_METRICS))

    print("[4/4] pictures of the first validation sample")
    results = json.loads(perturbed_path.read_text())["results"]
    for picture in draw_sample(nusc, tokens[0], results[tokens[0]], out / "pictures"):
        print(f"wrote {picture}")
    return 0 if report.ok else 1
