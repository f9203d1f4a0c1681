"""benchmarks/online_parity.py: the streamed online path scores exactly what the batched model scores, and its bf16
option is compared with it."""

import json

import pytest
from spread_students import spread_student

from ftkd.demo import evaluate_model


@pytest.fixture(scope="module")
def parity(load_benchmark):
    return load_benchmark("online_parity")


def test_streamed_fp32_scores_as_the_batched_model_and_bf16_is_compared(parity, synth_root, tmp_path):
    model, config, checkpoint = spread_student("configs/sparsebev_tiny.yaml", [
        f"data.dataroot={synth_root}", "data.image_size=[32,96]", "model.score_threshold=0.0"], tmp_path)
    batched, _ = evaluate_model(model, config.data, tmp_path / "batched")  # the trainer's evaluation path
    report = parity.online_parity(checkpoint, tmp_path / "parity", device="cpu")
    assert list(report["modes"]) == ["fp32", "bf16_weights"] and report["device"] == "cpu"
    fp32, bf16 = report["modes"]["fp32"], report["modes"]["bf16_weights"]
    assert fp32["NDS"] == pytest.approx(batched["nd_score"], abs=1e-9)
    expected = json.loads((tmp_path / "batched" / "results.json").read_text())["results"]
    streamed = json.loads((tmp_path / "parity" / "fp32" / "results.json").read_text())["results"]
    assert report["num_samples"] == len(expected) == len(streamed)
    assert sum(len(boxes) for boxes in expected.values()) > 0
    for token, boxes in expected.items():  # the same boxes, box for box (the top-k order included)
        assert len(streamed[token]) == len(boxes)
        for a, b in zip(streamed[token], boxes):
            assert a["detection_name"] == b["detection_name"]
            assert a["detection_score"] == pytest.approx(b["detection_score"], abs=1e-5)
            assert a["translation"] == pytest.approx(b["translation"], abs=1e-3)
    # bf16 weights move the logits, but not far (measured here: 1.7 at a largest |logit| of 17.7, the worst query of
    # every sample, with the random head's N(0, 1) weights amplifying the rounding)
    assert 0 < bf16["median_max_abs_logit_diff"] <= bf16["max_abs_logit_diff"] < 0.2 * report["max_abs_logit"]
    assert "max_abs_logit_diff" not in fp32
    with pytest.raises(ValueError, match="need CUDA"):
        parity.online_parity(checkpoint, tmp_path / "x", modes=["compiled_bf16_weights"], device="cpu")
