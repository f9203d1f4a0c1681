"""The accuracy benchmark's tables: its stages (`Stage`, `STAGES`: which model each row trains and how it differs
from the full FTKD run) and its profiles (`Profile`, `PROFILES`: dataset preset, configs, epochs, chunk heuristics),
with what they resolve to outside a run: a teacher stage's frame overrides and a profile's synthetic dataset.

`benchmarks/accuracy.py` runs the stages; `benchmarks/lanes.py` schedules them over GPUs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("ftkd.benchmarks.accuracy")  # the same logger as accuracy.py: same log lines


@dataclass(frozen=True)
class Stage:
    """One row of the protocol: which model it trains and how it differs from the full FTKD run."""

    name: str
    kind: str  # "data", "train" (plain detection training) or "distill"
    role: str = ""  # config role of the profile: teacher, sparsebev, streampetr, ftkd_sparsebev, ftkd_streampetr
    student: str = ""  # the baseline student ("sparsebev"/"streampetr"); "" for teachers
    teacher: str = ""  # stage whose final.pt is the teacher (distillation only)
    overrides: tuple[str, ...] = ()  # dotted overrides on top of the role's config
    description: str = ""
    future_frames: int | None = None  # teachers: future frames instead of the config's (model.num_frames follows)
    backbone_from: str = ""  # train stage (same seed) whose final.pt initialises the backbone ("" = random init)

    def __post_init__(self) -> None:
        if self.teacher and self.backbone_from:
            raise ValueError(f"stage {self.name}: a stage waits for one other stage, not both teacher "
                             f"{self.teacher!r} and backbone_from {self.backbone_from!r}")

    @property
    def needs(self) -> str:
        """The stage that must be finished first (same seed): the teacher, or the backbone's source; "" if none."""
        return self.teacher or self.backbone_from


_NO_FTKD = ("distill.pv_ffr=false", "distill.query_ffr=false", "distill.fld=false")


