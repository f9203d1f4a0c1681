"""NMS-free decoding of detector outputs: top-k over all (query, class) scores."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ftkd.structures.boxes import decode_boxes
from ftkd.structures.outputs import Detections


def decode_topk(
    logits: Tensor,
    codes: Tensor,
    max_detections: int = 300,
    score_threshold: float = 0.0,
    point_cloud_range: Sequence[float] | None = None,
) -> list[Detections]:
    """Keep the `max_detections` best (query, class) pairs of each sample, no NMS (as the official NMSFreeCoder).

    Args:
        logits: [B, Q, K] class logits.
        codes: [B, Q, 10] box codes (reference frame, metres).
        max_detections: top-k over the Q * K sigmoid scores; label = index % K, query = index // K.
        score_threshold: detections with a score <= this are dropped (after the top-k).
        point_cloud_range: (x_min, y_min, z_min, x_max, y_max, z_max) metres; detections whose centre lies
            outside are dropped (None keeps all). Callers pass the detection range enlarged by a margin, as the
            official post_center_range.
    Returns:
        B x Detections (boxes [M, 9] with gravity-centre z, scores [M] descending, labels [M]), fp32.
    """
    B, Q, K = logits.shape
    if codes.shape != (B, Q, 10):
        raise ValueError(f"decode_topk: expected codes of shape {[B, Q, 10]}, got {list(codes.shape)}")
    scores = logits.float().sigmoid().reshape(B, Q * K)  # [B, Q, K] -> [B, Q*K]
    top_scores, top_index = scores.topk(min(max_detections, Q * K), dim=1)  # [B, k]
    labels = top_index % K
    queries = top_index.div(K, rounding_mode="floor")
    boxes = decode_boxes(torch.gather(codes.float(), 1, queries[..., None].expand(-1, -1, 10)))  # [B, k, 9]
    keep = top_scores > score_threshold
    if point_cloud_range is not None:
        low = boxes.new_tensor(point_cloud_range[:3])
        high = boxes.new_tensor(point_cloud_range[3:])
        keep &= ((boxes[..., :3] >= low) & (boxes[..., :3] <= high)).all(dim=-1)
    return [
        Detections(boxes=boxes[b][keep[b]], scores=top_scores[b][keep[b]], labels=labels[b][keep[b]]) for b in range(B)
    ]
