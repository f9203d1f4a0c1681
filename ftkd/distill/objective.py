"""DistillationObjective: the student's detection losses plus FTKD (or KD-baseline) losses from a frozen teacher.

`objective.model` is the student alone (what is checkpointed, evaluated and exported); the generators, TSA and
adapters live in `objective.heads` (checkpointed through `extra_state_dict`), the teacher in `objective.teacher`
(never trained, never checkpointed). The student only ever receives `batch.student_view(...)`: no future data.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ftkd.distill.baselines import FeatureImitation, MaskedGenerativeDistillation, logit_kd_loss
from ftkd.distill.config import DistillConfig
from ftkd.distill.fld import fld_losses, match_queries
from ftkd.distill.pv_ffr import PVFeatureReconstruction
from ftkd.distill.query_ffr import QueryFeatureReconstruction
from ftkd.distill.teacher import Teacher
from ftkd.engine.objective import Objective
from ftkd.models.sparsebev.config import SparseBEVConfig
from ftkd.models.streampetr.config import StreamPETRConfig
from ftkd.structures import Batch, DetectorOutput


class _Background:
    """Runs `fn(*args)` in a thread; `result()` waits for it and returns its value (or raises its error)."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self._value: Any = None
        self._error: BaseException | None = None

        def target() -> None:
            try:
                self._value = fn(*args)
            except BaseException as err:  # handed to the caller in result()
                self._error = err

        self._thread = threading.Thread(target=target, name="ftkd-matching", daemon=True)
        self._thread.start()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def kd_loss_weights(config: DistillConfig, num_decoder_layers: int) -> dict[str, float]:
    """Weight of each named KD loss in the total: L = L_det + sum_k w_k L_k (the detection weights are the model's)."""
    weights = {}
    if config.pv_ffr:
        weights["loss_pv"] = config.weight_pv
    if config.query_ffr:
        weights["loss_query"] = config.weight_query
    if config.fld:
        weights["loss_fld_cls"] = config.weight_logits * config.fld_cls_weight
        weights["loss_fld_box"] = config.weight_logits * config.fld_box_weight
        if config.fld_layers == "all":
            for i in range(num_decoder_layers - 1):  # aux_logits[i] of the student
                weights[f"loss_fld_cls_{i}"] = weights["loss_fld_cls"]
                weights[f"loss_fld_box_{i}"] = weights["loss_fld_box"]
    if config.baseline != "none":
        weights[f"loss_{config.baseline}"] = config.weight_baseline
    return weights


