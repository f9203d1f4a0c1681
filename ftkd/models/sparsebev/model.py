"""SparseBEV: sparse pillar queries that sample multi-frame multi-view image features (arXiv 2308.09244).

The same class serves as the online student (current + past frames) and the offline teacher (current + past +
future frames, `config.offline=True`): the frame set is data, the time offsets of future frames are negative and
the motion warp moves the sampling points forward along each query's velocity.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ftkd.models.common.backbone import ResNetFPN
from ftkd.models.common.criterion import SetCriterion
from ftkd.models.common.image_ops import GridMask, normalize_images
from ftkd.models.common.matcher import HungarianMatcher
from ftkd.models.common.postprocess import decode_topk
from ftkd.models.sparsebev.config import SparseBEVConfig
from ftkd.models.sparsebev.decoder import SparseBEVDecoder, SparseBEVDecoderLayer
from ftkd.models.sparsebev.query import PillarQueries, to_codes
from ftkd.models.sparsebev.sampling import arrange_features
from ftkd.structures.batch import Batch
from ftkd.structures.boxes import encode_boxes
from ftkd.structures.outputs import DenoisingOutput, DetectorOutput, Detections

# Detections whose centre lies farther than this outside the point cloud range are dropped (official
# post_center_range = the range enlarged by 10 m).
POST_CENTER_MARGIN = 10.0


class SparseBEV(nn.Module):
    """ResNet-FPN backbone + SparseBEV decoder + set criterion.

    `forward(batch)` returns a DetectorOutput whose pv_features are the FPN features of every frame
    ([B, T(+F), N, C, H_l, W_l] per level) and whose query_features are the last layer's query features.
    """

    def __init__(self, config: SparseBEVConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = ResNetFPN(config.backbone)
        if len(config.backbone.out_levels) != config.num_levels:
            raise ValueError(
                f"model.num_levels={config.num_levels} but backbone.out_levels={config.backbone.out_levels}"
            )
        if config.backbone.fpn_channels != config.embed_dims:
            raise ValueError(f"backbone.fpn_channels={config.backbone.fpn_channels} != embed_dims={config.embed_dims}")
        self.grid_mask = GridMask(ratio=0.5, prob=0.7)
        self.queries = PillarQueries(
            config.num_queries,
            config.embed_dims,
            config.num_classes,
            config.point_cloud_range,
            config.dn_groups,
            config.dn_box_noise,
            config.dn_label_noise,
        )
        layer = SparseBEVDecoderLayer(
            config.embed_dims,
            config.num_heads,
            config.ffn_dims,
            config.dropout,
            config.num_frames,
            config.num_groups,
            config.num_points,
            config.num_levels,
            config.out_points,
            config.num_classes,
            config.point_cloud_range,
            config.decoder_checkpoint,
        )
        self.decoder = SparseBEVDecoder(layer, config.num_layers)
        matcher = HungarianMatcher(
            config.loss_cls_weight, config.loss_bbox_weight, config.code_weights, config.focal_alpha,
            config.focal_gamma, match_velocity=True,
        )  # fmt: skip
        self.criterion = SetCriterion(
            config.num_classes, matcher, config.loss_cls_weight, config.loss_bbox_weight, config.code_weights,
            config.focal_alpha, config.focal_gamma, config.num_layers,
        )  # fmt: skip

    def _frames(self, batch: Batch) -> Tensor:
        """[B, T(+F), N, 3, H, W] images this model may see (raises if a student is handed future frames)."""
        if not self.config.offline and batch.future_images is not None:
            raise ValueError(
                "an online SparseBEV (config.offline=False) must never receive future frames, but the batch has "
                f"future_images {tuple(batch.future_images.shape)}; pass batch.student_view()"
            )
        images = batch.all_images()
        if images.shape[1] != self.config.num_frames or batch.lidar2img.shape[1] != self.config.num_frames:
            raise ValueError(
                f"model.num_frames={self.config.num_frames} (offline={self.config.offline})"
                f" but the batch has {images.shape[1]} image frames and {batch.lidar2img.shape[1]} lidar2img frames"
            )
        return images

    def extract_features(self, images: Tensor) -> list[Tensor]:
        """[B, T, N, 3, H, W] images (uint8 or float 0..255) -> per level [B, T, N, C, H_l, W_l] FPN features.

        Images are normalised on the device; in training GridMask draws one mask per sample (shared by its frames
        and cameras). With `stop_past_grad`, frames 1.. run without autograd (only the current frame is trained).
        """
        B, T, N, _, H, W = images.shape
        normalised = normalize_images(images)
        if self.config.grid_mask and self.training:
            normalised = self.grid_mask(normalised.view(B, T * N, 3, H, W)).view(B, T, N, 3, H, W)
        if self.config.stop_past_grad and self.training and T > 1:
            current = self._backbone_frames(normalised[:, :1])
            with torch.no_grad():
                past = self._backbone_frames(normalised[:, 1:])
            return [torch.cat([c, p], dim=1) for c, p in zip(current, past)]
        return self._backbone_frames(normalised)

    def _backbone_frames(self, images: Tensor) -> list[Tensor]:
        """[B, T, N, 3, H, W] normalised -> per level [B, T, N, C, H_l, W_l]."""
        B, T, N = images.shape[:3]
        levels = self.backbone(images.flatten(0, 2))  # [B, T, N, 3, H, W] -> [B*T*N, 3, H, W]
        return [level.view(B, T, N, *level.shape[1:]) for level in levels]  # [B*T*N, C, h, w] -> [B, T, N, C, h, w]

    def decode(
        self,
        features: list[Tensor],
        lidar2img: Tensor,
        time_offsets: Tensor,
        image_size: tuple[int, int],
        gt_boxes: list[Tensor] | None = None,
        gt_labels: list[Tensor] | None = None,
    ) -> DetectorOutput:
        """Run the decoder on per-level [B, T(+F), N, C, H_l, W_l] features.

        Args:
            lidar2img: [B, T(+F), N, 4, 4]; time_offsets: [B, T(+F)] seconds; image_size: (H, W) input pixels.
            gt_boxes, gt_labels: ground truth for query denoising (used in training only).
        """
        arranged = [arrange_features(f, self.config.num_groups) for f in features]
        return self.decode_arranged(arranged, lidar2img, time_offsets, image_size, gt_boxes, gt_labels, features)

    def decode_arranged(
        self,
        arranged: list[Tensor],
        lidar2img: Tensor,
        time_offsets: Tensor,
        image_size: tuple[int, int],
        gt_boxes: list[Tensor] | None = None,
        gt_labels: list[Tensor] | None = None,
        pv_features: list[Tensor] | None = None,
    ) -> DetectorOutput:
        """`decode` on features already in the sampling layout (per level [B*T*G, C/G, N*(H_l+1), W_l], see
        `arrange_features`); `pv_features` only passes through to the output (the online path caches arranged
        features and returns none)."""
        B = lidar2img.shape[0]
        use_dn = self.training and self.config.dn_groups > 0 and gt_boxes is not None
        query_boxes, query_feat, block_mask, dn_targets = self.queries(
            B, gt_boxes if use_dn else None, gt_labels if use_dn else None
        )
        logits, boxes, query_feat = self.decoder(
            query_boxes, query_feat, arranged, lidar2img, time_offsets, image_size, block_mask
        )
        logits = torch.nan_to_num(logits.float())  # [L, B, D+Q, K]
        codes = torch.nan_to_num(to_codes(boxes, self.config.point_cloud_range))  # [L, B, D+Q, 10]
        D = 0 if dn_targets is None else dn_targets.boxes.shape[1]
        dn = None
        if dn_targets is not None:
            dn = DenoisingOutput(
                logits=logits[:, :, :D],
                boxes=codes[:, :, :D],
                target_labels=dn_targets.labels,
                target_boxes=encode_boxes(dn_targets.boxes),
                valid=dn_targets.valid,
                num_groups=dn_targets.num_groups,
            )
        return DetectorOutput(
            pred_logits=logits[-1, :, D:],
            pred_boxes=codes[-1, :, D:],
            query_features=query_feat[:, D:],
            pv_features=pv_features or [],
            aux_logits=list(logits[:-1, :, D:].unbind(0)),
            aux_boxes=list(codes[:-1, :, D:].unbind(0)),
            dn=dn,
        )

    def forward(self, batch: Batch) -> DetectorOutput:
        """Detect objects in the current keyframe of each sample (see DetectorOutput for shapes)."""
        images = self._frames(batch)
        features = self.extract_features(images)
        image_size = (images.shape[-2], images.shape[-1])
        return self.decode(features, batch.lidar2img, batch.time_offsets, image_size, batch.gt_boxes, batch.gt_labels)

    @torch.no_grad()
    def postprocess(self, output: DetectorOutput) -> list[Detections]:
        """Top-k (max_detections) NMS-free decoding of the last layer, reference frame."""
        low = [v - POST_CENTER_MARGIN for v in self.config.point_cloud_range[:3]]
        high = [v + POST_CENTER_MARGIN for v in self.config.point_cloud_range[3:]]
        return decode_topk(
            output.pred_logits, output.pred_boxes, self.config.max_detections, self.config.score_threshold, low + high
        )