def _ftkd(name: str, overrides: tuple[str, ...], description: str, teacher: str = "teacher") -> Stage:
    return Stage(name, "distill", "ftkd_sparsebev", "sparsebev", teacher, overrides, description)


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("data", "data", description="generate (if missing) and check the synthetic benchmark set"),
        Stage("teacher", "train", "teacher", description="offline teacher: past + current + future frames"),
        Stage("teacher_nofuture", "train", "teacher_nofuture", description="the same teacher without future frames"),
        Stage("sparsebev", "train", "sparsebev", "sparsebev", description="SparseBEV student baseline"),
        Stage("ftkd_sparsebev", "distill", "ftkd_sparsebev", "sparsebev", "teacher", (), "SparseBEV + FTKD"),
        Stage("streampetr", "train", "streampetr", "streampetr", description="StreamPETR student baseline"),
        Stage("ftkd_streampetr", "distill", "ftkd_streampetr", "streampetr", "teacher", (), "StreamPETR + FTKD"),
        _ftkd("kd_fitnet", (*_NO_FTKD, "distill.baseline=fitnet"), "SparseBEV + FitNet feature imitation"),
        _ftkd("kd_mgd", (*_NO_FTKD, "distill.baseline=mgd"), "SparseBEV + MGD"),
        _ftkd("kd_logit", (*_NO_FTKD, "distill.baseline=logit_kd"), "SparseBEV + logit KD"),
        _ftkd("kd_nofuture", ("distill.teacher_future=false",), "SparseBEV + FTKD, past-only teacher",
              teacher="teacher_nofuture"),
        _ftkd("abl_query", ("distill.pv_ffr=false", "distill.fld=false"), "query-FFR only"),
        _ftkd("abl_query_fld", ("distill.pv_ffr=false",), "query-FFR + FLD"),
        # KD weights rescaled to the feature scale of from-scratch models: at the paper's weights the weighted PV-FFR
        # and MGD terms are ~20x and ~600x the detection loss here (docs/results/loss_balance.json), so their
        # gradient takes over and clipping shrinks the detection gradient. These rows bring them to ~0.2-0.6x.
        _ftkd("ftkd_pvw_1e-5", ("distill.weight_pv=1.0e-5",), "FTKD, PV-FFR weight 1e-5 (paper 1e-3)"),
        _ftkd("kd_mgd_w1e-3", (*_NO_FTKD, "distill.baseline=mgd", "distill.weight_baseline=1.0e-3"),
              "SparseBEV + MGD, weight 1e-3"),
        # The mask-ratio sweep and the FLD query variants, at PV-FFR weight 1e-5 (at the paper's 1e-3 the PV term
        # takes over training here, so a sweep around it would measure that collapse); compared with
        # `ftkd_pvw_1e-5` (mask ratio 0.5, FLD on foreground + background queries).
        _ftkd("mask_0.4_pvw_1e-5", ("distill.weight_pv=1.0e-5", "distill.mask_ratio=0.4"),
              "FTKD, PV-FFR weight 1e-5, mask ratio 0.4"),
        _ftkd("mask_0.75_pvw_1e-5", ("distill.weight_pv=1.0e-5", "distill.mask_ratio=0.75"),
              "FTKD, PV-FFR weight 1e-5, mask ratio 0.75"),
        _ftkd("mask_0.9_pvw_1e-5", ("distill.weight_pv=1.0e-5", "distill.mask_ratio=0.9"),
              "FTKD, PV-FFR weight 1e-5, mask ratio 0.9"),
        _ftkd("fld_fg_pvw_1e-5", ("distill.weight_pv=1.0e-5", "distill.fld_queries=foreground"),
              "FTKD, PV-FFR weight 1e-5, FLD on foreground teacher queries only"),
        _ftkd("fld_bg_pvw_1e-5", ("distill.weight_pv=1.0e-5", "distill.fld_queries=background"),
              "FTKD, PV-FFR weight 1e-5, FLD on background teacher queries only"),
        _ftkd("tsa_learned_pvw_1e-5", ("distill.weight_pv=1.0e-5", "distill.tsa_mode=learned"),
              "FTKD, PV-FFR weight 1e-5, learned TSA projections in the PV-FFR target"),
        Stage("ftkd_streampetr_pvw_1e-5", "distill", "ftkd_streampetr", "streampetr", "teacher",
              ("distill.weight_pv=1.0e-5",), "StreamPETR + FTKD, PV-FFR weight 1e-5"),
        # A stronger teacher: at 6 epochs from scratch the ResNet-34 teacher is barely better than the ResNet-18
        # student (a deeper random network learns more slowly); the same teacher trained twice as long.
        Stage("teacher_long", "train", "teacher", overrides=("train.epochs=12",),
              description="the offline teacher trained for twice the epochs"),
        _ftkd("ftkd_long_pvw_1e-5", ("distill.weight_pv=1.0e-5",), "FTKD from the 12-epoch teacher, PV-FFR weight 1e-5",
              teacher="teacher_long"),
        # Learning-rate rule in the global batch (issue 9): the baseline student at 4x its batch (4 accumulated
        # micro-batches of 8: the memory of one), same epochs, lr scaled from the recipe's batch-8 value linearly or
        # by the square root; compared with `sparsebev`.
        Stage("lr_bs32_linear", "train", "sparsebev", "sparsebev",
              overrides=("train.global_batch=32", "train.grad_accum=4", "train.lr_scaling=linear"),
              description="SparseBEV student, global batch 32 (8 x 4 accumulated), lr scaled linearly (x4)"),
        Stage("lr_bs32_sqrt", "train", "sparsebev", "sparsebev",
              overrides=("train.global_batch=32", "train.grad_accum=4", "train.lr_scaling=sqrt"),
              description="SparseBEV student, global batch 32 (8 x 4 accumulated), lr scaled by the square root (x2)"),
        # Diagnostic: StreamPETR without query denoising (from-scratch training is sensitive to it on the CPU).
        Stage("streampetr_nodn", "train", "streampetr", "streampetr", overrides=("model.dn_groups=0",),
              description="StreamPETR student baseline without query denoising"),
        # Diagnostic: StreamPETR at the recipe's lr (4e-4) without the linear scaling down to batch 4 (1e-4), which
        # is 20x lower per sample than the tiny config that does learn on the CPU.
        Stage("streampetr_lr4e-4", "train", "streampetr", "streampetr", overrides=("train.lr_scaling=none",),
              description="StreamPETR student baseline, lr 4e-4 at batch 4 (no scaling)"),
        # Diagnostic: StreamPETR with the non-official ray-distance bias in its cross-attention (`ray_bias_sigma`,
        # docs/method.md): on the CPU it makes the from-scratch model use its images, which the official one does not.
        Stage("streampetr_raybias", "train", "streampetr", "streampetr", overrides=("model.ray_bias_sigma=2.0",),
              description="StreamPETR student baseline with the ray-distance cross-attention bias (sigma 2 m)"),
        # Diagnostic: StreamPETR with the dense centre-heatmap loss on its image tokens (`heatmap_weight`, the
        # label-free stand-in for the official 2-D focal head), alone and with the ray bias.
        Stage("streampetr_heatmap", "train", "streampetr", "streampetr", overrides=("model.heatmap_weight=1.0",),
              description="StreamPETR student baseline with the auxiliary centre-heatmap loss (weight 1)"),
        Stage("streampetr_raybias_heatmap", "train", "streampetr", "streampetr",
              overrides=("model.ray_bias_sigma=2.0", "model.heatmap_weight=1.0"),
              description="StreamPETR student baseline with the ray-distance bias and the centre-heatmap loss"),
        # StreamPETR with its ResNet-18 initialised from the SparseBEV student of the same seed (trained 6 epochs on
        # the same training split): the in-domain stand-in for the pretrained backbone of the official recipe, which
        # then keeps BatchNorm frozen and trains the backbone at 0.25x the lr (as streampetr_small.yaml states).
        Stage("streampetr_sparsebev_init", "train", "streampetr", "streampetr", backbone_from="sparsebev",
              overrides=("model.backbone.norm_eval=true", "model.freeze_norm_affine=true",
                         'train.lr_multipliers={"backbone.conv1": 0.25, "backbone.bn1": 0.25, "backbone.layer": 0.25}'),
              description="StreamPETR student, backbone initialised from the SparseBEV student (same seed)"),
        # StreamPETR at the recipe's global batch (16, lr 4e-4) for 48 epochs: the baseline's 3,840 steps with 4x its
        # samples. On the CPU the from-scratch model's cross-attention had not found the objects' rays after 1,200
        # tiny steps (benchmarks/streampetr_attention.py); this asks whether more data per step gets it there.
        Stage("streampetr_bs16_e48", "train", "streampetr", "streampetr",
              overrides=("data.batch_size=16", "train.epochs=48"),
              description="StreamPETR student, global batch 16 (lr 4e-4), 48 epochs"),
        # Twice that (8x the baseline's samples): 48 epochs lifted its attention from 1.12 to 2.58 and its mAP from
        # 0.08 % to 0.27 % (seventh session); a second point says whether more training signal keeps paying.
        Stage("streampetr_bs16_e96", "train", "streampetr", "streampetr",
              overrides=("data.batch_size=16", "train.epochs=96"),
              description="StreamPETR student, global batch 16 (lr 4e-4), 96 epochs"),
        # Beyond the paper (issue 10), every FTKD row at PV-FFR weight 1e-5 and compared with `ftkd_pvw_1e-5`.
        # Future horizon: the same teacher with 0 (`teacher_nofuture`), 1, 3 (`teacher`) or 7 future frames.
        Stage("teacher_future1", "train", "teacher", future_frames=1,
              description="the offline teacher with 1 future frame"),
        Stage("teacher_future7", "train", "teacher", future_frames=7,
              description="the offline teacher with 7 future frames (the paper's horizon)"),
        _ftkd("kd_nofuture_pvw_1e-5", ("distill.teacher_future=false", "distill.weight_pv=1.0e-5"),
              "FTKD from the past-only teacher, PV-FFR weight 1e-5", teacher="teacher_nofuture"),
        _ftkd("ftkd_future1_pvw_1e-5", ("distill.weight_pv=1.0e-5",), "FTKD from the 1-future-frame teacher, "
              "PV-FFR weight 1e-5", teacher="teacher_future1"),
        _ftkd("ftkd_future7_pvw_1e-5", ("distill.weight_pv=1.0e-5",), "FTKD from the 7-future-frame teacher, "
              "PV-FFR weight 1e-5", teacher="teacher_future7"),
        # Capacity vs future: the large teacher without future (`teacher_nofuture`), a student-size (ResNet-18)
        # teacher with future, the large teacher with future (`teacher`).
        Stage("teacher_r18", "train", "teacher", overrides=("model.backbone.depth=18",),
              description="the offline teacher with the student's ResNet-18 backbone"),
        _ftkd("ftkd_teacher_r18_pvw_1e-5", ("distill.weight_pv=1.0e-5",), "FTKD from the ResNet-18 teacher with "
              "future, PV-FFR weight 1e-5", teacher="teacher_r18"),
        # At PV-FFR weight 1e-5 the PV term of the 7-future-frame teacher's students ends ~5x that of the 3-frame
        # teacher's (21.9 against 4.6, KD 1.3x the detection loss): the same student at a fifth of the weight puts
        # its PV term where `ftkd_pvw_1e-5` has it, to tell the horizon from the loss balance.
        _ftkd("ftkd_future7_pvw_2e-6", ("distill.weight_pv=2.0e-6",), "FTKD from the 7-future-frame teacher, "
              "PV-FFR weight 2e-6 (its PV term at the size of the 3-frame teacher's at 1e-5)",
              teacher="teacher_future7"),
    )
}


