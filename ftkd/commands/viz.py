"""`ftkd viz PATH --sample TOKEN`: BEV and camera PNGs of a sample's ground truth and predictions."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ftkd.commands.evaluate import resolve_dataset


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="a nuScenes results JSON (global frame) or a checkpoint (*.pt, predicts first)")
    parser.add_argument("--sample", action="append", help="sample token (repeatable; default: the split's first)")
    parser.add_argument("--dataroot", help="nuScenes-format root (default: the checkpoint's, else data/synth)")
    parser.add_argument("--version", help="table folder (default: the checkpoint's, else v1.0-synth)")
    parser.add_argument("--split", help="split predicted for a checkpoint (default: its val split, else synth_val)")
    parser.add_argument("--out", default="pics", help="output folder for the PNGs")
    parser.add_argument("--score-threshold", type=float, default=0.3, help="hide predictions scoring below it")
    parser.add_argument("--device", default="auto", help="for a checkpoint: auto, cpu or cuda")


def run(args: argparse.Namespace) -> int:
    from ftkd.engine.evaluation import load_nuscenes, split_sample_tokens
    from ftkd.viz import draw_sample

    path = Path(args.path)
    if not path.exists():
        print(f"ftkd viz: {path} does not exist")
        return 2
    dataroot, version, split = resolve_dataset(args)
    out_dir = Path(args.out)
    if path.suffix == ".pt":
        from ftkd.engine.inference import predict_checkpoint

        path = predict_checkpoint(
            str(path), dataroot, version, split, str(out_dir / "results.json"), device=args.device
        )
    results = json.loads(path.read_text())["results"]
    nusc = load_nuscenes(dataroot, version)
    tokens = args.sample or [t for t in split_sample_tokens(nusc, split) if t in results][:1]
    for token in tokens:
        if token not in results:
            print(f"ftkd viz: sample {token} has no entry in {path}")
            return 1
        for picture in draw_sample(nusc, token, results[token], out_dir, score_threshold=args.score_threshold):
            print(f"wrote {picture}")
    return 0
