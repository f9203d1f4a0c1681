"""The pieces of `ftkd demo`: a tiny synthetic world, a tiny offline teacher, a tiny online student, the same
student distilled with FTKD, the official metric on all of them, one table and pictures, on a CPU in minutes.

Everything runs in this process through the library (Trainer, DetectionObjective, build_distillation_objective,
load_model, predict, write_results, evaluate), from the tiny configs under configs/ with overrides for the demo's
budget (`DemoPlan`). Every result is a function of (seed, plan): the world, the initial weights, the data order
and augmentation, the perturbation.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

if TYPE_CHECKING:
    from ftkd.config import ExperimentConfig
    from ftkd.data.config import DataConfig
    from ftkd.data.synth import SynthConfig

logger = logging.getLogger(__name__)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TEACHER_CONFIG = CONFIGS / "teacher_sparsebev_tiny_future.yaml"
STUDENT_CONFIG = CONFIGS / "sparsebev_tiny.yaml"
FTKD_CONFIG = CONFIGS / "ftkd_sparsebev_tiny.yaml"
FOOTNOTE = (
    "Tiny models, a tiny synthetic set and a few hundred CPU steps: these numbers are noisy (another seed or "
    "budget can reorder the models) and show that the workflow runs end to end, not how FTKD compares; the "
    "real comparison (GPU benchmark, 3 seeds) is in docs/results.md. Official nuScenes metric "
    "(detection_cvpr_2019, all 10 classes) on the synthetic val split."
)


@dataclass(frozen=True)
class DemoPlan:
    """What a demo run costs: the synthetic set, the network input and the optimiser steps of each model."""

    scenes: int  # synthetic scenes; the last `val_scenes` form the val split
    val_scenes: int
    samples_per_scene: int  # keyframes (2 Hz) per scene; no camera sweeps are written (frames are keyframes)
    stored_size: tuple[int, int]  # (W, H) pixels of the stored JPEGs
    image_size: tuple[int, int]  # (H, W) network input
    lr: float  # AdamW learning rate at the global batch of 2
    teacher_steps: int
    student_steps: int  # the baseline student and the FTKD student get the same number of steps
    log_every: int  # optimiser steps between progress lines


def demo_plan(quick: bool, minutes: float) -> DemoPlan:
    """The plan of `ftkd demo` (`--quick`: the 1-2 minute smoke version). `minutes` scales the training steps
    linearly (10 = the default budget); it is not a wall-clock deadline, so the result depends only on the seed
    and the arguments, never on the machine's speed."""
    if minutes <= 0:
        raise ValueError(f"--minutes: expected a positive number, got {minutes}")
    if quick:
        return DemoPlan(scenes=3, val_scenes=1, samples_per_scene=4, stored_size=(192, 108), image_size=(32, 88),
                        lr=2e-3, teacher_steps=2, student_steps=2, log_every=1)
    scale = minutes / 10.0
    return DemoPlan(
        scenes=10,
        val_scenes=2,
        samples_per_scene=10,
        stored_size=(256, 144),
        # 32x88 input and 150 steps learn more than 48x128 and 90 steps in the same CPU time (measured on an
        # 8-scene world: val mAP 0.011 vs 0.002 for the tiny student); twice the tiny configs' lr for the short
        # schedule; 160 steps = 4 epochs of the 80 training keyframes.
        image_size=(32, 88),
        lr=2e-3,
        teacher_steps=max(1, round(160 * scale)),
        student_steps=max(1, round(160 * scale)),
        log_every=25,
    )


def synth_config(plan: DemoPlan, seed: int, workers: int = 1) -> SynthConfig:
    """The SynthConfig of the demo world: the `tiny` preset resized to the plan, keyframes only (no sweeps)."""
    from ftkd.data.synth import SynthConfig

    width, height = plan.stored_size
    return SynthConfig.preset(
        "tiny", seed=seed, scenes=plan.scenes, val_scenes=plan.val_scenes, samples_per_scene=plan.samples_per_scene,
        sweeps_per_sample=0, image_width=width, image_height=height, workers=workers,
    )


