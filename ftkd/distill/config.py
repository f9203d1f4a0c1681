"""Distillation configuration: FTKD components, weights, mask ratio and the KD baselines.

Defaults are the paper's (FTKD, arXiv 2512.08247); every choice the paper leaves open is an option here with the
default we consider paper-faithful (docs/method.md explains each one).
"""

from __future__ import annotations

from dataclasses import dataclass

_CHOICES = {
    "teacher_precision": ("bf16", "fp16", "fp32"),
    "pv_mask": ("pixel", "element"),
    "pv_normalizer": ("images", "batch", "elements"),
    "pv_frames": ("all", "current"),
    "pv_future_reduce": ("sum", "mean"),
    "tsa_mode": ("fixed", "learned"),
    "tsa_keys": ("same_camera", "all_cameras"),
    "query_mask": ("token", "element"),
    "query_normalizer": ("elements", "queries", "batch"),
    "matching": ("two_stage", "joint"),
    "fld_queries": ("foreground", "background", "both"),
    "fld_layers": ("last", "all"),
    "baseline": ("none", "fitnet", "mgd", "logit_kd"),
}


@dataclass(frozen=True)
class DistillConfig:
    teacher: str = ""  # teacher checkpoint (also --teacher on the command line)
    teacher_precision: str = "bf16"  # teacher forward precision on a GPU (a CPU always runs fp32)
    # The teacher's input size (H, W); the shared augmented images are resized for it (pixel geometry scaled
    # alike) when it differs from the student's. None: the size the teacher was trained at (its data.image_size).
    teacher_image_size: tuple[int, int] | None = None
    # True: an offline teacher whose batch carries future frames (FTKD). False: the "no future" baseline, a
    # teacher that sees past + current frames only; the PV-FFR keys are then its own past + current frames.
    teacher_future: bool = True
    # FTKD components (paper defaults) and their weights: L = L_det + w_pv L_pv + w_query L_bev + w_logits L_logits
    pv_ffr: bool = True
    query_ffr: bool = True
    fld: bool = True
    weight_pv: float = 1e-3
    weight_query: float = 16.0
    weight_logits: float = 1.0
    mask_ratio: float = 0.5  # fraction of student positions (PV) / query tokens masked before the generators
    # PV-FFR (perspective-view features of one FPN level; -1 = each model's last level)
    pv_level: int = -1
    pv_mask: str = "pixel"  # "pixel": one mask value per location shared by all channels (MGD); "element"
    pv_normalizer: str = "images"  # n in L_pv = sum / n: images (B x frames x cameras, as MGD), batch, elements
    pv_frames: str = "all"  # student frames distilled: all frames shared with the teacher, or the current only
    pv_future_reduce: str = "sum"  # sum (paper formula) or mean of the TSA outputs over future frames
    tsa_mode: str = "fixed"  # "fixed": parameter-free softmax(QK^T/sqrt(C))V; "learned": learned query/key maps
    tsa_keys: str = "same_camera"  # a location attends to the same camera's future map, or all cameras' maps
    # Query FFR ("BEV" in the paper): teacher decoder query features are the target
    query_mask: str = "token"  # "token": whole query vectors masked; "element": single channels
    query_generator_hidden: int = 1024  # hidden width of the FFN generator
    query_normalizer: str = "elements"  # n in L_bev = sum / n: elements (mean), queries (B x Q), batch
    # Teacher-student query alignment (shared by query FFR and FLD)
    matching: str = "two_stage"  # two_stage: foreground teacher queries matched first, then background; joint
    match_cls_weight: float = 2.0  # matching cost weights (those of the detectors' own matchers)
    match_box_weight: float = 0.25
    fg_score_threshold: float = 0.3  # a teacher query is foreground if its best class score >= this
    match_teacher_topk: int = 0  # > 0: match only the teacher's k best-scoring queries (faster Hungarian); 0: all
    # FLD (future-guided logit distillation)
    fld_queries: str = "both"  # "foreground", "background" or "both" (which matched teacher queries are distilled)
    fld_cls_weight: float = 2.0  # alpha
    fld_box_weight: float = 0.25  # beta
    fld_box_on_background: bool = True  # the paper's sum runs over fg and bg pairs for both terms
    fld_layers: str = "last"  # "last" decoder layer, or "all" (earlier layers reuse the last layer's matching)
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    # KD baselines for the comparison table (set pv_ffr/query_ffr/fld false to run a baseline alone)
    baseline: str = "none"  # "none", "fitnet", "mgd", "logit_kd"
    weight_baseline: float = 1.0
    logit_kd_temperature: float = 1.0

    def __post_init__(self) -> None:
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                raise ValueError(f"distill.{name}: expected one of {list(choices)}, got {value!r}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"distill.mask_ratio: expected a value in [0, 1), got {self.mask_ratio}")
        if self.logit_kd_temperature <= 0:
            raise ValueError(f"distill.logit_kd_temperature: expected > 0, got {self.logit_kd_temperature}")
