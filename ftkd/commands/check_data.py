"""`ftkd check-data`: validate a dataset and push its ground truth through the prediction path to the metric."""

from __future__ import annotations

import argparse


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataroot", default="data/synth", help="nuScenes-format root")
    parser.add_argument("--version", default="v1.0-synth", help="table folder, e.g. v1.0-trainval")
    parser.add_argument("--split", default="synth_val", help="split (splits.json name or a devkit split)")
    parser.add_argument("--out", default="runs/check_data", help="folder for the GT-as-prediction results and metrics")
    parser.add_argument("--quick", action="store_true",
                        help="first samples only, no image decoding, no official metric (what `ftkd train` runs)")
    parser.add_argument("--workers", type=int, default=0, help="data loader workers")


def run(args: argparse.Namespace) -> int:
    from ftkd.data.check import check_data

    try:
        report = check_data(args.dataroot, args.version, args.split, out_dir=args.out, quick=args.quick,
                            num_workers=args.workers)
    except (ValueError, FileNotFoundError) as err:
        print(f"ftkd check-data: {err}")
        return 1
    print(report.format())
    return 0 if report.ok else 1
