"""What detectors return: one dataclass of named tensors that losses and distillation consume.

No distillation code reaches into a model's internals: everything a loss needs is here.
Boxes use the regression code layout of ftkd.constants (CODE_DIM = 10) in the reference frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class DenoisingOutput:
    """Predictions of the query-denoising groups (training only) and their targets.

    D = number of denoising queries (groups x padded GT count), L = decoder layers.
    """

    logits: Tensor  # [L, B, D, K]
    boxes: Tensor  # [L, B, D, 10]
    target_labels: Tensor  # [B, D] int64; K (= num classes) marks a negative (background) query
    target_boxes: Tensor  # [B, D, 10] code layout
    valid: Tensor  # [B, D] bool: False for padding
    num_groups: int = 1  # normaliser: losses average over the groups


@dataclass
class DetectorOutput:
    """Outputs of one forward pass of a detector (SparseBEV or StreamPETR).

    Q queries (StreamPETR: learned + propagated memory queries), K classes, C channels.
    """

    pred_logits: Tensor  # [B, Q, K] last decoder layer, before sigmoid
    pred_boxes: Tensor  # [B, Q, 10] last decoder layer, code layout, reference frame
    query_features: Tensor  # [B, Q, C] last decoder layer's query features
    pv_features: list[Tensor]  # per FPN level l: [B, T(+F), N, C, H_l, W_l] perspective-view features
    aux_logits: list[Tensor] = field(default_factory=list)  # earlier layers, each [B, Q, K]
    aux_boxes: list[Tensor] = field(default_factory=list)  # earlier layers, each [B, Q, 10]
    dn: DenoisingOutput | None = None  # query denoising (training only)
    extra: dict[str, Tensor] = field(default_factory=dict)  # model-specific named tensors (documented by the model)


@dataclass
class Detections:
    """Decoded detections of one sample, reference frame (box layout of ftkd.constants, 9 values)."""

    boxes: Tensor  # [M, 9]
    scores: Tensor  # [M]
    labels: Tensor  # [M] int64 class indices

    def cpu(self) -> "Detections":
        """A copy on the CPU, boxes and scores in fp32 (what the results writer reads)."""
        return Detections(boxes=self.boxes.float().cpu(), scores=self.scores.float().cpu(), labels=self.labels.cpu())
