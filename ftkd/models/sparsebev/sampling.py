"""Adaptive spatio-temporal sampling: 3-D points around each query box, warped in time, sampled in every frame.

For each query, G groups x P points are placed in its box (learned offsets scaled by the box size, rotated by its
yaw), copied to every frame t and moved back (or forward) along the query velocity: p_t = p - v * dt_t, where
dt_t = time_offsets[t] (seconds, current - frame; negative for future frames, so the warp goes forward). Ego motion
is already folded into `lidar2img[t]` (reference frame -> pixels of frame t). Each point is projected into the N
cameras of its frame and sampled in the first camera that sees it (the official SparseBEV rule; a point that no
camera sees gets zero features), bilinearly on every FPN level, and the levels are blended with learned softmax
weights. Features are sampled with one 4-D `grid_sample` per level: the cameras of a frame are stacked vertically
(a zero row between them keeps bilinear weights inside one camera) and frames and groups are folded into the batch,
so there is no Python loop over frames or cameras (4 taps per sample instead of the 8 of a 5-D volume).

Pixel convention: `lidar2img` maps to continuous pixel coordinates of the network input (pixel centres at
i + 0.5); u / W in [0, 1] is sampled with align_corners=False, which puts feature cell j of a stride-s map at
image pixel (j + 0.5) * s exactly (the official code uses align_corners=True, a sub-cell shift).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Points closer than this to the camera plane (metres of depth) are invalid (official eps).
DEPTH_EPS = 1e-5


def make_sample_points(centres: Tensor, sizes: Tensor, yaw: Tensor, offsets: Tensor) -> Tensor:
    """Points in query boxes, reference frame (metres).

    Args:
        centres: [B, Q, 3] box centres; sizes: [B, Q, 3] (w, l, h); yaw: [B, Q] heading (rad).
        offsets: [B, Q, P', 3] offsets in box units along (length, width, height), i.e. local x scaled by l.
    Returns:
        [B, Q, P', 3] points = centre + R_z(yaw) (offset * (l, w, h)).
    """
    scale = torch.stack([sizes[..., 1], sizes[..., 0], sizes[..., 2]], dim=-1)  # (l, w, h) along local x, y, z
    local = offsets * scale[:, :, None, :]  # [B, Q, P', 3]
    cos, sin = yaw.cos()[..., None], yaw.sin()[..., None]  # [B, Q, 1]
    x = local[..., 0] * cos - local[..., 1] * sin
    y = local[..., 0] * sin + local[..., 1] * cos
    return torch.stack([x, y, local[..., 2]], dim=-1) + centres[:, :, None, :]


def warp_points(points: Tensor, velocity: Tensor, time_offsets: Tensor) -> Tensor:
    """Object-motion warp: [B, Q, P', 3] points, [B, Q, 2] velocity (m/s), [B, T] offsets (s) -> [B, Q, T, P', 3].

    p_t.xy = p.xy - v * dt_t (z unchanged); dt_t > 0 for past frames, < 0 for future frames.
    """
    shift = velocity[:, :, None, :] * time_offsets[:, None, :, None]  # [B, Q, T, 2]
    xy = points[:, :, None, :, :2] - shift[:, :, :, None, :]  # [B, Q, T, P', 2]
    z = points[:, :, None, :, 2:].expand(-1, -1, time_offsets.shape[1], -1, -1)  # [B, Q, T, P', 1]
    return torch.cat([xy, z], dim=-1)


def project_points(points: Tensor, lidar2img: Tensor, image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Project reference-frame points into every camera of every frame (fp32).

    Args:
        points: [B, Q, T, P', 3] metres; lidar2img: [B, T, N, 4, 4]; image_size: (H, W) pixels.
    Returns:
        uv: [B, T, N, Q, P', 2] pixel coordinates divided by (W, H); valid: [B, T, N, Q, P'] bool
        (in front of the camera and strictly inside the image).
    """
    H, W = image_size
    homogeneous = F.pad(points.float(), (0, 1), value=1.0)  # [B, Q, T, P', 4]
    camera = torch.einsum("btnij,bqtpj->btnqpi", lidar2img.float(), homogeneous)  # [B, T, N, Q, P', 4]
    depth = camera[..., 2]
    uv = camera[..., :2] / depth.clamp(min=DEPTH_EPS)[..., None]
    uv = torch.stack([uv[..., 0] / W, uv[..., 1] / H], dim=-1)
    valid = (depth > DEPTH_EPS) & (uv > 0).all(dim=-1) & (uv < 1).all(dim=-1)
    return uv, valid


def arrange_features(features: Tensor, num_groups: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """[B, T, N, C, H, W] -> [B*T*G, C/G, N*(H+1), W] in `dtype`: per frame and channel group, the N camera maps
    stacked vertically, each followed by one zero row so that bilinear sampling never mixes two cameras.

    fp32 by default (what `sample_multiview` samples); the online runner keeps bf16/fp16 FPN outputs in their own
    dtype (half the bytes in its cache) and widens them to fp32 later, which is exact."""
    B, T, N, C, H, W = features.shape
    arranged = features.new_zeros(B, T, num_groups, C // num_groups, N, H + 1, W, dtype=dtype)
    grouped = features.view(B, T, N, num_groups, C // num_groups, H, W)  # split channels into groups
    arranged[..., :H, :] = grouped.permute(0, 1, 3, 4, 2, 5, 6)  # [B, T, G, C/G, N, H, W]
    return arranged.view(B * T * num_groups, C // num_groups, N * (H + 1), W)


def sample_multiview(
    features: list[Tensor],
    points: Tensor,
    level_weights: Tensor,
    lidar2img: Tensor,
    image_size: tuple[int, int],
) -> Tensor:
    """Sample multi-view multi-scale features at 3-D points of every frame.

    Args:
        features: per level [B*T*G, C/G, N*(H_l+1), W_l] (see `arrange_features`).
        points: [B, Q, T, G, P, 3] reference frame, metres (already warped per frame).
        level_weights: [B, Q, G, P, L] blending weights of the levels (shared by all frames).
        lidar2img: [B, T, N, 4, 4]; image_size: (H, W) of the network input.
    Returns:
        [B, Q, G, T*P, C/G] sampled features, point index t * P + p (frame-major).
    """
    B, Q, T, G, P, _ = points.shape
    N = lidar2img.shape[2]
    with torch.autocast(device_type=points.device.type, enabled=False):
        uv, valid = project_points(points.reshape(B, Q, T, G * P, 3), lidar2img, image_size)  # [B, T, N, Q, GP, .]
        view = valid.to(torch.uint8).argmax(dim=2)  # [B, T, Q, GP] first camera that sees the point (0 if none)
        uv = torch.gather(uv, 2, view[:, :, None, :, :, None].expand(-1, -1, 1, -1, -1, 2))[:, :, 0]  # [B, T, Q, GP, 2]
        seen = valid.any(dim=2)  # [B, T, Q, GP]
        u, v, view = (
            x.reshape(B, T, Q, G, P).transpose(2, 3).reshape(B * T * G, Q, P)  # [B, T, Q, GP] -> [B*T*G, Q, P]
            for x in (uv[..., 0], uv[..., 1], view.float())
        )
        level_weights = level_weights.float().permute(0, 2, 1, 3, 4)[:, None]  # [B, Q, G, P, L] -> [B, 1, G, Q, P, L]
        seen = seen.reshape(B, T, Q, G, P).permute(0, 1, 3, 2, 4)[..., None]  # [B, T, G, Q, P, 1]
        weights = (level_weights * seen).reshape(B * T * G, 1, Q, P, -1)  # [B, T, G, Q, P, L] -> [BTG, 1, Q, P, L]
        x = u * 2.0 - 1.0  # align_corners=False: u * W_l - 0.5 is the feature column
        sampled: Tensor | None = None
        for level, feature in enumerate(features):
            rows = feature.shape[2]  # N * (H_l + 1)
            height = rows // N - 1
            y = 2.0 * (view * (height + 1) + v * height) / rows - 1.0  # row view*(H_l+1) + v*H_l - 0.5 of the stack
            grid = torch.stack([x, y], dim=-1)  # [B*T*G, Q, P, 2]
            out = F.grid_sample(feature, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            weighted = out * weights[..., level]  # [BTG, C/G, Q, P]
            sampled = weighted if sampled is None else sampled + weighted  # no 0 + x pass over the largest tensor
    C_group = sampled.shape[1]
    sampled = sampled.reshape(B, T, G, C_group, Q, P).permute(0, 4, 2, 1, 5, 3)  # [B, Q, G, T, P, C/G]
    return sampled.reshape(B, Q, G, T * P, C_group)


class SpatioTemporalSampling(nn.Module):
    """Learned sampling offsets and level weights of each query, then `sample_multiview`."""

    def __init__(self, embed_dims: int, num_groups: int, num_points: int, num_levels: int) -> None:
        super().__init__()
        self.num_groups = num_groups
        self.num_points = num_points
        self.num_levels = num_levels
        self.sampling_offset = nn.Linear(embed_dims, num_groups * num_points * 3)
        self.level_weights = nn.Linear(embed_dims, num_groups * num_points * num_levels)
        nn.init.zeros_(self.sampling_offset.weight)  # points start at fixed random places inside the box
        nn.init.uniform_(self.sampling_offset.bias, -0.5, 0.5)

    def forward(
        self,
        boxes: Tensor,
        query_feat: Tensor,
        features: list[Tensor],
        lidar2img: Tensor,
        time_offsets: Tensor,
        image_size: tuple[int, int],
    ) -> Tensor:
        """boxes: [B, Q, 9] decoded query boxes (metres, m/s); query_feat: [B, Q, C] -> [B, Q, G, T*P, C/G]."""
        B, Q, _ = boxes.shape
        G, P, L = self.num_groups, self.num_points, self.num_levels
        offsets = self.sampling_offset(query_feat).float().view(B, Q, G * P, 3)
        level_weights = self.level_weights(query_feat).float().view(B, Q, G, P, L).softmax(dim=-1)
        with torch.autocast(device_type=boxes.device.type, enabled=False):
            boxes = boxes.float()
            points = make_sample_points(boxes[..., 0:3], boxes[..., 3:6], boxes[..., 6], offsets)  # [B, Q, GP, 3]
            points = warp_points(points, boxes[..., 7:9].detach(), time_offsets.float())  # [B, Q, T, GP, 3]
        T = time_offsets.shape[1]
        points = points.view(B, Q, T, G, P, 3)
        return sample_multiview(features, points, level_weights, lidar2img, image_size)
