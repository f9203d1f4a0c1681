"""StreamPETR: a streaming multi-view 3-D detector with an object-centric temporal memory.

Per frame (one new keyframe per step; all temporal context comes from the memory):
backbone + FPN on the 6 current images -> stride-16 tokens with PETR 3-D position embeddings -> learned queries
+ the previous frame's top-k queries (propagated) attend to each other and to older memory entries, then to the
image tokens -> focal-classification and box heads on every layer -> the top-k queries are pushed into memory.
The memory is aligned to the current ego frame before the forward (explicitly for centres, implicitly via
motion-aware layer norm for features) and erased for batch slots whose sequence starts at this frame.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ftkd.constants import IMAGE_MEAN, IMAGE_STD
from ftkd.models.common.backbone import ResNetFPN
from ftkd.models.common.criterion import SetCriterion
from ftkd.models.common.image_ops import GridMask
from ftkd.models.common.matcher import HungarianMatcher
from ftkd.models.common.postprocess import decode_topk
from ftkd.models.streampetr.config import StreamPETRConfig
from ftkd.models.streampetr.decoder import PredictionHeads, TemporalDecoder
from ftkd.models.streampetr.denoising import DenoisingQueries, make_denoising_queries, temporal_attention_mask
from ftkd.models.streampetr.heatmap import centre_heatmap, gaussian_focal_loss
from ftkd.models.streampetr.memory import MemoryState, align_memory, push_memory
from ftkd.models.streampetr.mln import MotionLayerNorm, motion_code, static_motion_code
from ftkd.models.streampetr.position_embedding import (
    FeatureGuidedGate,
    PositionEmbedding3D,
    ray_distance_bias,
    sine_embedding,
    sine_embedding_3d,
    token_centres,
    token_rays,
)
from ftkd.structures import Batch, DenoisingOutput, DetectorOutput, Detections


class StreamPETR(nn.Module):
    """The StreamPETR detector; stateful: it keeps one memory queue per batch slot between calls.

    Memory rules: a slot is reset where `batch.scene_start` is True; when the batch shrinks, the first slots keep
    their memory (the streaming sampler drops finished slots from the end); the whole memory is reset when the
    batch grows or the device changes, or when the module switches between training and evaluation mode (a
    training stream and an evaluation stream never share memory). Memory tensors are plain attributes, not
    buffers, so DDP never broadcasts one rank's memory to the others; checkpoint them with `memory_state_dict()`.
    """

    def __init__(self, config: StreamPETRConfig) -> None:
        super().__init__()
        if config.feature_level not in config.backbone.out_levels:
            raise ValueError(
                f"model.feature_level {config.feature_level} is not in model.backbone.out_levels "
                f"{config.backbone.out_levels}"
            )
        if not 1 <= config.num_propagated <= config.memory_len:
            raise ValueError(
                f"model.num_propagated must be in [1, memory_len={config.memory_len}], got {config.num_propagated}"
            )
        self.config = config
        C = config.embed_dims
        self.backbone = ResNetFPN(config.backbone)
        if config.freeze_norm_affine:
            for module in self.backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.requires_grad_(False)
        self.level_index = config.backbone.out_levels.index(config.feature_level)
        self.grid_mask = GridMask() if config.grid_mask else None
        self.position_embedding = PositionEmbedding3D(C, config.depth_bins, config.depth_range, config.position_range)
        self.token_embed = nn.Sequential(nn.Linear(config.backbone.fpn_channels, C), nn.ReLU(), nn.Linear(C, C))
        self.spatial_alignment = MotionLayerNorm(8, C)  # conditioned on the camera cone (Focal-PETR)
        self.feature_gate = FeatureGuidedGate(C)
        self.reference_points = nn.Embedding(config.num_queries, 3)
        nn.init.uniform_(self.reference_points.weight, 0, 1)
        # Fixed random centres of a fresh memory's propagated slots (normalised; not trained).
        self.register_buffer("pseudo_reference_points", torch.rand(config.num_propagated, 3))
        self.query_embedding = nn.Sequential(nn.Linear(3 * C // 2, C), nn.ReLU(), nn.Linear(C, C))
        self.time_embedding = nn.Sequential(nn.Linear(C, C), nn.LayerNorm(C))
        if config.with_ego_motion:
            self.ego_pose_pe = MotionLayerNorm(180, C)  # positions of queries and memory
            self.ego_pose_memory = MotionLayerNorm(180, C)  # contents of queries and memory
        self.decoder = TemporalDecoder(
            config.num_layers, C, config.num_heads, config.ffn_dims, config.dropout, config.with_checkpoint
        )
        self.heads = PredictionHeads(C, config.num_classes, config.point_cloud_range)
        self.heatmap_head = None
        if config.heatmap_weight > 0:
            self.heatmap_head = nn.Sequential(nn.Linear(C, C), nn.ReLU(), nn.Linear(C, config.num_classes))
            nn.init.constant_(self.heatmap_head[-1].bias, -math.log((1 - 0.01) / 0.01))
        self.register_buffer("pc_range", torch.tensor(config.point_cloud_range), persistent=False)
        self.register_buffer("image_mean", torch.tensor(IMAGE_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(IMAGE_STD).view(3, 1, 1), persistent=False)
        matcher = HungarianMatcher(
            config.loss_cls_weight,
            config.loss_bbox_weight,
            config.code_weights,
            config.focal_alpha,
            config.focal_gamma,
            match_velocity=False,
        )
        self.criterion = StreamPETRCriterion(
            config.heatmap_weight,
            config.num_classes,
            matcher,
            config.loss_cls_weight,
            config.loss_bbox_weight,
            config.code_weights,
            config.focal_alpha,
            config.focal_gamma,
            config.num_layers,
            dn_cls_normaliser_scale=math.pi / 6 * config.dn_split**3,  # expected fraction of positive DN queries
        )
        for key in self.criterion.weight_dict:
            if "_dn" in key:
                self.criterion.weight_dict[key] *= config.dn_weight
        self.memory: MemoryState | None = None
        self._memory_training: bool | None = None

    # ----------------------------------------------------------------------------------------------- memory
    def reset_memory(self) -> None:
        """Forget every slot's memory (the next frame starts a new sequence everywhere)."""
        self.memory = None
        self._memory_training = None

    def memory_state_dict(self) -> dict[str, Tensor]:
        """The memory tensors and the mode (training/eval) of the stream they belong to; empty if there is none."""
        if self.memory is None:
            return {}
        return {**self.memory.state_dict(), "training": torch.tensor(bool(self._memory_training))}

    def load_memory_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore `memory_state_dict()` (e.g. the training stream after an evaluation, or from a checkpoint)."""
        if not state:
            self.reset_memory()
            return
        state = dict(state)
        training = state.pop("training", torch.tensor(self.training))
        self.memory = MemoryState.from_state_dict(state).to(self.pc_range.device)
        self._memory_training = bool(training)

    def _memory_and_keep(self, batch: Batch) -> tuple[MemoryState, Tensor]:
        """The memory between frames and the [B] mask of slots whose memory is kept (not reset) at this frame."""
        B, device = batch.batch_size, batch.images.device
        keep = ~batch.scene_start.to(device=device, dtype=torch.bool)
        state = self.memory
        if state is not None and state.batch_size > B and self._memory_training == self.training:
            # The streaming sampler shrinks a batch from its end when slots run out of samples; slot b stays at
            # position b, so the remaining slots keep their memory.
            state = state.first(B)
        if (
            state is None
            or state.batch_size != B
            or state.embedding.device != device
            or self._memory_training != self.training
        ):
            state = MemoryState.empty(B, self.config.memory_len, self.config.embed_dims, device)
            keep = torch.zeros_like(keep)
        return state, keep

    # ---------------------------------------------------------------------------------------------- forward
    def forward(self, batch: Batch) -> DetectorOutput:
        """Detect objects in the current frame of every batch slot and update the memory.

        Uses `batch.images[:, 0]` [B, N, 3, H, W] and the current frame's `lidar2img`/`intrinsics`, plus
        `ego_pose`, `timestamp`, `scene_start` for the memory; ground truth only for query denoising in training.
        Returns a DetectorOutput with Q = num_queries + num_propagated queries; `pv_features` holds every FPN level
        as [B, 1, N, C, h, w]; `extra["reference_points"]` [B, Q, 3] the (normalised) query reference points.
        """
        if batch.future_images is not None:
            raise ValueError("StreamPETR is an online model: the batch must not carry future_images")
        config = self.config
        memory, keep = self._memory_and_keep(batch)
        dn = None
        if self.training and config.dn_groups > 0:
            dn = make_denoising_queries(
                batch.gt_boxes,
                batch.gt_labels,
                config.dn_groups,
                config.dn_box_noise,
                config.dn_split,
                config.num_classes,
                self.pc_range,
            )
        output, self.memory = self.forward_frame(
            batch.images[:, 0],
            batch.lidar2img[:, 0],
            batch.intrinsics[:, 0],
            batch.ego_pose,
            batch.timestamp,
            keep,
            memory,
            dn,
        )
        self._memory_training = self.training
        return output

    def forward_frame(
        self,
        images: Tensor,
        lidar2img: Tensor,
        intrinsics: Tensor,
        ego_pose: Tensor,
        timestamp: Tensor,
        keep: Tensor,
        memory: MemoryState,
        dn: DenoisingQueries | None = None,
    ) -> tuple[DetectorOutput, MemoryState]:
        """One streaming step on explicit tensors (no state read or written): the core of `forward`.

        Args:
            images: [B, N, 3, H, W] uint8 or 0..255 float RGB; lidar2img [B, N, 4, 4]; intrinsics [B, N, 3, 3].
            ego_pose: [B, 4, 4] float64 reference -> global; timestamp: [B] float64 seconds.
            keep: [B] bool, False where the slot's memory is reset before use (a sequence starts).
            memory: the memory between frames (global frame), as returned by the previous step.
            dn: denoising queries (training only).
        Returns:
            The detector output and the updated memory (detached, global frame). No host synchronisation, so the
            step can be captured in a CUDA graph or exported with its memory as explicit inputs/outputs.
        """
        config = self.config
        B, N, _, H, W = images.shape
        # The shared normalize_images builds its mean/std on the host every call (an H2D copy that a CUDA graph
        # cannot capture); the same ImageNet statistics are kept here as device buffers.
        if images.shape[-3] != 3:
            raise ValueError(f"expected images [B, N, 3, H, W] (RGB), got {tuple(images.shape)}")
        images = (images.float() - self.image_mean) / self.image_std
        if self.grid_mask is not None:
            images = self.grid_mask(images)  # one mask per sample, shared by its cameras
        levels = self.backbone(images.flatten(0, 1))  # [B*N, 3, H, W] -> L x [B*N, C, h_l, w_l]
        pv_features = [level.view(B, 1, N, *level.shape[1:]) for level in levels]  # [B, 1, N, C, h_l, w_l]
        features = levels[self.level_index]
        C_in, h, w = features.shape[1:]
        tokens = features.view(B, N, C_in, h, w).permute(0, 1, 3, 4, 2).reshape(B, N * h * w, C_in)  # [B, N*h*w, C]

        pos_embed, cone = self.position_embedding(lidar2img, intrinsics, (h, w), (H, W))
        tokens = self.spatial_alignment(self.token_embed(tokens), cone)
        pos_embed = self.feature_gate(pos_embed, tokens)

        low, high = self.pc_range[:3], self.pc_range[3:]
        pseudo_points = self.pseudo_reference_points * (high - low) + low
        memory = align_memory(memory, ego_pose, timestamp, keep, pseudo_points)
        query, query_pos, reference_points, temp_memory, temp_pos = self._queries(B, memory, dn)
        D = 0 if dn is None else dn.num_queries
        Q = reference_points.shape[1] - D
        attn_mask = None if dn is None else temporal_attention_mask(dn, Q, temp_memory.shape[1])
        cross_bias = None
        if config.ray_bias_sigma > 0:
            with torch.autocast(images.device.type, enabled=False):  # geometry stays fp32 under mixed precision
                origins, directions = token_rays(lidar2img.float(), token_centres(h, w, W / w, images.device))
                points = reference_points.float().clamp(0, 1) * (high - low) + low  # [B, D+Q, 3] metres, as the heads
                cross_bias = ray_distance_bias(points, origins, directions, config.ray_bias_sigma)  # [B, 1, D+Q, N*h*w]
        outputs = self.decoder(
            query, query_pos, tokens, pos_embed, temp_memory, temp_pos, attn_mask, cross_bias
        )  # [L, B, D+Q, C]
        outputs = torch.nan_to_num(outputs)
        logits, codes = self.heads(outputs, reference_points)  # [L, B, D+Q, K], [L, B, D+Q, 10]

        with torch.no_grad():
            scores = logits[-1, :, D:].sigmoid().amax(dim=-1)  # [B, Q]
            new_memory = push_memory(
                memory,
                outputs[-1, :, D:],
                codes[-1, :, D:, 0:3],
                codes[-1, :, D:, 8:10],
                scores,
                config.num_propagated,
                ego_pose,
                timestamp,
            )

        dn_output = None
        if dn is not None:
            dn_output = DenoisingOutput(
                logits=logits[:, :, :D],
                boxes=codes[:, :, :D],
                target_labels=dn.target_labels,
                target_boxes=dn.target_boxes,
                valid=dn.valid,
                num_groups=dn.num_groups,
            )
        extra = {"reference_points": reference_points[:, D:]}
        if self.heatmap_head is not None and self.training:
            extra["heatmap_logits"] = self.heatmap_head(tokens).view(B, N, h, w, -1)  # [B, N*h*w, K] -> [B, N, h, w, K]
        output = DetectorOutput(
            pred_logits=logits[-1, :, D:],
            pred_boxes=codes[-1, :, D:],
            query_features=outputs[-1, :, D:],
            pv_features=pv_features,
            aux_logits=list(logits[:-1, :, D:].unbind(0)),
            aux_boxes=list(codes[:-1, :, D:].unbind(0)),
            dn=dn_output,
            extra=extra,
        )
        return output, new_memory

    def _queries(
        self, batch_size: int, memory: MemoryState, dn: DenoisingQueries | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Decoder inputs: queries [DN; learned; propagated] and the memory entries that serve as keys only.

        Returns query/query_pos [B, D+Q, C], reference points [B, D+Q, 3] (normalised), temp_memory/temp_pos
        [B, S, C] with Q = num_queries + num_propagated and S = memory_len - num_propagated.
        """
        config = self.config
        B, P = batch_size, config.num_propagated
        reference_points = self.reference_points.weight[None].expand(B, -1, -1)  # [B, Q_learned, 3]
        if dn is not None:
            reference_points = torch.cat([dn.reference_points, reference_points], dim=1)
        query_pos = self.query_embedding(sine_embedding_3d(reference_points, config.embed_dims // 2))
        query = torch.zeros_like(query_pos)

        low, high = self.pc_range[:3], self.pc_range[3:]
        memory_points = (memory.reference_points.float() - low) / (high - low)  # [B, L, 3] normalised, unclamped
        temp_pos = self.query_embedding(sine_embedding_3d(memory_points, config.embed_dims // 2))
        temp_memory = memory.embedding
        if config.with_ego_motion:
            static = static_motion_code(query.shape[:2], query.device)
            query = self.ego_pose_memory(query, static)
            query_pos = self.ego_pose_pe(query_pos, static)
            moving = motion_code(memory.velocity, memory.timestamp, memory.ego_pose)
            temp_pos = self.ego_pose_pe(temp_pos, moving)
            temp_memory = self.ego_pose_memory(temp_memory, moving)
        query_pos = query_pos + self.time_embedding(sine_embedding(query.new_zeros(query.shape[:2]), config.embed_dims))
        temp_pos = temp_pos + self.time_embedding(sine_embedding(memory.timestamp[..., 0], config.embed_dims))

        query = torch.cat([query, temp_memory[:, :P]], dim=1)
        query_pos = torch.cat([query_pos, temp_pos[:, :P]], dim=1)
        reference_points = torch.cat([reference_points, memory_points[:, :P]], dim=1)
        return query, query_pos, reference_points, temp_memory[:, P:], temp_pos[:, P:]

    # ------------------------------------------------------------------------------------------ postprocess
    def postprocess(self, output: DetectorOutput) -> list[Detections]:
        """NMS-free top-k decoding of the last layer (reference frame boxes, gravity-centre z)."""
        config = self.config
        return decode_topk(
            output.pred_logits, output.pred_boxes, config.max_detections, config.score_threshold, config.post_center_range
        )


class StreamPETRCriterion(SetCriterion):
    """The shared set-prediction losses plus, when the output carries heatmap logits, `loss_heatmap`: the dense
    centre-heatmap loss of the image tokens (summed Gaussian focal loss / number of painted centres, >= 1)."""

    def __init__(self, heatmap_weight: float, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if heatmap_weight > 0:
            self.weight_dict["loss_heatmap"] = heatmap_weight

    def forward(self, output: DetectorOutput, batch: Batch) -> dict[str, Tensor]:
        losses = super().forward(output, batch)
        logits = output.extra.get("heatmap_logits")
        if logits is not None:
            B, N, h, w, K = logits.shape
            target, count = centre_heatmap(
                batch.gt_boxes,
                batch.gt_labels,
                batch.lidar2img[:, 0],
                batch.intrinsics[:, 0],
                tuple(batch.images.shape[-2:]),
                (h, w),
                K,
            )
            losses["loss_heatmap"] = gaussian_focal_loss(logits, target) / count.clamp(min=1.0)
        return losses