def make_world(dataroot: Path, plan: DemoPlan, seed: int, workers: int = 1) -> tuple[Path, bool]:
    """Generate the demo world at `dataroot`, or reuse it if it was written with the same SynthConfig.

    Returns (dataroot, reused). A demo world written with another config (seed, plan) is regenerated; any other
    existing folder is left alone (FileExistsError).
    """
    from ftkd.data.synth import generate
    from ftkd.utils.configuration import to_dict

    config = synth_config(plan, seed, workers)
    written = dataroot / "synth_config.json"
    if written.is_file():
        expected = {k: v for k, v in to_dict(config).items() if k != "workers"}
        found = {k: v for k, v in json.loads(written.read_text()).items() if k != "workers"}
        if json.loads(json.dumps(expected)) == found:
            return dataroot, True
        logger.info(f"{dataroot} was generated with another config; regenerating it")
    elif dataroot.exists():
        raise FileExistsError(f"{dataroot} exists but holds no synth_config.json (not a demo world): remove it or "
                              f"choose another --out")
    return Path(generate(config, dataroot, overwrite=dataroot.exists())), False


def experiment_overrides(plan: DemoPlan, dataroot: Path, out_dir: Path, steps: int, seed: int) -> list[str]:
    """Dotted overrides that turn a tiny config into a demo run of `steps` optimiser steps on the CPU.

    Frames are consecutive keyframes (0.5 s apart) because the demo world has no camera sweeps. No evaluation
    happens inside training (the demo evaluates every model the same way afterwards).
    """
    train_samples = (plan.scenes - plan.val_scenes) * plan.samples_per_scene
    height, width = plan.image_size
    return [
        f"data.dataroot={dataroot}",
        f"data.cache_dir={dataroot.parent / 'cache'}",
        "data.frame_source=keyframes",
        f"data.image_size=[{height}, {width}]",
        "data.num_workers=0",
        "data.batch_size=2",
        # steps / steps-per-epoch epochs: the warmup + cosine schedule ends exactly after `steps` steps
        f"train.epochs={steps / math.ceil(train_samples / 2)!r}",
        "train.global_batch=2",
        f"train.lr={plan.lr!r}",
        f"train.seed={seed}",
        f"train.out_dir={out_dir}",
        "train.device=cpu",
        "train.final_eval=false",
        "train.progress_bar=false",
        f"train.log_every={plan.log_every}",
        "model.stop_past_grad=true",  # past frames through the backbone without autograd: a cheaper step
        # A few hundred steps underfit: GridMask and image/BEV augmentation only slow the fit down (measured on the
        # tiny student, 150 steps: train loss 12.9 without vs 14.5 with, val mAP 0.0028 vs 0.0019).
        "model.grid_mask=false",
        "data.augment=false",
    ]


def train_model(config_path: Path, overrides: Sequence[str], teacher: Path | None = None) -> Path:
    """Train a detector (teacher or student) or, with `teacher`, distil the config's student from that frozen
    teacher; returns the final checkpoint (`<train.out_dir>/checkpoints/final.pt`)."""
    from ftkd.config import load_config
    from ftkd.engine.objective import DetectionObjective
    from ftkd.engine.trainer import Trainer
    from ftkd.models.build import build_model
    from ftkd.utils.seed import seed_everything

    extra = [f"distill.teacher={teacher}"] if teacher is not None else []
    config = load_config(config_path, [*overrides, *extra])
    seed_everything(config.train.seed)
    model = build_model(config.model)
    if teacher is None:
        Trainer(config, DetectionObjective(model)).fit()
    else:
        from ftkd.data.loader import build_dataloader
        from ftkd.distill.objective import build_distillation_objective, student_num_frames
        from ftkd.distill.teacher import distillation_data_config, load_teacher
        from ftkd.engine.optim import plan_batches

        frozen, teacher_config = load_teacher(str(teacher), config.distill.teacher_precision)
        frozen.image_size = config.distill.teacher_image_size or tuple(teacher_config.data.image_size)
        objective = build_distillation_objective(model, config.model, frozen, teacher_config.model, config.distill)
        # the student's data with the teacher's frames (the student itself only ever sees its own view)
        data = distillation_data_config(config.data, teacher_config.data, student_num_frames(config.model))
        batch = plan_batches(config.train, config.data.batch_size, world_size=1).per_device_batch
        loader = build_dataloader(data, data.train_split, train=True, seed=config.train.seed, batch_size=batch)
        Trainer(config, objective, train_loader=loader).fit()
    return Path(config.train.out_dir) / "checkpoints" / "final.pt"


