"""Scale-adaptive self-attention (SASA): multi-head self-attention with a learned distance penalty per head.

logits_h[i, j] = q_i . k_j / sqrt(d) - tau_h(i) * D_ij, where D_ij is the BEV distance (metres) between the
centres of queries i and j and tau_h(i) >= 0 in practice is predicted from query i's feature per head (a linear
layer with zero weight and bias ~ U(0, 2), so every head starts with a fixed receptive field).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def distance_bias(centres: Tensor, tau: Tensor) -> Tensor:
    """Attention logit bias -tau * D.

    Args:
        centres: [B, Q, 2] BEV centres (metres); tau: [B, Q, H] per query (row) and head.
    Returns:
        [B, H, Q, Q] fp32 with bias[b, h, i, j] = -tau[b, i, h] * ||c_i - c_j||.
    """
    centres = centres.float()
    distance = torch.cdist(centres, centres)  # [B, Q, Q]
    return -tau.float().permute(0, 2, 1)[..., None] * distance[:, None]  # [B, Q, H] -> [B, H, Q, 1]


class ScaleAdaptiveSelfAttention(nn.Module):
    """Self-attention among queries with the SASA distance bias, residual inside (dropout on the weights)."""

    def __init__(self, embed_dims: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attention = nn.MultiheadAttention(embed_dims, num_heads, dropout=dropout, batch_first=True)
        self.gen_tau = nn.Linear(embed_dims, num_heads)
        nn.init.zeros_(self.gen_tau.weight)
        nn.init.uniform_(self.gen_tau.bias, 0.0, 2.0)

    def forward(self, centres: Tensor, query_feat: Tensor, block_mask: Tensor | None = None) -> Tensor:
        """centres: [B, Q, 2] metres (no gradient), query_feat: [B, Q, C], block_mask: [Q, Q] bool (True = blocked).

        Returns query_feat + attention(query_feat) [B, Q, C].
        """
        B, Q, _ = query_feat.shape
        with torch.autocast(device_type=query_feat.device.type, enabled=False):
            bias = distance_bias(centres.detach(), self.gen_tau(query_feat.float()))  # [B, H, Q, Q]
            if block_mask is not None:
                bias = bias.masked_fill(block_mask, float("-inf"))
        bias = bias.to(query_feat.dtype).reshape(B * self.num_heads, Q, Q)  # [B, H, Q, Q] -> [B*H, Q, Q]
        attended, _ = self.attention(query_feat, query_feat, query_feat, attn_mask=bias, need_weights=False)
        return query_feat + attended