@dataclass(frozen=True)
class Profile:
    """Scale of a benchmark run: dataset preset, config per role, epochs per model family, budget heuristics."""

    name: str
    synth_preset: str
    dataroot: str
    configs: dict[str, str]  # role -> YAML (teacher_nofuture uses the teacher's)
    epochs: dict[str, float]  # "teacher" / "sparsebev" / "streampetr" -> train.epochs
    probe_steps: int  # optimiser steps of a stage's first chunk (measures the step time)
    eval_reserve_s: float  # kept free for the final evaluation until one has been timed
    min_chunk_steps: int  # a chunk shorter than this is not started


PROFILES: dict[str, Profile] = {
    # One seed of the main rows (data, teacher, 2 baselines, 2 FTKD students) in one ~30-minute GPU session: see
    # docs/benchmark.md for the arithmetic. 6 epochs of the 1,280 training samples for SparseBEV and the teacher,
    # 12 for StreamPETR (the official recipes train StreamPETR 2.5x longer: 60 vs 24 epochs).
    "bench": Profile(
        "bench", "bench", "data/synth_bench",
        {
            "teacher": "configs/teacher_sparsebev_small_future.yaml",
            "sparsebev": "configs/sparsebev_small.yaml",
            "ftkd_sparsebev": "configs/ftkd_sparsebev_small.yaml",
            "streampetr": "configs/streampetr_small.yaml",
            "ftkd_streampetr": "configs/ftkd_streampetr_small.yaml",
        },
        {"teacher": 6.0, "sparsebev": 6.0, "streampetr": 12.0},
        probe_steps=30, eval_reserve_s=90.0, min_chunk_steps=20,
    ),
    # The whole pipeline in minutes on a CPU; the numbers mean nothing. StreamPETR has no tiny FTKD file: its tiny
    # config with the paper-default distill section is the same thing.
    "tiny": Profile(
        "tiny", "tiny", "data/synth_tiny",
        {
            "teacher": "configs/teacher_sparsebev_tiny_future.yaml",
            "sparsebev": "configs/sparsebev_tiny.yaml",
            "ftkd_sparsebev": "configs/ftkd_sparsebev_tiny.yaml",
            "streampetr": "configs/streampetr_tiny.yaml",
            "ftkd_streampetr": "configs/streampetr_tiny.yaml",
        },
        {"teacher": 1.0, "sparsebev": 1.0, "streampetr": 1.0},
        probe_steps=4, eval_reserve_s=60.0, min_chunk_steps=2,
    ),
}



