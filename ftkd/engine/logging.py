"""Run logging: stdlib logging on rank 0, one JSON line per log/eval step, TensorBoard scalars, a progress bar.

Layout under the run folder: `train.log` (the console log), `log.jsonl` (header line, then one line per log or
eval step), `tb/` (TensorBoard event files).
"""

from __future__ import annotations

import json
import logging
import math
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("ftkd")


def git_sha() -> str:
    """The commit of the ftkd source tree ('+dirty' if it has changes), or 'unknown' outside a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}+dirty" if dirty else sha


def run_environment(device: torch.device, world_size: int) -> dict[str, Any]:
    """What a reader needs to reproduce a run: code version, library versions, device."""
    env: dict[str, Any] = {
        "git_sha": git_sha(),
        "torch": str(torch.__version__),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "device": str(device),
        "world_size": world_size,
    }
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    else:
        env["device_name"] = platform.processor() or platform.machine()
    return env


def setup_run_logging(out_dir: str | Path, is_main: bool) -> None:
    """Rank 0 also writes the console log to `<out_dir>/train.log`; other ranks only print warnings."""
    ftkd_logger = logging.getLogger("ftkd")
    if not is_main:
        ftkd_logger.setLevel(logging.WARNING)
        return
    for old in [h for h in ftkd_logger.handlers if getattr(h, "ftkd_run_log", False)]:
        ftkd_logger.removeHandler(old)  # a previous run in this process (tests, notebooks) keeps its own file
        old.close()
    handler = logging.FileHandler(Path(out_dir) / "train.log")
    handler.ftkd_run_log = True
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    ftkd_logger.addHandler(handler)
    if ftkd_logger.level == logging.NOTSET or ftkd_logger.level > logging.INFO:
        ftkd_logger.setLevel(logging.INFO)


def format_duration(seconds: float) -> str:
    """12345 -> '3:25:45'."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class MetricLogger:
    """JSON lines + TensorBoard scalars, written by rank 0 only (a no-op elsewhere)."""

    def __init__(self, out_dir: str | Path, enabled: bool) -> None:
        self.enabled = enabled
        self.jsonl = None
        self.writer = None
        if not enabled:
            return
        out_dir = Path(out_dir)
        self.jsonl = open(out_dir / "log.jsonl", "a", buffering=1)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(out_dir / "tb"))

    def write(self, record: dict[str, Any]) -> None:
        """One JSON line (any JSON-able record, e.g. the run header)."""
        if self.jsonl is not None:
            self.jsonl.write(json.dumps(record) + "\n")

    def log(self, kind: str, step: int, values: dict[str, float], **extra: Any) -> None:
        """A JSON line {"kind", "step", **values, **extra} and TensorBoard scalars `kind/name`."""
        if not self.enabled:
            return
        self.write({"kind": kind, "step": step, "time": time.time(), **values, **extra})
        for name, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{kind}/{name}", value, step)

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
            self.jsonl = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class ProgressBar:
    """A tqdm bar over optimiser steps with ETA (rank 0, when enabled and stderr is a terminal); a no-op otherwise
    (batch jobs keep the periodic log lines, which carry the ETA too).

    While it is open, console log lines are printed above the bar instead of through it.
    """

    def __init__(self, total: int, initial: int, enabled: bool, desc: str = "train") -> None:
        self.bar = None
        self.redirect = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, file=sys.stderr)
            self.redirect = logging_redirect_tqdm()
            self.redirect.__enter__()

    def update(self, postfix: dict[str, str]) -> None:
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.redirect is not None:
            self.redirect.__exit__(None, None, None)
            self.redirect = None
        if self.bar is not None:
            self.bar.close()
            self.bar = None
