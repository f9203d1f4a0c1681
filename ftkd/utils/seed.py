"""Seeding and RNG state capture, so that a run can be repeated and resumed exactly.

RNG states are stored as tensors and primitive containers only, so a checkpoint holding them loads with
`torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's `random`, NumPy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The state of every global generator of this process (CPU tensors and primitives)."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # the current device only (one device per process)
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state()` returned (CUDA states only if this process has the same devices)."""
    random.setstate(_as_python_state(state["python"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _as_python_state(state: tuple | list) -> tuple:
    """`random.setstate` wants (version, tuple of ints, gauss); a round trip may have turned tuples into lists."""
    version, internal, gauss = state
    return version, tuple(internal), gauss
