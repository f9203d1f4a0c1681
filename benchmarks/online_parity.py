"""Accuracy of the online inference options on a trained SparseBEV: the official metric of each mode, and how far
its logits move from the fp32 reference.

`benchmarks/speed.py` times `OnlineSparseBEV`'s options (bf16 autocast, bf16 weights, compiled decoder layer, CUDA
graphs) on random weights, where a logit difference says little about detections. This script streams the val
split of a trained checkpoint through each mode (batch 1, one new frame per sample, as deployed), writes an
official results JSON per mode, scores it with the devkit, and compares every mode's last-layer logits with those of
the eager fp32 run of the same samples:

    python benchmarks/online_parity.py runs/accuracy/bench/seed0/sparsebev/checkpoints/final.pt --out parity.json

On a CPU only the eager modes run (`fp32`, `bf16_weights`); on CUDA the others replay CUDA graphs, and
`compiled_bf16_weights` is the fastest end-to-end mode of docs/speed.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_records import summarize_metrics, write_json  # noqa: E402

# mode -> OnlineSparseBEV options; "fp32" (eager) is the reference of the logit differences
MODES: dict[str, dict[str, Any]] = {
    "fp32": {},
    "bf16_autocast": {"autocast_dtype": torch.bfloat16},
    "bf16_weights": {"weights_dtype": torch.bfloat16},
    "compiled_bf16_weights": {"weights_dtype": torch.bfloat16, "compile_decoder": True},
}
CPU_MODES = ("fp32", "bf16_weights")


def online_parity(checkpoint: str | Path, out_dir: str | Path, modes: list[str] | None = None,
                  device: str = "auto", split: str | None = None, nusc=None) -> dict[str, Any]:
    """Score each mode of `modes` (default: all that run on the device) on `split` (default: the checkpoint's val
    split); returns {"device", "split", "num_samples", "modes": {mode: {official summary, logit differences to
    fp32, seconds of the mode's own calls}}}. Results JSONs and metrics go under `out_dir/<mode>`."""
    from ftkd.data.loader import build_dataloader
    from ftkd.data.results import write_results
    from ftkd.engine.checkpoint import load_model
    from ftkd.engine.evaluation import evaluate
    from ftkd.models.sparsebev.online import OnlineSparseBEV

    target = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    modes = list(modes or (MODES if target.type == "cuda" else CPU_MODES))
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown modes {unknown}; expected some of {list(MODES)}")
    if target.type != "cuda" and set(modes) - set(CPU_MODES):
        raise ValueError(f"modes {sorted(set(modes) - set(CPU_MODES))} need CUDA; on {target} use {list(CPU_MODES)}")
    modes = ["fp32", *(m for m in modes if m != "fp32")]  # the reference runs first
    model, config = load_model(checkpoint, target)
    if config.model.arch != "sparsebev" or config.model.offline:
        raise ValueError(f"{checkpoint}: an online SparseBEV checkpoint is needed (arch {config.model.arch!r}, "
                         f"offline {config.model.offline})")
    split = split or config.data.val_split
    loader = build_dataloader(config.data, split, train=False, batch_size=1)
    out_dir = Path(out_dir)
    model_config = config.model
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(target) if target.type == "cuda" else "cpu",
                              "torch": torch.__version__, "checkpoint": str(checkpoint), "split": split,
                              "num_samples": len(loader.dataset.sample_tokens),
                              "model": {"backbone_depth": model_config.backbone.depth,
                                        "image_size": list(config.data.image_size),
                                        "num_frames": model_config.num_frames, "num_queries": model_config.num_queries},
                              "modes": {}}
    # one pass over the data: every mode's runner (each with its own frame cache) sees each batch in turn
    runners = {mode: OnlineSparseBEV(model.eval(), cuda_graph=target.type == "cuda" and mode != "fp32", **MODES[mode])
               for mode in modes}
    predictions: dict[str, list] = {mode: [] for mode in modes}
    logits: dict[str, list[torch.Tensor]] = {mode: [] for mode in modes}  # last layer's [Q, K] per sample
    seconds = dict.fromkeys(modes, 0.0)
    with torch.no_grad():
        for batch in loader:
            batch = batch.to(target)
            for mode, runner in runners.items():
                start = time.perf_counter()
                output = runner(batch)
                logits[mode].extend(output.pred_logits[-1].float().cpu())  # [B, Q, K] -> B x [Q, K] (synchronises)
                predictions[mode].extend((meta, det.cpu()) for meta, det in
                                         zip(batch.meta, runner.model.postprocess(output)))
                seconds[mode] += time.perf_counter() - start
    reference = logits["fp32"]
    for mode in modes:
        results = write_results(predictions[mode], out_dir / mode / "results.json",
                                sample_tokens=list(loader.dataset.sample_tokens))
        metrics = evaluate(results, config.data.dataroot, config.data.version, split, out_dir / mode, nusc=nusc)
        entry = {**summarize_metrics(metrics), "seconds": round(seconds[mode], 2)}
        if mode != "fp32":
            differences = torch.stack([(a - b).abs().max() for a, b in zip(logits[mode], reference)])
            entry["max_abs_logit_diff"] = differences.max().item()
            entry["median_max_abs_logit_diff"] = differences.median().item()
        report["modes"][mode] = entry
    report["max_abs_logit"] = max(x.abs().max().item() for x in reference)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a trained online SparseBEV (ftkd train's checkpoints/final.pt)")
    parser.add_argument("--out", required=True, help="the JSON written (atomically)")
    parser.add_argument("--work-dir", default=None, help="results and metrics per mode (default: next to --out)")
    parser.add_argument("--modes", nargs="*", default=None, help=f"some of {list(MODES)} (default: all the device runs)")
    parser.add_argument("--split", default=None, help="default: the checkpoint's val split")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--note", default="", help="how the checkpoint was made, recorded with the numbers")
    args = parser.parse_args(argv)
    out = Path(args.out)
    report = online_parity(args.checkpoint, args.work_dir or out.with_suffix(""), args.modes, args.device, args.split)
    if args.note:
        report["note"] = args.note
    write_json(report, out)
    for mode, entry in report["modes"].items():
        diff = entry.get("max_abs_logit_diff")
        print(f"{mode:<22} NDS {entry['NDS']:.4f} mAP {entry['mAP']:.4f} mAVE {entry['mAVE']:.4f}"
              + ("" if diff is None else f"  max |logit - fp32| {diff:.4f}") + f"  {entry['seconds']:.1f} s")
    print(json.dumps({"max_abs_logit": report["max_abs_logit"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
