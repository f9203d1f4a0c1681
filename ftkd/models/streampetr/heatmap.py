"""Dense auxiliary supervision of the image tokens: a per-class heatmap of projected 3-D box centres.

The official recipe trains a 2-D detection head on every stride-16 token (Focal-PETR's FocalHead, training only);
it needs per-camera 2-D labels. This is its label-free stand-in: the ground-truth centres are projected with the
current frame's `lidar2img`, each object paints a Gaussian peak (CenterNet-style, sigma from its projected size) on
the token grid of every camera that sees it, and a small head on the decoder's image tokens is trained with the
penalty-reduced focal loss of CornerNet. It gives the image features a direct, local training signal, which a
randomly initialised backbone otherwise receives only through global cross-attention.
"""

from __future__ import annotations

import torch
from torch import Tensor


def centre_heatmap(
    gt_boxes: list[Tensor],
    gt_labels: list[Tensor],
    lidar2img: Tensor,
    intrinsics: Tensor,
    image_size: tuple[int, int],
    feature_size: tuple[int, int],
    num_classes: int,
    min_depth: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """Target heatmaps of projected box centres on the token grid.

    Args:
        gt_boxes: B x [M_b, 9] reference-frame boxes (gravity-centre z, metres); gt_labels: B x [M_b] classes.
        lidar2img: [B, N, 4, 4] current frame, reference frame -> pixel of the network input.
        intrinsics: [B, N, 3, 3] camera matrices of the network input (f_x sets the projected object size).
        image_size: (H, W) of the network input; feature_size: (h, w) of the token grid.
    Returns:
        heatmap [B, N, h, w, K] in [0, 1] (exactly 1 at the token holding a visible centre) and the number of
        (object, camera) centres painted (a scalar tensor, the loss normaliser).
    """
    B, N = lidar2img.shape[:2]
    H, W = image_size
    h, w = feature_size
    stride_v, stride_u = H / h, W / w
    device = lidar2img.device
    heatmap = torch.zeros(B, N, h, w, num_classes, device=device)
    count = torch.zeros((), device=device)
    rows = torch.arange(h, device=device, dtype=torch.float32)
    cols = torch.arange(w, device=device, dtype=torch.float32)
    for b, (boxes, labels) in enumerate(zip(gt_boxes, gt_labels)):
        if len(boxes) == 0:
            continue
        centres = torch.cat([boxes[:, :3].float(), torch.ones_like(boxes[:, :1]).float()], dim=-1)  # [M, 4]
        pixels = torch.einsum("nij,mj->nmi", lidar2img[b].float(), centres)  # [N, M, 4]
        depth = pixels[..., 2]
        u = pixels[..., 0] / depth.clamp(min=1e-5)
        v = pixels[..., 1] / depth.clamp(min=1e-5)
        visible = (depth > min_depth) & (u >= 0) & (u < W) & (v >= 0) & (v < H)  # [N, M]
        # Projected size: the box diagonal seen at the centre's depth, through the camera's horizontal focal length.
        focal = intrinsics[b, :, 0, 0].float().abs()  # [N] f_x in pixels
        diagonal = boxes[:, 3:6].float().norm(dim=-1)  # [M] metres
        size_px = focal[:, None] * diagonal[None] / depth.clamp(min=min_depth)  # [N, M]
        sigma = (size_px / stride_u / 6).clamp(min=0.5)  # tokens
        for n, m in visible.nonzero().tolist():
            cu, cv = int(u[n, m] // stride_u), int(v[n, m] // stride_v)
            gauss = torch.exp(-((rows[:, None] - cv) ** 2 + (cols[None, :] - cu) ** 2) / (2 * sigma[n, m] ** 2))
            k = int(labels[m])
            heatmap[b, n, :, :, k] = torch.maximum(heatmap[b, n, :, :, k], gauss)
            count = count + 1
    return heatmap, count


def gaussian_focal_loss(logits: Tensor, target: Tensor, alpha: float = 2.0, beta: float = 4.0) -> Tensor:
    """Summed penalty-reduced focal loss (CornerNet): peaks (target == 1) are positives, the rest negatives whose
    weight (1 - target)^beta shrinks near a peak. logits and target share a shape; returns a scalar (fp32)."""
    logits, target = logits.float(), target.float()
    log_p = torch.nn.functional.logsigmoid(logits)
    log_not_p = torch.nn.functional.logsigmoid(-logits)
    prob = logits.sigmoid()
    positive = target.eq(1).float()
    pos_loss = -log_p * (1 - prob).pow(alpha) * positive
    neg_loss = -log_not_p * prob.pow(alpha) * (1 - target).pow(beta) * (1 - positive)
    return pos_loss.sum() + neg_loss.sum()
