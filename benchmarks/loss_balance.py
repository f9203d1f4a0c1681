"""How the distillation losses weigh against the detection loss in finished accuracy runs.

A KD term whose weighted value dwarfs the detection loss takes over the gradient: with the recipes' gradient
clipping (total norm 35) the detection gradient is then scaled down by the same factor. This script reads the run
folders of benchmarks/accuracy.py (`<runs-dir>/<profile>/seed<S>/<stage>/{config.json,log.jsonl}`, as the trainer
wrote them) and records, for the first and the last logged window of every run: the total loss, each KD term
weighted as the objective weighs it (`ftkd.distill.objective.kd_loss_weights`), the detection part (total minus
the weighted KD terms), their ratio and the gradient norm before clipping.

    python benchmarks/loss_balance.py --runs-dir runs/accuracy --profile bench --out docs/results/loss_balance.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ftkd.distill.config import DistillConfig
from ftkd.distill.objective import kd_loss_weights

FORMAT = "ftkd-loss-balance-v1"


def window_balance(entry: dict[str, Any], weights: dict[str, float]) -> dict[str, Any]:
    """Weighted KD terms, detection part and gradient norm of one logged training window."""
    kd = {name: entry[name] * weight for name, weight in weights.items() if name in entry}
    total = float(entry["loss"])
    detection = total - sum(kd.values())
    return {
        "step": int(entry["step"]),
        "total": total,
        "detection": detection,
        "kd_weighted": kd,
        "kd_over_detection": sum(kd.values()) / detection if detection > 0 else None,
        "grad_norm": entry.get("grad_norm"),
    }


def run_balance(run: Path) -> dict[str, Any] | None:
    """The balance of one run folder, or None if it has no training log."""
    log, config_file = run / "log.jsonl", run / "config.json"
    if not log.is_file() or not config_file.is_file():
        return None
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    train = [e for e in entries if e.get("kind") == "train"]
    if not train:
        return None
    config = json.loads(config_file.read_text())
    distill = config.get("distill")
    weights: dict[str, float] = {}
    if distill and distill.get("teacher"):
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in distill.items()}
        weights = kd_loss_weights(DistillConfig(**fields), config["model"]["num_layers"])
    return {
        "stage": run.name,
        "seed": int(run.parent.name.removeprefix("seed")),
        "grad_clip": config["train"].get("grad_clip"),
        "kd_weights": weights,
        "first": window_balance(train[0], weights),
        "last": window_balance(train[-1], weights),
        "finished": any(e.get("kind") == "eval" and e.get("tag") == "final" for e in entries),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", required=True, help="accuracy.py's --runs-dir")
    parser.add_argument("--profile", default="bench")
    parser.add_argument("--device", default="", help="the device the runs trained on, recorded in the JSON")
    parser.add_argument("--commit", default="", help="the commit the runs trained at, recorded in the JSON")
    parser.add_argument("--out", default="docs/results/loss_balance.json")
    args = parser.parse_args(argv)
    root = Path(args.runs_dir) / args.profile
    if not root.is_dir():
        raise SystemExit(f"{root}: no such folder (expected <runs-dir>/<profile>/seed<S>/<stage>)")
    runs = [b for run in sorted(root.glob("seed*/*")) if (b := run_balance(run)) is not None]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    record = {"format": FORMAT, "profile": args.profile, "device": args.device, "commit": args.commit, "runs": runs}
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(out)
    for r in runs:
        print(f"{r['stage']:<18} seed {r['seed']}  detection {r['first']['detection']:9.2f} -> "
              f"{r['last']['detection']:7.2f}   KD/detection {r['first']['kd_over_detection'] or 0:8.2f} -> "
              f"{r['last']['kd_over_detection'] or 0:7.2f}   grad norm {r['first']['grad_norm']:9.1f} -> "
              f"{r['last']['grad_norm']:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
