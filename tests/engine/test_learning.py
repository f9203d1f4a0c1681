"""End to end on the CPU: a tiny SparseBEV trained on the tiny synthetic set learns, by the official metric.

Trained 200 steps on the train split and scored on that same split (a memorisation check of the whole path: data,
model, losses, trainer, decoding, results writer, official metric). The untrained model of the same seed detects
nothing (mAP 0); the trained one measured mAP 0.031 over the classes present (this machine type, seed 0), so the
threshold below (0.01) leaves a 3x margin and is far above the untrained score.
"""

import json
import math
from pathlib import Path

import pytest
import torch

from ftkd.config import load_config
from ftkd.demo import evaluate_model, train_model
from ftkd.engine.checkpoint import load_model
from ftkd.models.build import build_model
from ftkd.utils.seed import seed_everything

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "sparsebev_tiny.yaml"
STREAMPETR_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "streampetr_tiny.yaml"
STEPS = 200
TRAIN_SAMPLES = 24  # tiny preset: 3 train scenes x 8 keyframes


@pytest.fixture
def one_thread():
    """One torch thread: the measured threshold and the step time belong to single-threaded runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_tiny_sparsebev_learns_the_train_split(synth_root, tmp_path, one_thread):
    overrides = [
        f"data.dataroot={synth_root}",
        "data.frame_source=keyframes",
        "data.image_size=[32, 88]",
        "data.num_workers=0",
        "data.batch_size=2",
        "data.augment=false",
        "data.val_split=synth_train",
        f"train.epochs={STEPS / math.ceil(TRAIN_SAMPLES / 2)!r}",
        "train.global_batch=2",
        "train.lr=2e-3",
        "train.seed=0",
        f"train.out_dir={tmp_path / 'run'}",
        "train.device=cpu",
        "train.final_eval=false",
        "train.progress_bar=false",
        "train.log_every=50",
        "model.stop_past_grad=true",
        "model.grid_mask=false",
    ]
    config = load_config(CONFIG, overrides)
    seed_everything(0)
    untrained = build_model(config.model).eval()
    before, _ = evaluate_model(untrained, config.data, tmp_path / "untrained")

    checkpoint = train_model(CONFIG, overrides)
    trained, trained_config = load_model(checkpoint, "cpu")
    after, _ = evaluate_model(trained.eval(), trained_config.data, tmp_path / "trained")

    losses = [r["loss"] for r in map(json.loads, (tmp_path / "run" / "log.jsonl").read_text().splitlines())
              if r.get("kind") == "train"]
    assert len(losses) == STEPS // 50 and losses[-1] < 0.75 * losses[0], losses
    assert before["mean_ap_present"] < 0.002
    assert after["mean_ap_present"] > 0.01, after["mean_ap_present"]
    assert after["nd_score_present"] > before["nd_score_present"] + 0.05


@pytest.mark.slow
def test_tiny_streampetr_learns_the_train_split(synth_root, tmp_path, one_thread):
    steps = 400
    overrides = [
        f"data.dataroot={synth_root}",
        "data.frame_source=keyframes",
        "data.num_workers=0",
        "data.batch_size=2",
        "data.augment=false",
        "data.val_split=synth_train",
        f"train.epochs={steps / math.ceil(TRAIN_SAMPLES / 2)!r}",
        "train.global_batch=2",
        "train.lr=2e-3",
        "train.seed=0",
        f"train.out_dir={tmp_path / 'run'}",
        "train.device=cpu",
        "train.final_eval=false",
        "train.progress_bar=false",
        "train.log_every=50",
        "model.grid_mask=false",
    ]
    config = load_config(STREAMPETR_CONFIG, overrides)
    seed_everything(0)
    before, _ = evaluate_model(build_model(config.model).eval(), config.data, tmp_path / "untrained")
    checkpoint = train_model(STREAMPETR_CONFIG, overrides)
    trained, trained_config = load_model(checkpoint, "cpu")
    after, _ = evaluate_model(trained.eval(), trained_config.data, tmp_path / "trained")
    losses = [r["loss"] for r in map(json.loads, (tmp_path / "run" / "log.jsonl").read_text().splitlines())
              if r.get("kind") == "train"]
    assert len(losses) == steps // 50 and losses[-1] < 0.75 * losses[0], losses
    assert before["mean_ap_present"] < 0.0005
    assert after["mean_ap_present"] > 0.002, after["mean_ap_present"]
    assert after["nd_score_present"] > before["nd_score_present"] + 0.025
