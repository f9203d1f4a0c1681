"""PETR's 3-D position embedding of image tokens, and the sinusoidal encodings StreamPETR uses.

Every stride-s image token is lifted to a ray of frustum points (its pixel centre at `D` depths), mapped to the
reference frame with the inverse of `lidar2img`, normalised by the position range to [0, 1], passed through an
inverse sigmoid and an MLP. Depth bins are linear-increasing (LID): bin k sits at
`d_k = d_0 + (d_max - d_0) / (D (D + 1)) * k (k + 1)`, so bins are dense near the camera.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """log(x / (1 - x)) with x clamped to [0, 1] and both terms to >= eps (finite everywhere)."""
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def linear_increasing_depths(num_bins: int, depth_start: float, depth_max: float) -> Tensor:
    """[D] depth (metres) of each linear-increasing bin: d_k = d_0 + (d_max - d_0) k (k + 1) / (D (D + 1))."""
    k = torch.arange(num_bins, dtype=torch.float64)
    return (depth_start + (depth_max - depth_start) * k * (k + 1) / (num_bins * (num_bins + 1))).float()


def token_centres(height: int, width: int, stride: float, device: torch.device) -> Tensor:
    """[h, w, 2] pixel (u, v) of each stride-`stride` token centre in the network input image."""
    u = torch.arange(width, device=device, dtype=torch.float32) * stride + stride / 2
    v = torch.arange(height, device=device, dtype=torch.float32) * stride + stride / 2
    grid_v, grid_u = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([grid_u, grid_v], dim=-1)


def frustum_points(lidar2img: Tensor, centres: Tensor, depths: Tensor) -> Tensor:
    """Reference-frame points of every token at every depth bin.

    Args:
        lidar2img: [B, N, 4, 4] reference frame -> pixel (homogeneous, depth as 3rd row).
        centres: [h, w, 2] pixel centres (u, v) in the network input.
        depths: [D] metres along the camera axis.
    Returns:
        [B, N, h, w, D, 3] points (metres, reference frame).
    """
    h, w = centres.shape[:2]
    D = depths.shape[0]
    depth = depths.to(centres).view(1, 1, D, 1).expand(h, w, D, 1)
    uv = centres.view(h, w, 1, 2) * depth.clamp(min=1e-5)  # [h, w, D, 2] homogeneous pixel (u d, v d)
    homogeneous = torch.cat([uv, depth, torch.ones_like(depth)], dim=-1)  # [h, w, D, 4]
    # The inverse is taken in float64: lidar2img mixes pixel-scale and metre-scale entries.
    img2lidar = torch.linalg.inv_ex(lidar2img.double()).inverse.float()  # [B, N, 4, 4]
    points = torch.einsum("bnij,hwdj->bnhwdi", img2lidar, homogeneous)  # [B, N, h, w, D, 4]
    return points[..., :3]


def token_rays(lidar2img: Tensor, centres: Tensor) -> tuple[Tensor, Tensor]:
    """Camera centre and unit viewing direction (reference frame) of every token's ray.

    Args:
        lidar2img: [B, N, 4, 4] reference frame -> pixel; centres: [h, w, 2] pixel centres (u, v).
    Returns:
        origins [B, N, 3] metres and directions [B, N, h, w, 3] (unit length, pointing away from the camera).
    """
    ends = frustum_points(lidar2img, centres, torch.tensor([0.0, 1.0], device=centres.device))  # [B, N, h, w, 2, 3]
    origins = ends[:, :, 0, 0, 0]  # depth 0 maps every pixel to the camera centre
    directions = ends[..., 1, :] - origins[:, :, None, None]  # [B, N, h, w, 3]
    return origins, directions / directions.norm(dim=-1, keepdim=True).clamp(min=1e-6)


def ray_distance_bias(points: Tensor, origins: Tensor, directions: Tensor, sigma: float) -> Tensor:
    """Cross-attention logit bias -d / sigma, d the distance (metres) from a query point to a token's viewing ray.

    A point behind the camera is measured to the camera centre (the ray is a half-line). The bias makes a query at
    3-D point p look first at the tokens whose rays pass near p, which the learned 3-D position embedding otherwise
    has to discover from the detection loss alone (slow when the backbone is trained from scratch).

    Args:
        points: [B, Q, 3] query reference points (metres, reference frame).
        origins: [B, N, 3] camera centres; directions: [B, N, h, w, 3] unit ray directions (`token_rays`).
        sigma: metres per unit of logit.
    Returns:
        [B, 1, Q, N*h*w] float bias (broadcast over heads), tokens camera-major then row-major.
    """
    B, N, h, w, _ = directions.shape
    offsets = points[:, :, None] - origins[:, None]  # [B, Q, N, 3]
    rays = directions.reshape(B, N, h * w, 3)  # [B, N, h, w, 3] -> [B, N, h*w, 3]
    along = torch.einsum("bqnc,bnsc->bqns", offsets, rays).clamp(min=0)  # [B, Q, N, h*w] metres along each ray
    # The perpendicular vector itself, not a difference of squares, which loses centimetres at tens of metres in fp32.
    perpendicular = offsets[:, :, :, None] - along[..., None] * rays[:, None]  # [B, Q, N, h*w, 3]
    distance = perpendicular.norm(dim=-1).flatten(2)  # [B, Q, N, h*w] -> [B, Q, N*h*w]
    return (-distance / sigma)[:, None]


class PositionEmbedding3D(nn.Module):
    """PETR 3-D position embedding plus the Focal-PETR camera "cone" used for spatial alignment.

    The cone of a token is [f_x / 1000, f_y / 1000, normalised xyz of the farthest bin, normalised xyz of bin 34 of 64]
    (the bin the official code picks), 8 values that tell the network where along its ray and through which lens a
    token looks.
    """

    def __init__(
        self,
        embed_dims: int,
        depth_bins: int,
        depth_range: tuple[float, float],
        position_range: tuple[float, float, float, float, float, float],
    ) -> None:
        super().__init__()
        self.depth_bins = depth_bins
        self.register_buffer("depths", linear_increasing_depths(depth_bins, *depth_range), persistent=False)
        self.register_buffer("position_range", torch.tensor(position_range, dtype=torch.float32), persistent=False)
        # The official cone bin: 30 entries before the end of the flattened [D * 3] vector when D = 64.
        self.cone_bin = depth_bins - 30 if depth_bins > 30 else depth_bins // 2
        self.encoder = nn.Sequential(
            nn.Linear(depth_bins * 3, embed_dims * 4),
            nn.ReLU(),
            nn.Linear(embed_dims * 4, embed_dims),
        )

    def normalized_points(self, lidar2img: Tensor, feature_size: tuple[int, int], image_size: tuple[int, int]) -> Tensor:
        """[B, N, h, w, D, 3] frustum points normalised by the position range (0..1 inside it, unclamped)."""
        h, w = feature_size
        stride = image_size[1] / w
        if abs(image_size[0] / h - stride) > 1e-6:
            raise ValueError(f"image {image_size} and feature map {feature_size} have different strides along H and W")
        centres = token_centres(h, w, stride, lidar2img.device)
        with torch.autocast(lidar2img.device.type, enabled=False):  # geometry stays fp32 under mixed precision
            points = frustum_points(lidar2img.float(), centres, self.depths)
        low, high = self.position_range[:3], self.position_range[3:]
        return (points - low) / (high - low)

    def forward(
        self, lidar2img: Tensor, intrinsics: Tensor, feature_size: tuple[int, int], image_size: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        """Position embedding and cone of every token.

        Args:
            lidar2img: [B, N, 4, 4] current frame, reference frame -> pixel.
            intrinsics: [B, N, 3, 3] camera matrices after image augmentation.
            feature_size: (h, w) of the decoded feature map; image_size: (H, W) of the network input.
        Returns:
            pos_embed [B, N*h*w, C] and cone [B, N*h*w, 8], tokens ordered camera-major then row-major.
        """
        B, N = lidar2img.shape[:2]
        h, w = feature_size
        coords = self.normalized_points(lidar2img, feature_size, image_size)  # [B, N, h, w, D, 3]
        coords = coords.reshape(B, N * h * w, self.depth_bins, 3)  # [B, N, h, w, D, 3] -> [B, N*h*w, D, 3]
        focal = torch.stack([intrinsics[..., 0, 0], intrinsics[..., 1, 1]], dim=-1).abs().float() / 1000.0  # [B, N, 2]
        focal = focal[:, :, None].expand(B, N, h * w, 2).reshape(B, N * h * w, 2)  # [B, N, h*w, 2] -> [B, N*h*w, 2]
        cone = torch.cat([focal, coords[:, :, -1], coords[:, :, self.cone_bin]], dim=-1)  # [B, N*h*w, 8]
        pos_embed = self.encoder(inverse_sigmoid(coords.flatten(2)))  # [B, N*h*w, D*3] -> [B, N*h*w, C]
        return pos_embed, cone


class FeatureGuidedGate(nn.Module):
    """Feature-guided position embedding: pos * sigmoid(Linear(ReLU(Linear(features)))) (a squeeze-excite gate)."""

    def __init__(self, embed_dims: int) -> None:
        super().__init__()
        self.reduce = nn.Linear(embed_dims, embed_dims)
        self.expand = nn.Linear(embed_dims, embed_dims)

    def forward(self, pos_embed: Tensor, features: Tensor) -> Tensor:
        """pos_embed, features [..., C] -> [..., C]."""
        return pos_embed * self.expand(self.reduce(features).relu()).sigmoid()


def sine_embedding(x: Tensor, num_feats: int, temperature: float = 10000.0) -> Tensor:
    """[..., num_feats] sinusoid of `x` [...] (scaled by 2 pi): interleaved sin/cos over geometric frequencies."""
    x = x.float() * (2 * math.pi)
    index = torch.arange(num_feats, dtype=torch.float32, device=x.device)
    dim_t = temperature ** (2 * torch.div(index, 2, rounding_mode="floor") / num_feats)
    angles = x[..., None] / dim_t  # [..., num_feats]
    return torch.stack([angles[..., 0::2].sin(), angles[..., 1::2].cos()], dim=-1).flatten(-2)


def sine_embedding_3d(points: Tensor, num_feats: int = 128) -> Tensor:
    """[..., 3 * num_feats] sinusoid of normalised points [..., 3], concatenated in (y, x, z) order as in PETR."""
    x, y, z = points.unbind(-1)
    return torch.cat([sine_embedding(y, num_feats), sine_embedding(x, num_feats), sine_embedding(z, num_feats)], dim=-1)


def nerf_encoding(x: Tensor, num_frequencies: int = 6) -> Tensor:
    """[..., 2 * F * c] NeRF encoding of x [..., c]: for each frequency 2^i, sin(2^i x) then cos(2^i x)."""
    encodings = []
    for i in range(num_frequencies):
        encodings += [torch.sin(x * 2.0**i), torch.cos(x * 2.0**i)]
    return torch.cat(encodings, dim=-1)
