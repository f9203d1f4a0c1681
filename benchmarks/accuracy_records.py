"""What the accuracy benchmark records and how: the environment of the process (device, versions, commit), the
JSON writer, and the helpers that turn a run folder (log.jsonl, chunk log, metrics.json, config) into the fields of a
stage's JSON (training facts, inference facts, metric summary, recipe differences to the baseline).

Used by `benchmarks/accuracy.py`; `benchmarks/report.py` reads the files it writes.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ftkd.config import ExperimentConfig

ROOT = Path(__file__).resolve().parents[1]
FORMAT = "ftkd-accuracy-v1"


# ------------------------------------------------------------------------------------------------- environment
def git_state() -> tuple[str, bool | None]:
    """(commit, dirty) of the source tree; ('unknown', None) outside a git checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown", None
    return sha.stdout.strip(), bool(status.stdout.strip())


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment(commit_override: str | None) -> dict[str, Any]:
    """Device, library versions and code version of this process."""
    import torch

    commit, dirty = git_state()
    if commit == "unknown" and commit_override:
        commit = commit_override
    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name(0) if cuda else cpu_name(),
        "device_type": "cuda" if cuda else "cpu",
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": str(torch.__version__),
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "commit": commit,
        "git_dirty": dirty,
    }


def write_json(record: dict | list, path: Path) -> None:
    """Compact JSON, written atomically (NaN becomes null so that any JSON reader accepts it)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(clean(record), separators=(",", ":"), allow_nan=False) + "\n")
    tmp.replace(path)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1}} -> {"train.lr": 1} (lists compared as JSON lists; lr_multipliers kept whole)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and key != "lr_multipliers":
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_chunks(run: Path) -> list[dict[str, Any]]:
    """The chunks this script ran in a run folder: start/end step, max_steps, wall seconds, device."""
    path = run / "accuracy_chunks.json"
    return json.loads(path.read_text()) if path.is_file() else []


def final_eval_seconds(entries: list[dict[str, Any]]) -> float | None:
    """Seconds between the last training log line and the final evaluation (saving + predicting + metric)."""
    last_train = None
    for entry in entries:
        if entry.get("kind") == "train":
            last_train = entry
        elif entry.get("kind") == "eval" and entry.get("tag") == "final" and last_train is not None:
            return float(entry["time"] - last_train["time"])
    return None


def summarize_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The official summary in the paper's names (fractions, not percent), per-class AP and TP errors."""
    tp = metrics["tp_errors"]
    return {
        "NDS": metrics["nd_score"],
        "mAP": metrics["mean_ap"],
        "mATE": tp["trans_err"],
        "mASE": tp["scale_err"],
        "mAOE": tp["orient_err"],
        "mAVE": tp["vel_err"],
        "mAAE": tp["attr_err"],
        "per_class_AP": metrics["mean_dist_aps"],
        "per_class_TP": metrics.get("label_tp_errors", {}),
        "present_classes": metrics.get("present_classes"),
        "NDS_present": metrics.get("nd_score_present"),
        "mAP_present": metrics.get("mean_ap_present"),
        "num_gt_boxes": metrics.get("num_gt_boxes"),
        "num_pred_boxes": metrics.get("num_pred_boxes"),
        "split": metrics.get("split"),
    }


def training_facts(entries: list[dict[str, Any]], chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Steps, wall times and step times of a finished run, with a loss curve of at most 20 points."""
    train = [e for e in entries if e.get("kind") == "train"]
    header = next((e for e in entries if e.get("kind") == "header"), {})
    curve = train[:: max(1, math.ceil(len(train) / 20))]
    times = [e["ms_per_step"] for e in train[1:] or train if "ms_per_step" in e]
    return {
        "steps": int(train[-1]["step"]) if train else 0,
        "epochs": round(float(train[-1]["epoch"]), 3) if train else 0.0,
        "schedule": header.get("schedule"),
        "wall_s": round(sum(c["wall_s"] for c in chunks), 1),  # every chunk: setup, training, checkpoints, eval
        "train_s": round(sum(e.get("ms_per_step", 0.0) * d / 1000.0 for e, d in _window_steps(train)), 1),
        "eval_s": final_eval_seconds(entries),
        "chunks": len(chunks),
        "ms_per_step_median": statistics.median(times) if times else None,
        "data_ms_per_step_median": statistics.median([e["data_ms_per_step"] for e in train if "data_ms_per_step" in e])
        if train else None,
        "samples_per_s_median": statistics.median([e["samples_per_s"] for e in train if "samples_per_s" in e])
        if train else None,
        "max_memory_gb": max((e["max_memory_gb"] for e in train if "max_memory_gb" in e), default=None),  # CUDA only
        "loss_curve": [[int(e["step"]), round(float(e.get("loss", float("nan"))), 4)] for e in curve],
        "final_loss": train[-1].get("loss") if train else None,
    }


def _window_steps(train: list[dict[str, Any]]) -> list[tuple[dict[str, Any], int]]:
    """(log entry, optimiser steps its window covered); a window after a resume from an earlier step is skipped."""
    pairs, previous = [], 0
    for entry in train:
        steps = int(entry["step"]) - previous
        if steps > 0:
            pairs.append((entry, steps))
        previous = int(entry["step"])
    return pairs


def inference_facts(config: ExperimentConfig, num_parameters: int) -> dict[str, Any]:
    """What decides a model's inference cost: architecture, backbone, queries, frames, input size, parameters."""
    model = config.model
    streaming = model.arch == "streampetr"
    return {
        "arch": model.arch,
        "backbone": f"ResNet-{model.backbone.depth}",
        "image_size": list(config.data.image_size),
        "cameras": 6,
        "queries": model.num_queries + (model.num_propagated if streaming else 0),
        "frames": 1 if streaming else model.num_frames,  # images through the backbone per sample: frames x 6
        "memory": model.memory_len if streaming else None,
        "future_frames": config.data.num_future_frames,
        "embed_dims": model.embed_dims,
        "decoder_layers": model.num_layers,
        "parameters": num_parameters,
    }


def recipe_differences(config: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """Keys of data/model/train that differ from the baseline student's (name and out_dir excluded)."""
    differences = []
    for section in ("data", "model", "train"):
        for key in sorted(set(config[section]) | set(baseline[section])):
            if (section, key) in {("train", "out_dir")}:
                continue
            if config[section].get(key) != baseline[section].get(key):
                differences.append(f"{section}.{key}: {baseline[section].get(key)!r} -> {config[section].get(key)!r}")
    return differences
