"""Adaptive mixing (AdaMixer-style): per-query dynamic channel mixing, then dynamic point mixing, per group."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class AdaptiveMixing(nn.Module):
    """Mix the [P_in, C/G] sampled features of each group with weights generated from the query feature.

    Channel mixing x <- ReLU(LN(x M)) with M [C/G, C/G], then point mixing x <- ReLU(LN(S x)) with
    S [P_out, P_in]; LN normalises over the [P, C/G] matrix jointly, without affine. The G x P_out x C/G result
    is projected back to C and added to the query (residual). The parameter generator starts at zero weight, so
    M and S are initially query-independent (its bias).
    """

    def __init__(self, embed_dims: int, in_points: int, num_groups: int, out_points: int) -> None:
        super().__init__()
        self.num_groups = num_groups
        self.in_points = in_points
        self.out_points = out_points
        self.group_dims = embed_dims // num_groups
        self.channel_params = self.group_dims * self.group_dims
        self.point_params = in_points * out_points
        self.parameter_generator = nn.Linear(embed_dims, num_groups * (self.channel_params + self.point_params))
        self.out_proj = nn.Linear(num_groups * out_points * self.group_dims, embed_dims)
        nn.init.zeros_(self.parameter_generator.weight)

    def forward(self, sampled: Tensor, query_feat: Tensor) -> Tensor:
        """sampled: [B, Q, G, P_in, C/G], query_feat: [B, Q, C] -> [B, Q, C]."""
        B, Q, G, P, C_group = sampled.shape
        if (G, P, C_group) != (self.num_groups, self.in_points, self.group_dims):
            raise ValueError(
                f"AdaptiveMixing: expected sampled features [B, Q, {self.num_groups}, {self.in_points}, "
                f"{self.group_dims}], got {list(sampled.shape)} (does the batch have the configured number of frames?)"
            )
        params = self.parameter_generator(query_feat).reshape(B * Q, G, -1)  # [B, Q, G*(..)] -> [BQ, G, ..]
        channel_mix, point_mix = params.split([self.channel_params, self.point_params], dim=-1)
        channel_mix = channel_mix.reshape(B * Q, G, C_group, C_group)
        point_mix = point_mix.reshape(B * Q, G, self.out_points, P)
        x = sampled.reshape(B * Q, G, P, C_group).to(params.dtype)  # [B, Q, G, P, C/G] -> [BQ, G, P, C/G]
        x = F.relu(F.layer_norm(x @ channel_mix, (P, C_group)))
        x = F.relu(F.layer_norm(point_mix @ x, (self.out_points, C_group)))  # [BQ, G, P_out, C/G]
        return query_feat + self.out_proj(x.reshape(B, Q, -1))  # [BQ, G, P_out, C/G] -> [B, Q, G*P_out*C/G]
