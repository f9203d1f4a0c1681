"""Motion-aware layer norm (MLN): a layer norm whose scale and shift are predicted from a motion code.

StreamPETR conditions memorised features and positions on how the world moved since they were stored (ego motion,
elapsed time, the object's own velocity), so the network can align them implicitly. At initialisation the scale is
1 and the shift 0, i.e. MLN starts as a plain affine-free layer norm.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ftkd.models.streampetr.position_embedding import nerf_encoding


class MotionLayerNorm(nn.Module):
    """out = gamma(c) * LayerNorm(x) + beta(c), with c reduced by Linear + ReLU (gamma, beta zero-weight init)."""

    def __init__(self, condition_dims: int, embed_dims: int = 256) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Linear(condition_dims, embed_dims), nn.ReLU())
        self.gamma = nn.Linear(embed_dims, embed_dims)
        self.beta = nn.Linear(embed_dims, embed_dims)
        self.norm = nn.LayerNorm(embed_dims, elementwise_affine=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.gamma.weight)
        nn.init.ones_(self.gamma.bias)
        nn.init.zeros_(self.beta.weight)
        nn.init.zeros_(self.beta.bias)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        """x [..., C], condition [..., condition_dims] -> [..., C]."""
        c = self.reduce(condition)
        return self.gamma(c) * self.norm(x) + self.beta(c)


def motion_code(velocity: Tensor, time_delta: Tensor, relative_pose: Tensor) -> Tensor:
    """[..., 180] NeRF-encoded motion of memory entries (or of current queries, with zero motion).

    Args:
        velocity: [..., 2] m/s, as predicted when the entry was stored (in that frame's axes).
        time_delta: [..., 1] seconds since the entry was stored (float64 is fine).
        relative_pose: [..., 4, 4] stored frame -> current reference frame.
    """
    raw = torch.cat([velocity.float(), time_delta.float(), relative_pose[..., :3, :].flatten(-2).float()], dim=-1)
    return nerf_encoding(raw)  # [..., 15] -> [..., 180]


def static_motion_code(shape: torch.Size | tuple[int, ...], device: torch.device) -> Tensor:
    """[*shape, 180] motion code of a current query: no velocity, no elapsed time, identity pose."""
    eye = torch.eye(4, device=device).expand(*shape, 4, 4)
    zeros = torch.zeros(*shape, 2, device=device)
    return motion_code(zeros, zeros[..., :1], eye)
