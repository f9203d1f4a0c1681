"""`ftkd convert`: custom logs (one JSON/YAML file per log, docs/custom_data.md) -> a nuScenes v1.0 dataset."""

from __future__ import annotations

import argparse
import json
import logging

logger = logging.getLogger(__name__)


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("logs", nargs="+", help="log files (.json, .yaml, .yml), one per drive")
    parser.add_argument("--out", required=True, help="dataroot to create")
    parser.add_argument("--version", default="v1.0-custom",
                        help="table folder v1.0-<suffix> (default v1.0-custom); splits are named <suffix>_<split>")
    parser.add_argument("--split", help="split of the logs whose file names none (e.g. train, val)")
    images = parser.add_mutually_exclusive_group()
    images.add_argument("--copy", dest="images", action="store_const", const="copy",
                        help="copy the images into the dataset (default)")
    images.add_argument("--link", dest="images", action="store_const", const="link",
                        help="symlink the images (absolute paths) instead of copying them")
    parser.set_defaults(images="copy")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")


def run(args: argparse.Namespace) -> int:
    from ftkd.data.convert import ConvertError, convert

    try:
        root = convert(args.logs, args.out, version=args.version, images=args.images, split=args.split,
                       overwrite=args.overwrite)
    except (ConvertError, FileExistsError) as err:
        logger.error("ftkd convert failed:\n%s", err)
        return 1
    splits = json.loads((root / args.version / "splits.json").read_text())
    logger.info("wrote %s (version %s); splits: %s", root, args.version,
                ", ".join(f"{name} ({len(scenes)} scenes)" for name, scenes in splits.items()))
    logger.info("check it: ftkd check-data --dataroot %s --version %s --split <split>", root, args.version)
    return 0
