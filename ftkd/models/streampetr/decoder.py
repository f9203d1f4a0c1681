"""StreamPETR's transformer decoder and its prediction heads.

Each layer (post-norm): hybrid temporal self-attention (queries attend to queries + memory) -> LN -> cross-attention
to all image tokens (keys carry the 3-D position embedding) -> LN -> FFN -> LN. A shared LayerNorm is applied to every
layer's output; the classification and regression heads are one module applied to every layer, and every layer's
boxes are predicted from the same reference points (no iterative refinement).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ftkd.models.streampetr.position_embedding import inverse_sigmoid


class MultiheadAttention(nn.Module):
    """Residual multi-head attention on `F.scaled_dot_product_attention` (flash / memory-efficient kernels on GPU).

    Positions are added to queries and keys, not to values: out = query + Dropout(Attn(q + q_pos, k + k_pos, v)).
    """

    def __init__(self, embed_dims: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f"embed_dims {embed_dims} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj = nn.Linear(embed_dims, 3 * embed_dims)  # q, k, v projections stacked (one xavier init)
        self.out_proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(dropout)

    def queries_and_keys(self, query: Tensor, key: Tensor, query_pos: Tensor, key_pos: Tensor) -> tuple[Tensor, Tensor]:
        """Per-head projections q [B, h, Q, C/h] of query + query_pos and k [B, h, S, C/h] of key + key_pos."""
        w_q, w_k, _ = self.in_proj.weight.chunk(3)
        b_q, b_k, _ = self.in_proj.bias.chunk(3)
        q = F.linear(query + query_pos, w_q, b_q).view(*query.shape[:2], self.num_heads, -1).transpose(1, 2)
        k = F.linear(key + key_pos, w_k, b_k).view(*key.shape[:2], self.num_heads, -1).transpose(1, 2)
        return q, k

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, query_pos: Tensor, key_pos: Tensor, attn_mask: Tensor | None
    ) -> Tensor:
        """query [B, Q, C], key/value [B, S, C]; attn_mask [Q, S] bool, True where attention is allowed, or a float
        logit bias broadcastable to [B, heads, Q, S]."""
        B, Q, C = query.shape
        q, k = self.queries_and_keys(query, key, query_pos, key_pos)  # [B, h, Q, C/h], [B, h, S, C/h]
        _, _, w_v = self.in_proj.weight.chunk(3)
        _, _, b_v = self.in_proj.bias.chunk(3)
        v = F.linear(value, w_v, b_v).view(B, key.shape[1], self.num_heads, -1).transpose(1, 2)  # [B, h, S, C/h]
        dropout = self.dropout if self.training else 0.0
        if attn_mask is not None and attn_mask.is_floating_point():
            attn_mask = attn_mask.to(q.dtype)  # a float bias must match the (autocast) query dtype
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)  # [B, h, Q, C/h]
        out = out.transpose(1, 2).reshape(B, Q, C)  # [B, h, Q, C/h] -> [B, Q, C]
        return query + self.proj_drop(self.out_proj(out))


class FFN(nn.Module):
    """Residual feed-forward block: x + Dropout(Linear(Dropout(ReLU(Linear(x)))))."""

    def __init__(self, embed_dims: int, ffn_dims: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(embed_dims, ffn_dims),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(ffn_dims, embed_dims),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.layers(x)


class TemporalDecoderLayer(nn.Module):
    """Hybrid temporal self-attention -> LN -> cross-attention to image tokens -> LN -> FFN -> LN."""

    def __init__(self, embed_dims: int, num_heads: int, ffn_dims: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(embed_dims, num_heads, dropout)
        self.cross_attn = MultiheadAttention(embed_dims, num_heads, dropout)
        self.ffn = FFN(embed_dims, ffn_dims, dropout)
        self.norms = nn.ModuleList([nn.LayerNorm(embed_dims) for _ in range(3)])

    def forward(
        self,
        query: Tensor,
        query_pos: Tensor,
        tokens: Tensor,
        token_pos: Tensor,
        temp_memory: Tensor,
        temp_pos: Tensor,
        self_attn_mask: Tensor | None,
        cross_attn_bias: Tensor | None = None,
    ) -> Tensor:
        """query/query_pos [B, Q, C]; tokens/token_pos [B, S, C]; temp_memory/temp_pos [B, M, C] -> [B, Q, C].
        cross_attn_bias: optional [B, 1, Q, S] float logit bias of the cross-attention."""
        key = torch.cat([query, temp_memory], dim=1)  # [B, Q + M, C]
        key_pos = torch.cat([query_pos, temp_pos], dim=1)
        query = self.norms[0](self.self_attn(query, key, key, query_pos, key_pos, self_attn_mask))
        query = self.norms[1](self.cross_attn(query, tokens, tokens, query_pos, token_pos, cross_attn_bias))
        return self.norms[2](self.ffn(query))


class TemporalDecoder(nn.Module):
    """`num_layers` decoder layers (separate weights) and a shared output LayerNorm; returns every layer's output."""

    def __init__(
        self, num_layers: int, embed_dims: int, num_heads: int, ffn_dims: int, dropout: float, with_checkpoint: bool
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [TemporalDecoderLayer(embed_dims, num_heads, ffn_dims, dropout) for _ in range(num_layers)]
        )
        self.post_norm = nn.LayerNorm(embed_dims)
        self.with_checkpoint = with_checkpoint
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # DETR's init: xavier-uniform on every matrix, zero biases of those layers.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(
        self,
        query: Tensor,
        query_pos: Tensor,
        tokens: Tensor,
        token_pos: Tensor,
        temp_memory: Tensor,
        temp_pos: Tensor,
        self_attn_mask: Tensor | None,
        cross_attn_bias: Tensor | None = None,
    ) -> Tensor:
        """Returns [L, B, Q, C]: the post-normed output of every layer (the same cross-attention bias in each)."""
        outputs = []
        for layer in self.layers:
            args = (query, query_pos, tokens, token_pos, temp_memory, temp_pos, self_attn_mask, cross_attn_bias)
            if self.with_checkpoint and self.training and torch.is_grad_enabled():
                query = checkpoint(layer, *args, use_reentrant=False)
            else:
                query = layer(*args)
            outputs.append(self.post_norm(query))
        return torch.stack(outputs)


