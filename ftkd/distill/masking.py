"""Random masks for masked feature generation (MGD-style): M = 0 where R < ratio, else 1, with R ~ U(0, 1).

A mask is a {0, 1} tensor in the feature's dtype that broadcasts against the feature, so `feature * mask` zeroes
the masked positions; the expected masked fraction equals `ratio`.
"""

from __future__ import annotations

import torch
from torch import Tensor


def random_mask(shape: tuple[int, ...], ratio: float, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A {0, 1} mask of `shape` on `like`'s device and dtype; each entry is 0 with probability `ratio`."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    uniform = torch.rand(shape, device=like.device, generator=generator)
    return (uniform >= ratio).to(like.dtype)


def pv_mask(features: Tensor, ratio: float, mode: str = "pixel", generator: torch.Generator | None = None) -> Tensor:
    """Mask for perspective-view features `[..., C, H, W]`.

    mode "pixel": one value per location shared by all channels (`[..., 1, H, W]`, MGD); "element": per entry.
    """
    if mode == "pixel":
        shape = (*features.shape[:-3], 1, *features.shape[-2:])
    elif mode == "element":
        shape = tuple(features.shape)
    else:
        raise ValueError(f"pv mask mode: expected 'pixel' or 'element', got {mode!r}")
    return random_mask(shape, ratio, features, generator)


def query_mask(features: Tensor, ratio: float, mode: str = "token", generator: torch.Generator | None = None) -> Tensor:
    """Mask for query features `[B, Q, C]`: "token" masks whole query vectors (`[B, Q, 1]`), "element" entries."""
    if mode == "token":
        shape = (*features.shape[:-1], 1)
    elif mode == "element":
        shape = tuple(features.shape)
    else:
        raise ValueError(f"query mask mode: expected 'token' or 'element', got {mode!r}")
    return random_mask(shape, ratio, features, generator)
