"""Distributed helpers: one code path for 1..N processes (torchrun), NCCL on CUDA and gloo on the CPU.

A single process (no torchrun) is world size 1 with no process group; every helper then does the trivial thing,
so callers never branch on whether they run distributed.
"""

from __future__ import annotations

import datetime
import logging
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

logger = logging.getLogger(__name__)


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> this process's CUDA device (LOCAL_RANK) if CUDA is available, else the CPU."""
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:<index>', got {device!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for, but torch sees no CUDA device")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(device)


def init_distributed(device: str = "auto", timeout_minutes: float = 30.0) -> torch.device:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

    Without those variables (or with WORLD_SIZE=1) nothing is initialised. Calling it again is harmless.
    Returns this process's device (its CUDA device is made current).
    """
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend,
            timeout=datetime.timedelta(minutes=timeout_minutes),
            device_id=resolved if resolved.type == "cuda" else None,
        )
        logger.info(f"process group: {backend}, rank {get_rank()} of {get_world_size()}, device {resolved}")
    return resolved


def cleanup() -> None:
    """Leave the process group (if any)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """Mean of `tensor` over processes (a new tensor; the input is not modified)."""
    if not is_distributed():
        return tensor.clone()
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / get_world_size()


def reduce_dict(values: dict[str, Tensor]) -> dict[str, Tensor]:
    """Mean of every scalar tensor in `values` over processes, with one collective (keys sorted: every rank
    must hold the same keys)."""
    if not values:
        return {}
    keys = sorted(values)
    stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys])  # [num_keys]
    reduced = all_reduce_mean(stacked)
    return {k: reduced[i] for i, k in enumerate(keys)}


def all_gather_object(obj: Any) -> list[Any]:
    """Every process's `obj`, in rank order, on every process (pickled; keep tensors on the CPU)."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def gather_object(obj: Any, dst: int = 0) -> list[Any] | None:
    """Every process's `obj`, in rank order, on process `dst` only (None elsewhere)."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] | None = [None] * get_world_size() if get_rank() == dst else None
    dist.gather_object(obj, gathered, dst=dst)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Process `src`'s `obj` on every process."""
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]
