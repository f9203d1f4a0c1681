"""benchmarks/streampetr_attention.py: the attention diagnostic tells a StreamPETR that looks along the objects'
rays from one that does not (positive control: the ray-distance bias at a tiny sigma forces the geometry)."""

import json

import pytest
import torch

from ftkd.config import load_config
from ftkd.engine.checkpoint import config_to_json, save_checkpoint
from ftkd.models.build import build_model


@pytest.fixture(scope="module")
def diagnostic(load_benchmark):
    return load_benchmark("streampetr_attention")


def random_streampetr(synth_root, tmp_path, overrides):
    config = load_config("configs/streampetr_tiny.yaml", [f"data.dataroot={synth_root}", *overrides])
    torch.manual_seed(0)
    model = build_model(config.model).eval()
    return save_checkpoint({"config": config_to_json(config), "model": model.state_dict()}, tmp_path / "ckpt.pt")


def test_forced_ray_attention_is_found_and_random_attention_is_not(diagnostic, synth_root, tmp_path):
    plain = diagnostic.attention_geometry(random_streampetr(synth_root, tmp_path / "plain", []), frames=4,
                                          device="cpu")
    forced = diagnostic.attention_geometry(
        random_streampetr(synth_root, tmp_path / "forced", ["model.ray_bias_sigma=0.05"]), frames=4, device="cpu")
    assert plain["frames"] == forced["frames"] > 0
    # the same boxes and tokens: the share of tokens near a box centre does not depend on the model
    assert plain["token_fraction_near"] == pytest.approx(forced["token_fraction_near"])
    assert 0 < plain["token_fraction_near"] < 0.2
    assert 0.5 < plain["attention_lift"] < 2.0  # a fresh model's attention knows nothing of geometry
    assert forced["attention_lift"] > 10.0  # a 5 cm bias per logit leaves almost only the tokens on the ray
    assert forced["attention_mass_near"] > 0.5
    for report in (plain, forced):
        assert report["logit_std_over_queries"] >= 0 and report["logit_change_grey"] >= 0


def test_command_line_writes_json_and_rejects_a_sparsebev(diagnostic, synth_root, tmp_path):
    checkpoint = random_streampetr(synth_root, tmp_path, [])
    out = tmp_path / "attention.json"
    assert diagnostic.main([str(checkpoint), "--frames", "2", "--device", "cpu", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["split"] == "synth_val" and report["device"] == "cpu" and report["frames"] >= 1
    sparsebev = load_config("configs/sparsebev_tiny.yaml", [f"data.dataroot={synth_root}"])
    other = save_checkpoint({"config": config_to_json(sparsebev), "model": build_model(sparsebev.model).state_dict()},
                            tmp_path / "sparsebev.pt")
    with pytest.raises(ValueError, match="expected a StreamPETR checkpoint"):
        diagnostic.attention_geometry(other, frames=1, device="cpu")