class PredictionHeads(nn.Module):
    """Classification and box regression shared by all decoder layers.

    cls: [Linear-LN-ReLU] x 2 -> Linear(K), bias at the focal prior 0.01; reg: [Linear-ReLU] x 2 -> Linear(10).
    The centre is sigmoid(delta + inverse_sigmoid(reference point)) in the normalised point-cloud range; sizes, yaw
    and velocity (m/s) are regressed directly, in the code layout of ftkd.constants.
    """

    def __init__(self, embed_dims: int, num_classes: int, point_cloud_range: tuple[float, ...]) -> None:
        super().__init__()
        self.cls_branch = nn.Sequential(
            nn.Linear(embed_dims, embed_dims),
            nn.LayerNorm(embed_dims),
            nn.ReLU(inplace=True),
            nn.Linear(embed_dims, embed_dims),
            nn.LayerNorm(embed_dims),
            nn.ReLU(inplace=True),
            nn.Linear(embed_dims, num_classes),
        )
        self.reg_branch = nn.Sequential(
            nn.Linear(embed_dims, embed_dims),
            nn.ReLU(),
            nn.Linear(embed_dims, embed_dims),
            nn.ReLU(),
            nn.Linear(embed_dims, 10),
        )
        self.register_buffer("pc_range", torch.tensor(point_cloud_range, dtype=torch.float32), persistent=False)
        nn.init.constant_(self.cls_branch[-1].bias, -torch.log(torch.tensor((1 - 0.01) / 0.01)).item())

    def forward(self, features: Tensor, reference_points: Tensor) -> tuple[Tensor, Tensor]:
        """features [L, B, Q, C], reference_points [B, Q, 3] normalised -> logits [L, B, Q, K], codes [L, B, Q, 10]."""
        logits = self.cls_branch(features)
        delta = self.reg_branch(features).float()
        centre = (delta[..., :3] + inverse_sigmoid(reference_points.float())).sigmoid()
        low, high = self.pc_range[:3], self.pc_range[3:]
        centre = centre * (high - low) + low
        return logits.float(), torch.cat([centre, delta[..., 3:]], dim=-1)