class DistillationObjective(Objective):
    """L = L_det + w_pv L_pv + w_query L_bev + w_logits (alpha L_cls + beta L_box) (+ w_baseline L_baseline).

    Args:
        student: the student detector (its `criterion` gives L_det and its weights).
        teacher: the frozen teacher.
        config: distillation options.
        student_frames: past + current frames the student sees (1 for a streaming StreamPETR student).
        student_channels, teacher_channels: PV feature widths (FPN channels).
        student_dims, teacher_dims: query feature widths.
        code_weights: [10] box-code weights of the matching cost and the box losses (the student's).
        num_decoder_layers: the student's decoder layers (FLD on "all" layers adds L-1 suffixed loss pairs).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: Teacher,
        config: DistillConfig,
        student_frames: int,
        student_channels: int,
        teacher_channels: int,
        student_dims: int,
        teacher_dims: int,
        code_weights: tuple[float, ...],
        num_decoder_layers: int = 6,
    ) -> None:
        super().__init__()
        self.model = student
        self.teacher = teacher
        self.config = config
        self.student_frames = student_frames
        self.num_decoder_layers = num_decoder_layers
        self.register_buffer("code_weights", torch.tensor(code_weights, dtype=torch.float32), persistent=False)
        self.heads = nn.ModuleDict()
        if config.pv_ffr:
            self.heads["pv_ffr"] = PVFeatureReconstruction(
                student_channels,
                teacher_channels,
                config.mask_ratio,
                config.pv_mask,
                config.pv_normalizer,
                config.pv_frames,
                config.pv_future_reduce,
                config.tsa_mode,
                config.tsa_keys,
            )
        if config.query_ffr:
            self.heads["query_ffr"] = QueryFeatureReconstruction(
                student_dims,
                teacher_dims,
                config.query_generator_hidden,
                config.mask_ratio,
                config.query_mask,
                config.query_normalizer,
            )
        if config.baseline == "fitnet":
            self.heads["fitnet"] = FeatureImitation(student_channels, teacher_channels)
        elif config.baseline == "mgd":
            self.heads["mgd"] = MaskedGenerativeDistillation(
                student_channels, teacher_channels, config.mask_ratio, config.pv_mask, config.pv_normalizer
            )
        self.weight_dict = dict(student.criterion.weight_dict)
        self.weight_dict.update(kd_loss_weights(config, self.num_decoder_layers))

    def train(self, mode: bool = True) -> "DistillationObjective":
        super().train(mode)
        self.teacher.train(False)
        return self

    def extra_state_dict(self) -> dict:
        """Generators, TSA and adapters (not the teacher, not the student)."""
        return self.heads.state_dict()

    def load_extra_state_dict(self, state: dict) -> None:
        self.heads.load_state_dict(state)

    def forward(self, batch: Batch) -> tuple[dict[str, Tensor], DetectorOutput]:
        """Args:
            batch: the teacher's batch (past frames for both models, plus the teacher's future frames).
        Returns:
            (named losses: the student's detection losses and the KD losses; the student's output).
        """
        config = self.config
        if config.teacher_future and batch.num_future_frames == 0:
            raise ValueError("FTKD needs the teacher's future frames: data.num_future_frames is 0 in this batch")
        student_batch = batch.student_view(self.student_frames)
        assert student_batch.future_images is None and student_batch.lidar2img.shape[1] == student_batch.num_frames, (
            "the student must never receive future frames"
        )
        student_out = self.model(student_batch)
        teacher_out = self.teacher(batch)
        # The Hungarian alignments run on the CPU (scipy releases the GIL) while the detection and PV losses are
        # computed here.
        matchings = self.start_matchings(student_out, teacher_out)
        losses = dict(self.model.criterion(student_out, student_batch))
        losses.update(self.kd_losses(student_out, teacher_out, matchings))
        return losses, student_out

    def start_matchings(self, student: DetectorOutput, teacher: DetectorOutput) -> dict[str, "_Background"]:
        """Start the teacher-student alignments this config needs ("fg_bg" for FFR/FLD, "joint" for logit KD)."""
        config = self.config
        modes = {}
        if config.query_ffr or config.fld:
            modes["fg_bg"] = config.matching
        if config.baseline == "logit_kd":
            modes["joint"] = "joint"
        logits, boxes = student.pred_logits.detach(), student.pred_boxes.detach()
        return {
            name: _Background(
                match_queries,
                teacher.pred_logits,
                teacher.pred_boxes,
                logits,
                boxes,
                self.code_weights,
                config.match_cls_weight,
                config.match_box_weight,
                config.fg_score_threshold,
                mode,
                config.match_teacher_topk,
            )
            for name, mode in modes.items()
        }

    def kd_losses(
        self, student: DetectorOutput, teacher: DetectorOutput, matchings: dict[str, "_Background"] | None = None
    ) -> dict[str, Tensor]:
        """Named, unweighted KD losses from the two outputs (weights are in `weight_dict`)."""
        config = self.config
        if matchings is None:
            matchings = self.start_matchings(student, teacher)
        losses = {}
        level = config.pv_level
        teacher_frames = self.teacher.num_frames
        if config.pv_ffr:
            losses["loss_pv"] = self.heads["pv_ffr"](
                student.pv_features[level], teacher.pv_features[level], teacher_frames
            )
        if config.baseline in ("fitnet", "mgd"):
            losses[f"loss_{config.baseline}"] = self.heads[config.baseline](
                student.pv_features[level], teacher.pv_features[level], teacher_frames
            )
        if config.query_ffr or config.fld:
            matches = matchings["fg_bg"].result()
            if config.query_ffr:
                losses["loss_query"] = self.heads["query_ffr"](student.query_features, teacher.query_features, matches)
            if config.fld:
                layers = [(student.pred_logits, student.pred_boxes, "")]
                if config.fld_layers == "all":
                    aux = zip(student.aux_logits, student.aux_boxes)
                    layers += [(logits, boxes, f"_{i}") for i, (logits, boxes) in enumerate(aux)]
                for logits, boxes, suffix in layers:
                    loss_cls, loss_box = fld_losses(
                        logits,
                        boxes,
                        teacher.pred_logits,
                        teacher.pred_boxes,
                        matches,
                        self.code_weights,
                        config.fld_queries,
                        config.fld_box_on_background,
                        config.focal_alpha,
                        config.focal_gamma,
                    )
                    losses[f"loss_fld_cls{suffix}"] = loss_cls
                    losses[f"loss_fld_box{suffix}"] = loss_box
        if config.baseline == "logit_kd":
            losses["loss_logit_kd"] = logit_kd_loss(
                student.pred_logits, teacher.pred_logits, matchings["joint"].result(), config.logit_kd_temperature
            )
        return losses


def student_num_frames(config: SparseBEVConfig | StreamPETRConfig) -> int:
    """Past + current frames a student reads from a batch (StreamPETR: the current one; its memory holds the past)."""
    return config.num_frames if isinstance(config, SparseBEVConfig) else 1


def build_distillation_objective(
    student: nn.Module,
    student_config: SparseBEVConfig | StreamPETRConfig,
    teacher: Teacher,
    teacher_config: SparseBEVConfig | StreamPETRConfig,
    config: DistillConfig,
) -> DistillationObjective:
    """The objective for a student built from `student_config` and a teacher built from `teacher_config`.

    A SparseBEV student sees its `num_frames` past/current frames, a StreamPETR student the current frame only
    (its memory carries the past).
    """
    if getattr(student_config, "offline", False):
        raise ValueError("the student config has model.offline=true: an online student must not see future frames")
    if config.teacher_future and teacher.num_future_frames == 0:
        raise ValueError(
            "distill.teacher_future=true but the teacher uses no future frames (its data.num_future_frames is 0); "
            "set distill.teacher_future=false for the 'no future' baseline"
        )
    if not config.teacher_future and teacher.num_future_frames > 0:
        raise ValueError(
            f"distill.teacher_future=false needs a teacher without future frames, this one uses "
            f"{teacher.num_future_frames}"
        )
    if config.teacher_image_size is not None:
        teacher.image_size = config.teacher_image_size
    return DistillationObjective(
        student,
        teacher,
        config,
        student_frames=student_num_frames(student_config),
        student_channels=student_config.backbone.fpn_channels,
        teacher_channels=teacher_config.backbone.fpn_channels,
        student_dims=student_config.embed_dims,
        teacher_dims=teacher_config.embed_dims,
        code_weights=student_config.code_weights,
        num_decoder_layers=student_config.num_layers,
    )
