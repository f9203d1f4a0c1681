"""`ftkd predict CKPT --split S [--dataroot D] [--version V] --out results.json`: a nuScenes results JSON.

Runs on one process or under torchrun (each process predicts a shard; process 0 writes the file).
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a checkpoint written by ftkd train / ftkd distill (last.pt or final.pt)")
    parser.add_argument("--split", default=None, help="split to predict (default: the checkpoint's data.val_split)")
    parser.add_argument("--dataroot", default=None, help="nuScenes-format root (default: the checkpoint's)")
    parser.add_argument(
        "--version", default=None, help="dataset version (default: the checkpoint's; also picks its val split)"
    )
    parser.add_argument("--out", required=True, help="results JSON to write")
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' (default: auto)")


def run(args: argparse.Namespace) -> int:
    from ftkd.engine import distributed
    from ftkd.engine.inference import predict_checkpoint

    try:
        path = predict_checkpoint(args.checkpoint, args.dataroot, args.version, args.split, args.out, args.device)
    finally:
        distributed.cleanup()
    logger.info(f"results: {path}")
    return 0
