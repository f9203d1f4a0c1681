"""The FTKD configs are their baseline student configs plus a distill section, with a compatible teacher."""

import dataclasses
from pathlib import Path

import pytest

from ftkd.config import load_config
from ftkd.distill.objective import student_num_frames
from ftkd.distill.teacher import distillation_data_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PAIRS = {
    "sparsebev_r50": "teacher_sparsebev_r101_future",
    "sparsebev_small": "teacher_sparsebev_small_future",
    "sparsebev_tiny": "teacher_sparsebev_tiny_future",
    "streampetr_r50": "teacher_sparsebev_r101_future",
    "streampetr_small": "teacher_sparsebev_small_future",
}


@pytest.mark.parametrize("student, teacher", sorted(PAIRS.items()))
def test_ftkd_config_is_the_baseline_plus_distillation(student, teacher):
    ftkd = load_config(CONFIGS / f"ftkd_{student}.yaml")
    baseline = load_config(CONFIGS / f"{student}.yaml")
    assert ftkd.model == baseline.model and ftkd.data == baseline.data
    assert dataclasses.replace(ftkd.train, out_dir=baseline.train.out_dir) == baseline.train
    assert ftkd.train.out_dir != baseline.train.out_dir
    assert ftkd.distill.teacher == f"runs/{teacher}/checkpoints/final.pt"
    assert (ftkd.distill.weight_pv, ftkd.distill.weight_query, ftkd.distill.weight_logits) == (1e-3, 16.0, 1.0)
    teacher_config = load_config(CONFIGS / f"{teacher}.yaml")
    assert teacher_config.model.offline and teacher_config.data.num_future_frames > 0
    data = distillation_data_config(ftkd.data, teacher_config.data, student_num_frames(ftkd.model))
    assert data.num_future_frames == teacher_config.data.num_future_frames
    assert tuple(teacher_config.data.image_size) == tuple(ftkd.data.image_size)
    assert teacher_config.model.num_frames == teacher_config.data.num_past_frames + 1 + data.num_future_frames
