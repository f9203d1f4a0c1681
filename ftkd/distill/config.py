"""Distillation configuration: FTKD components, weights, mask ratio and the KD baselines."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DistillConfig:
    teacher: str = ""  # teacher checkpoint (also --teacher on the command line)
    teacher_precision: str = "bf16"  # teacher forward precision on a GPU ("fp32" on a CPU)
    # FTKD components (paper defaults) and their weights: L = L_det + w_pv L_pv + w_query L_bev + w_logits L_logits
    pv_ffr: bool = True
    query_ffr: bool = True
    fld: bool = True
    weight_pv: float = 1e-3
    weight_query: float = 16.0
    weight_logits: float = 1.0
    mask_ratio: float = 0.5
    fld_queries: str = "both"  # "foreground", "background" or "both"
    fld_cls_weight: float = 2.0  # alpha
    fld_box_weight: float = 0.25  # beta
    fld_score_threshold: float = 0.3  # teacher score separating foreground from background queries
    tsa_mode: str = "learned"  # how the PV temporal self-attention is obtained: "learned" or "fixed"
    # KD baselines for the comparison table
    baseline: str = "none"  # "none", "fitnet", "mgd", "logit_kd"
    weight_baseline: float = 1.0
