"""`ftkd distill CONFIG.yaml --teacher TEACHER.pt [--set key=value ...]`: train a student with FTKD or a KD baseline.

The config is a student experiment (data, model, train) plus its `distill` section. The training data gets the
teacher's frames (its past frames if longer, and its future frames); the student only sees `student_view`.
The checkpoints hold the student alone (the generators go to their `objective_extra`): `ftkd eval` runs them like
any baseline student, with the config's own (student) data section. Runs under torchrun like `ftkd train`.
"""

from __future__ import annotations

import argparse
import logging

from ftkd.commands.train import add_common_arguments, data_check_refuses, log_final_metrics, override_list

logger = logging.getLogger(__name__)


def add_parser(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--teacher", default=None, help="teacher checkpoint (default: distill.teacher of the config)")


def run(args: argparse.Namespace) -> int:
    from ftkd.config import load_config
    from ftkd.data.loader import build_dataloader
    from ftkd.distill.objective import build_distillation_objective, student_num_frames
    from ftkd.distill.teacher import distillation_data_config, load_teacher
    from ftkd.engine import distributed
    from ftkd.engine.optim import plan_batches
    from ftkd.engine.trainer import Trainer
    from ftkd.models.build import build_model
    from ftkd.utils.seed import seed_everything

    overrides = override_list(args)
    if args.teacher is not None:
        overrides.append(f"distill.teacher={args.teacher}")
    config = load_config(args.config, overrides)
    if not config.distill.teacher:
        logger.error(f"no teacher checkpoint: pass --teacher or set distill.teacher in {args.config}")
        return 2
    distributed.init_distributed(config.train.device)  # before the loader, which shards by rank
    try:
        teacher, teacher_config = load_teacher(config.distill.teacher, config.distill.teacher_precision)
        teacher.image_size = config.distill.teacher_image_size or tuple(teacher_config.data.image_size)
        logger.info(
            f"teacher {config.distill.teacher}: {teacher_config.model.arch} R{teacher_config.model.backbone.depth}, "
            f"{teacher.num_frames} past/current + {teacher.num_future_frames} future frames at "
            f"{teacher.image_size[0]}x{teacher.image_size[1]}"
        )
        train_data = distillation_data_config(config.data, teacher_config.data, student_num_frames(config.model))
        if not args.skip_data_check and data_check_refuses(train_data, "distil"):
            return 1
        seed_everything(config.train.seed)  # identical student and generator weights on every process
        student = build_model(config.model)
        objective = build_distillation_objective(student, config.model, teacher, teacher_config.model, config.distill)
        sequential = config.train.sampler == "sequential" or (
            config.train.sampler == "auto" and config.model.arch == "streampetr"
        )
        plan = plan_batches(config.train, config.data.batch_size, distributed.get_world_size())
        train_loader = build_dataloader(
            train_data,
            train_data.train_split,
            train=True,
            sequential=sequential,
            seed=config.train.seed,
            batch_size=plan.per_device_batch,
        )
        metrics = Trainer(config, objective, train_loader=train_loader, resume=args.resume).fit()
        log_final_metrics(metrics, config.data.val_split)
    finally:
        distributed.cleanup()
    return 0