def frames_seen(data: DataConfig) -> str:
    """What a model reads, in words, from its DataConfig: e.g. '1 past + current + 1 future'."""
    words = [f"{data.num_past_frames} past", "current"] if data.num_past_frames else ["current"]
    if data.num_future_frames:
        words.append(f"{data.num_future_frames} future")
    return " + ".join(words)


def evaluate_model(
    model: torch.nn.Module, data: DataConfig, out_dir: Path, nusc=None
) -> tuple[dict, dict[str, list[dict]]]:
    """Predict `data.val_split` with `model` (CPU), write `out_dir/results.json`, score it with the official metric
    into `out_dir/` (metrics.json); returns (metrics, results records per sample token, global frame)."""
    from ftkd.data.loader import build_dataloader
    from ftkd.data.results import write_results
    from ftkd.engine.evaluation import evaluate
    from ftkd.engine.inference import predict

    from ftkd.models.streampetr.model import StreamPETR

    # a streaming model is scored as it runs: each scene in order, its memory carried (as `ftkd predict` does)
    loader = build_dataloader(data, data.val_split, train=False, sequential=isinstance(model, StreamPETR), seed=0)
    predictions = predict(model, loader, torch.device("cpu"))
    results = write_results(predictions, out_dir / "results.json", sample_tokens=list(loader.dataset.sample_tokens))
    metrics = evaluate(results, data.dataroot, data.version, data.val_split, out_dir, nusc=nusc)
    return metrics, json.loads(results.read_text())["results"]


def evaluate_checkpoint(
    checkpoint: Path, out_dir: Path, nusc=None
) -> tuple[dict, dict[str, list[dict]], ExperimentConfig]:
    """`evaluate_model` of a checkpoint with its own data config (a teacher reads its future frames); returns
    (metrics, records, the checkpoint's ExperimentConfig)."""
    from ftkd.engine.checkpoint import load_model

    model, config = load_model(checkpoint, "cpu")
    metrics, records = evaluate_model(model, config.data, out_dir, nusc)
    return metrics, records, config


def metric_row(name: str, frames: str, metrics: dict) -> dict:
    """One table row: the devkit's 10-class NDS, mAP and mean TP errors."""
    from ftkd.engine.evaluation import TP_METRICS, TP_SHORT

    row = {"model": name, "frames": frames, "NDS": metrics["nd_score"], "mAP": metrics["mean_ap"]}
    row.update({TP_SHORT[m]: metrics["tp_errors"][m] for m in TP_METRICS})
    return row


def format_table(rows: Sequence[dict], markdown: bool = False) -> str:
    """The comparison table as aligned text (console) or Markdown (summary.md, docs)."""
    columns = ["NDS", "mAP", "mATE", "mASE", "mAOE", "mAVE", "mAAE"]
    if markdown:
        lines = ["| model | frames seen | " + " | ".join(columns) + " |", "|---|---|" + "---:|" * len(columns)]
        lines += [f"| {r['model']} | {r['frames']} | " + " | ".join(f"{r[c]:.4f}" for c in columns) + " |"
                  for r in rows]
        return "\n".join(lines)
    name_width = max(len("model"), *(len(r["model"]) for r in rows)) + 2
    frames_width = max(len("frames seen"), *(len(r["frames"]) for r in rows)) + 2
    lines = [f"{'model':<{name_width}}{'frames seen':<{frames_width}}" + "".join(f"{c:>8}" for c in columns)]
    lines += [f"{r['model']:<{name_width}}{r['frames']:<{frames_width}}" + "".join(f"{r[c]:>8.4f}" for c in columns)
              for r in rows]
    return "\n".join(lines)


