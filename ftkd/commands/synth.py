"""`ftkd synth`: generate the synthetic driving world as a nuScenes v1.0 dataset (version folder v1.0-synth)."""

from __future__ import annotations

import argparse
import json
import logging
import os

logger = logging.getLogger(__name__)


def _image_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected an image size WxH such as 704x396, got {text!r}") from err
    return width, height


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="data/synth", help="dataroot to create (default: data/synth)")
    parser.add_argument("--preset", default="tiny", choices=["tiny", "bench"],
                        help="tiny: 4 scenes x 8 keyframes, 320x180 (tests, demo); bench: the benchmark set")
    parser.add_argument("--scenes", type=int, help="number of scenes (overrides the preset)")
    parser.add_argument("--val-scenes", type=int, help="how many of the scenes form the synth_val split")
    parser.add_argument("--samples-per-scene", type=int, help="keyframes (2 Hz) per scene")
    parser.add_argument("--sweeps", type=int, help="camera sweeps between keyframes, 0-5 (12 Hz cameras: 5)")
    parser.add_argument("--image-size", type=_image_size, help="stored image size WxH (intrinsics are scaled)")
    parser.add_argument("--seed", type=int, help="world seed (same seed -> identical dataset)")
    parser.add_argument("--workers", type=int, help="processes (default: all cores)")
    parser.add_argument("--density", type=float, help="agents per metre of road, relative to nuScenes-like 1.0")
    parser.add_argument("--occlusion", type=float, help="parked rows, trees, walls, construction zones (1.0)")
    parser.add_argument("--noise", type=float, help="camera and lidar noise (1.0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")


def run(args: argparse.Namespace) -> int:
    from ftkd.data.synth import SynthConfig, generate

    overrides = {
        "scenes": args.scenes, "val_scenes": args.val_scenes, "samples_per_scene": args.samples_per_scene,
        "sweeps_per_sample": args.sweeps, "seed": args.seed, "density": args.density,
        "occlusion": args.occlusion, "noise": args.noise,
        "workers": args.workers if args.workers is not None else (os.cpu_count() or 1),
    }
    if args.image_size is not None:
        overrides["image_width"], overrides["image_height"] = args.image_size
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "scenes" in overrides and "val_scenes" not in overrides:
        overrides["val_scenes"] = max(1, overrides["scenes"] // 5) if overrides["scenes"] > 1 else 0
    config = SynthConfig.preset(args.preset, **overrides)
    try:
        root = generate(config, args.out, overwrite=args.overwrite)
    except FileExistsError as err:
        logger.error("%s", err)
        return 1
    stats = json.loads((root / "synth_stats.json").read_text())
    generation = stats["generation"]
    logger.info("wrote %s: %d scenes, %d keyframes, %d images in %.1f s (%.1f images/s, %d workers)", root,
                stats["scenes"], stats["keyframes"], generation["images"], generation["seconds"],
                generation["images_per_second"], generation["workers"])
    logger.info("boxes with lidar points per keyframe %.1f; class shares %s", stats["boxes_per_keyframe_with_points"],
                {k: round(v, 3) for k, v in stats["class_share_with_points"].items()})
    logger.info("statistics: %s", root / "synth_stats.json")
    return 0