def teacher_frame_overrides(num_past_frames: int, num_future_frames: int) -> list[str]:
    """Overrides that give a SparseBEV teacher `num_future_frames` future frames: offline only with future frames,
    and the decoder samples past + current + future frames."""
    return [
        f"data.num_future_frames={num_future_frames}",
        f"model.offline={'true' if num_future_frames > 0 else 'false'}",
        f"model.num_frames={num_past_frames + 1 + num_future_frames}",
    ]



# -------------------------------------------------------------------------------------------------------- data
def ensure_data(profile: Profile, dataroot: Path, workers: int, check: bool) -> dict[str, Any]:
    """Generate the profile's synthetic set at `dataroot` if it is missing (refuse a different one there) and run
    the quick data check on the training split; returns the facts for the `data` stage's JSON."""
    from ftkd.data.synth import TRAIN_SPLIT, VERSION, SynthConfig, generate
    from ftkd.utils.configuration import to_dict

    expected = SynthConfig.preset(profile.synth_preset, workers=workers)
    generated_now = False
    if not (dataroot / VERSION).is_dir():
        logger.info(f"generating the '{profile.synth_preset}' synthetic set into {dataroot} ({workers} workers)")
        generate(expected, dataroot)
        generated_now = True
    config_file = dataroot / "synth_config.json"
    found = json.loads(config_file.read_text()) if config_file.is_file() else {}
    want = to_dict(expected)
    differ = sorted(k for k in want if k != "workers" and found.get(k) != want[k])
    if differ:
        raise SystemExit(
            f"{config_file}: the dataset at {dataroot} is not the '{profile.synth_preset}' preset (differs in "
            f"{differ}); pass another --dataroot or remove it"
        )
    stats_file = dataroot / "synth_stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
    problems: list[str] = []
    if check:
        from ftkd.data.check import quick_check

        problems = list(quick_check(dataroot, VERSION, TRAIN_SPLIT))
        if problems:
            raise SystemExit(f"data check of {dataroot} ({TRAIN_SPLIT}) failed: " + "; ".join(problems))
    return {
        "dataroot": str(dataroot),
        "synth_config": want,
        "generated_now": generated_now,
        "generation": stats.get("generation", {}),
        "keyframes": stats.get("keyframes"),
        "data_check": "passed" if check else "skipped",
    }