def draw_models(nusc, sample_token: str, records: dict[str, list[dict]], titles: dict[str, str], out_dir: Path
                ) -> dict[str, tuple[Path, Path, float]]:
    """BEV and camera pictures of several models' result records (global frame) on one sample, each titled.

    Every model shows its K best boxes, K = the sample's scored GT boxes (those with lidar points): the same rule
    for every model, whatever its score calibration. Returns {model: (bev.png, cameras.png, score threshold)}.
    """
    import numpy as np

    from ftkd.constants import CLASS_NAMES
    from ftkd.data.results import records_to_boxes
    from ftkd.engine.evaluation import sample_ground_truth
    from ftkd.structures import Detections
    from ftkd.viz import camera_projections, draw_bev, draw_cameras

    truth = sample_ground_truth(nusc, sample_token)
    keep = truth.num_points > 0  # what the metric scores
    ground_truth = Detections(
        boxes=torch.from_numpy(np.nan_to_num(truth.boxes[keep])),
        scores=torch.ones(int(keep.sum()), dtype=torch.float64),
        labels=torch.tensor([CLASS_NAMES.index(n) for n, k in zip(truth.names, keep) if k], dtype=torch.int64),
    )
    images, ref_to_image = camera_projections(nusc, sample_token, truth.ref_to_global)
    pictures = {}
    for name, model_records in records.items():
        boxes, names = records_to_boxes(model_records, truth.ref_to_global)
        scores = torch.tensor([float(r["detection_score"]) for r in model_records], dtype=torch.float64)
        predictions = Detections(
            boxes=torch.from_numpy(np.nan_to_num(boxes)).reshape(-1, 9),  # [M, 9] also when M = 0
            scores=scores,
            labels=torch.tensor([CLASS_NAMES.index(n) for n in names], dtype=torch.int64),
        )
        count = int(keep.sum())
        threshold = float(scores.sort(descending=True).values[count - 1]) if 0 < count <= len(scores) else 0.0
        title = f"{titles[name]}\nsample {sample_token}: {count} GT boxes, the model's {count} best boxes shown"
        stem = out_dir / name.replace(" ", "_") / sample_token
        bev = draw_bev(f"{stem}_bev.png", ground_truth=ground_truth, predictions=predictions, title=title,
                       score_threshold=threshold)
        cameras = draw_cameras(f"{stem}_cameras.png", images, ref_to_image, ground_truth=ground_truth,
                               predictions=predictions, title=title, score_threshold=threshold)
        pictures[name] = (bev, cameras, threshold)
    return pictures


def side_by_side(pictures: Sequence[Path], titles: Sequence[str], path: Path, dpi: int = 90) -> Path:
    """One PNG with the given pictures (e.g. the BEV plots of three models) next to each other."""
    from matplotlib.figure import Figure
    from matplotlib.image import imread

    images = [imread(p) for p in pictures]
    height, width = images[0].shape[:2]
    fig = Figure(figsize=(len(images) * 6.0, 6.0 * height / width + 0.4), dpi=dpi, layout="constrained")
    for ax, image, title in zip(fig.subplots(1, len(images)), images, titles):
        ax.imshow(image)
        ax.set_title(title, fontsize=12)
        ax.set_axis_off()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def write_summary(out: Path, summary: dict) -> tuple[Path, Path]:
    """`out/summary.json` (everything) and `out/summary.md` (the table, the footnote, the pictures)."""
    json_path = out / "summary.json"
    json_path.write_text(json.dumps(summary, indent=2) + "\n")
    budget = "quick" if summary["quick"] else f"{summary['minutes']:g} min"
    lines = [
        f"# ftkd demo (seed {summary['seed']}, {budget} plan)",
        "",
        format_table(summary["rows"], markdown=True),
        "",
        FOOTNOTE,
        "",
        f"Validation sample of the pictures: `{summary['picture_sample']}`.",
        "",
    ]
    lines += [f"![{name}]({Path(p).relative_to(out)})" for name, p in summary["pictures"].items()]
    lines += ["", "Time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in summary["seconds"].items()), ""]
    md_path = out / "summary.md"
    md_path.write_text("\n".join(lines))
    return json_path, md_path


def plan_dict(plan: DemoPlan) -> dict:
    """The plan as JSON types (for summary.json)."""
    return json.loads(json.dumps(asdict(plan)))
