"""`ftkd eval PATH`: the official nuScenes detection metric of a results JSON, or of a checkpoint (predicts first)."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_DATAROOT = "data/synth"
DEFAULT_VERSION = "v1.0-synth"
DEFAULT_SPLIT = "synth_val"


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="a nuScenes results JSON (global frame) or a checkpoint (*.pt)")
    parser.add_argument("--dataroot", help=f"nuScenes-format root (default: the checkpoint's, else {DEFAULT_DATAROOT})")
    parser.add_argument("--version", help=f"table folder (default: the checkpoint's, else {DEFAULT_VERSION})")
    parser.add_argument("--split", help=f"split (default: the checkpoint's val split, else {DEFAULT_SPLIT})")
    parser.add_argument("--out", help="output folder (default: <path without suffix>_eval/)")
    parser.add_argument("--device", default="auto", help="for a checkpoint: auto, cpu or cuda")
    parser.add_argument("--devkit-output", action="store_true", help="show the devkit's own progress and table")


def resolve_dataset(args: argparse.Namespace) -> tuple[str, str, str]:
    """(dataroot, version, split): the arguments, else a checkpoint's data config, else the synthetic defaults."""
    if str(args.path).endswith(".pt"):
        from ftkd.engine.checkpoint import config_from_checkpoint, load_checkpoint

        data = config_from_checkpoint(load_checkpoint(args.path), args.path).data
        return args.dataroot or data.dataroot, args.version or data.version, args.split or data.val_split
    return args.dataroot or DEFAULT_DATAROOT, args.version or DEFAULT_VERSION, args.split or DEFAULT_SPLIT


def results_for(args: argparse.Namespace, dataroot: str, version: str, split: str, out_dir: Path) -> Path:
    """The results JSON to score: the given file, or a checkpoint's predictions written into `out_dir`."""
    path = Path(args.path)
    if path.suffix != ".pt":
        return path
    try:
        from ftkd.engine.inference import predict_checkpoint
    except ModuleNotFoundError as err:
        raise SystemExit(f"ftkd eval {path}: evaluating a checkpoint needs ftkd.engine.inference ({err})") from err
    return predict_checkpoint(str(path), dataroot, version, split, str(out_dir / "results.json"), device=args.device)


def run(args: argparse.Namespace) -> int:
    from ftkd.engine.evaluation import evaluate, format_metrics_table

    path = Path(args.path)
    if not path.exists():
        print(f"ftkd eval: {path} does not exist")
        return 2
    dataroot, version, split = resolve_dataset(args)
    out_dir = Path(args.out) if args.out else path.with_name(f"{path.stem}_eval")
    results_path = results_for(args, dataroot, version, split, out_dir)
    try:
        metrics = evaluate(results_path, dataroot, version, split, out_dir, verbose=args.devkit_output)
    except (ValueError, FileNotFoundError) as err:
        print(f"ftkd eval: {err}")
        return 1
    print(format_metrics_table(metrics))
    print(f"\nmetrics written to {out_dir / 'metrics.json'}")
    return 0
