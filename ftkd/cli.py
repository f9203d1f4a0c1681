"""The `ftkd` command: a thin dispatcher over ftkd.commands.<name> (imported only when used)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand -> (module under ftkd.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("synth", "generate a synthetic driving world as a nuScenes v1.0 dataset"),
    "train": ("train", "train a detector (student or offline teacher) from a YAML config"),
    "distill": ("distill", "train a student with FTKD (or a KD baseline) from a frozen teacher"),
    "predict": ("predict", "run a checkpoint on a split and write a nuScenes results JSON"),
    "eval": ("evaluate", "official nuScenes metrics of a results JSON or a checkpoint"),
    "viz": ("viz", "BEV and camera pictures of ground truth and predictions"),
    "demo": ("demo", "the whole workflow, tiny, on a CPU"),
    "export": ("export", "export an online student to ONNX (one frame in, explicit temporal state)"),
    "predict-images": ("predict_images", "run a student on raw camera images with a calibration JSON"),
    "check-data": ("check_data", "validate a dataset and push its ground truth through the prediction path"),
    "convert": ("convert", "convert custom logs (cameras, images, ego poses, box tracks) into a nuScenes dataset"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ftkd", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(f"ftkd.commands.{module_name}")
        except ModuleNotFoundError as err:
            if err.name != f"ftkd.commands.{module_name}":
                raise
            continue  # command not available in this build
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_parser(sub)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if getattr(args, "handler", None) is None:
        parser.print_help()
        sys.exit(2)
    sys.exit(args.handler(args) or 0)
