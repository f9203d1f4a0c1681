"""`ftkd train CONFIG.yaml [--set key=value ...]`: train a detector (an online student or an offline teacher).

The same command runs on one process or under `torchrun --nproc_per_node=N -m ftkd train ...`. Before training,
rank 0 runs the quick data check (`ftkd.data.check.quick_check`) on the training split and the run refuses to
start if it finds a problem (`--skip-data-check` overrides).
"""

from __future__ import annotations

import argparse
import logging

from ftkd.data.config import DataConfig

logger = logging.getLogger(__name__)

def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Config, overrides, data location, run folder, resume and the data-check switch (`ftkd train`/`distill`)."""
    parser.add_argument("config", help="experiment YAML, e.g. configs/sparsebev_r50.yaml")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="dotted config overrides right after CONFIG, e.g. train.lr=1e-4 (--set works anywhere)",
    )
    parser.add_argument(
        "--set", dest="set_overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
        help="dotted config overrides, type-checked against the config schema",
    )
    parser.add_argument("--dataroot", default=None, help="nuScenes-format root (overrides data.dataroot)")
    parser.add_argument(
        "--version", default=None,
        help="dataset version, e.g. v1.0-trainval (overrides data.version; also picks its default splits: "
        "train/val, mini_train/mini_val, or <X>_train/<X>_val for v1.0-<X>, unless data.*_split are overridden)",
    )
    parser.add_argument(
        "--resume", default=None, help="checkpoint to resume, or 'auto' for <out_dir>/checkpoints/last.pt if present"
    )
    parser.add_argument("--out-dir", default=None, help="run folder (overrides train.out_dir)")
    parser.add_argument(
        "--skip-data-check", action="store_true", help="start even if the quick data check finds problems"
    )


def override_list(args: argparse.Namespace) -> list[str]:
    """All overrides of the command line, `--dataroot`/`--version` first so explicit keys win, `--out-dir` last so it
    wins; `--version` alone also selects that version's default splits (ftkd.engine.inference.default_splits)."""
    from ftkd.engine.inference import default_splits

    overrides: list[str] = []
    if args.dataroot is not None:
        overrides.append(f"data.dataroot={args.dataroot}")
    if args.version is not None:
        overrides.append(f"data.version={args.version}")
        splits = default_splits(args.version)
        if splits is not None:
            train_split, val_split = splits
            overrides += [f"data.train_split={train_split}", f"data.val_split={val_split}"]
    overrides += list(args.overrides) + list(args.set_overrides)
    if args.out_dir is not None:
        overrides.append(f"train.out_dir={args.out_dir}")
    return overrides


def data_check_refuses(data: DataConfig, action: str) -> bool:
    """Run the quick data check of the training split on rank 0 (shared with every process); log its problems and
    return True if there are any, in which case the caller must not start."""
    from ftkd.data.check import quick_check
    from ftkd.engine import distributed

    problems: list[str] = []
    if distributed.is_main_process():
        logger.info(f"checking {data.dataroot} {data.version} {data.train_split} (quick check; --skip-data-check skips it)")
        problems = list(quick_check(data.dataroot, data.version, data.train_split))
    problems = distributed.broadcast_object(problems)
    for problem in problems:
        logger.error(f"data check: {problem}")
    if problems:
        logger.error(
            f"refusing to {action} on {data.dataroot} ({data.version}, {data.train_split}): "
            f"{len(problems)} problem(s) above; fix the data or pass --skip-data-check"
        )
    return bool(problems)


def log_final_metrics(metrics: dict, split: str) -> None:
    """One log line with the final evaluation's scalar metrics (nothing if there was no evaluation)."""
    if metrics:
        summary = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        logger.info(f"final metrics ({split}): {summary}")


def add_parser(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ftkd.config import load_config
    from ftkd.engine import distributed
    from ftkd.engine.objective import DetectionObjective
    from ftkd.engine.trainer import Trainer
    from ftkd.models.build import build_model
    from ftkd.utils.seed import seed_everything

    config = load_config(args.config, override_list(args))
    distributed.init_distributed(config.train.device)
    try:
        if not args.skip_data_check and data_check_refuses(config.data, "train"):
            return 1
        seed_everything(config.train.seed)  # identical initial weights on every process
        objective = DetectionObjective(build_model(config.model))
        metrics = Trainer(config, objective, resume=args.resume).fit()
        log_final_metrics(metrics, config.data.val_split)
    finally:
        distributed.cleanup()
    return 0
