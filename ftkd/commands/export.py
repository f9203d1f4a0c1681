"""`ftkd export CKPT --out model.onnx [--opset 17] [--image-size H W] [--check]`: ONNX graph of an online student.

Batch 1, static shapes, fp32, uint8 images in; temporal state as explicit inputs/outputs (docs/deploy.md).
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a student checkpoint written by ftkd train / ftkd distill")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17; default 17)")
    parser.add_argument(
        "--image-size", type=int, nargs=2, default=None, metavar=("H", "W"),
        help="network input size (default: the checkpoint's data.image_size, 256 704 for the paper models)",
    )  # fmt: skip
    parser.add_argument(
        "--check", action="store_true",
        help="run the graph in ONNX Runtime on two random frames (state carried) and compare with PyTorch",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from ftkd.deploy.export import export_onnx
    from ftkd.deploy.runtime import check_export

    path = export_onnx(args.checkpoint, args.out, opset=args.opset, image_size=args.image_size)
    logger.info(f"wrote {path}")
    if args.check:
        report = check_export(args.checkpoint, path)
        logger.info(
            "ONNX Runtime vs PyTorch over %d frames: max |d score| %.2e, max |d box| %.2e",
            report["frames"], report["max_score_diff"], report["max_box_diff"],
        )  # fmt: skip
    return 0
