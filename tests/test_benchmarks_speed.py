"""benchmarks/speed.py: the CPU rehearsal of every section (tiny students, 2 steps, ONNX on, SparseBEV's compiled
sections with aot_eager) writes a JSON with positive timings, a tight ONNX Runtime vs PyTorch parity and the
inference options' parity; a failing section is recorded and the run goes on; the
time guard skips sections; a killed section stays marked as running; the table prints whatever is there."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
import yaml

from ftkd.config import load_config
from ftkd.utils.configuration import to_dict

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("sparsebev", "streampetr")
TORCH_SECTIONS = ("eager_fp32", "eager_bf16", "backbone_only_fp32", "backbone_only_bf16", "train_step_bf16")
OPTION_SECTIONS = ("graph_bf16_weights", "graph_compile_bf16", "graph_compile_bf16_weights",
                   "decoder_graph_compile_bf16_weights")  # fmt: skip
OPTION_PARITY = ("parity_bf16_weights", "parity_compile_bf16", "parity_compile_bf16_weights")


@pytest.fixture(scope="module")
def speed(load_benchmark):
    return load_benchmark("speed")


def tiny_configs(tmp_path: Path) -> list[str]:
    """The tiny students at a 32 x 96 input (a quarter of their pixels: the rehearsal checks paths, not speed)."""
    args = []
    for arch in MODELS:
        config = load_config(ROOT / "configs" / f"{arch}_tiny.yaml", ["data.image_size=[32,96]"])
        path = tmp_path / f"{arch}.yaml"
        path.write_text(yaml.safe_dump(to_dict(config)))
        args += [f"--{arch}-config", str(path)]
    return args


def test_cpu_rehearsal_records_every_section(speed, load_benchmark, tmp_path: Path, capsys):
    out = tmp_path / "speed.json"
    argv = ["--device", "cpu", "--steps", "2", "--warmup", "1", "--onnx", "--compile-backend", "aot_eager",
            "--out", str(out), *tiny_configs(tmp_path)]  # fmt: skip
    assert speed.main(argv) == 0
    results = json.loads(out.read_text())
    assert results["finished"] is True and results["device_type"] == "cpu"
    for arch in MODELS:
        entry = results[arch]
        for section in TORCH_SECTIONS:
            row = entry[section]
            assert row["samples"] == 2, (arch, section, row)
            assert row["median_ms"] > 0 and math.isclose(row["fps"], 1000.0 / row["median_ms"]), (arch, section, row)
        assert entry["graph_bf16"] == {"skipped": "needs CUDA"}
        if arch == "sparsebev":  # the decoder alone on cached frames, and where an eager step's time goes
            assert entry["decoder_eager_bf16"]["samples"] == 2
            assert entry["decoder_graph_bf16"] == {"skipped": "needs CUDA"}
            profile = entry["profile_bf16"]
            assert profile["kind"] == "cpu operators" and profile["steps"] == 5, profile
            top = [row["ms_per_step"] for row in profile["top"]]
            assert len(top) == 25 and top == sorted(top, reverse=True) and top[-1] > 0, profile
            assert profile["total_ms_per_step"] >= sum(top) and profile["count_per_step"] > 25, profile
            assert any("grid_sampler" in row["name"] for row in profile["top"]), profile
        parity = entry["parity"]
        assert parity["frames"] == 4  # SparseBEV: T + 2 = 4 samples from an empty cache; StreamPETR: 4 frames
        assert parity["graph_vs_eager_bf16_max_abs_logit"] == "needs CUDA"
        # bf16 rounds the logits (a few 1e-2 on logits of a few units) but is not a different model
        assert 0 < parity["bf16_vs_fp32_max_abs_logit"] < 0.2 * parity["max_abs_logit_fp32"], (arch, parity)
        onnx = entry["onnx"]
        assert onnx["provider"] == "CPUExecutionProvider" and onnx["opset"] == 17, onnx
        assert onnx["export_s"] > 0 and onnx["file_mb"] > 1 and onnx["latency"]["median_ms"] > 0, onnx
        assert onnx["latency"]["samples"] == 2 and onnx["detections_last_frame"] > 0, onnx
        check = entry["onnx_parity"]
        assert check["frames"] == 3 and check["detections_per_frame"] == [[300, 300]] * 3, check
        # rank-by-rank scores agree to fp32 rounding; boxes wherever the ranking is clear (a rank swap at a clear
        # rank, e.g. a sampling point that changes camera by rounding, is listed and its frame's boxes skipped)
        assert 0 < check["max_score_diff"] < 5e-4, check
        assert check["max_box_diff"] is None or check["max_box_diff"] < 5e-3, check
        # not vacuous: the redrawn class head spreads the scores, so boxes are compared at many ranks
        assert sum(check["boxes_compared_per_frame"]) > 20, check
    # SparseBEV's inference options, after every other section (CPU: the same runners without CUDA graphs)
    sparsebev = results["sparsebev"]
    sections = list(sparsebev)
    assert sections.index("graph_bf16_weights") > sections.index("onnx_parity")
    for section in OPTION_SECTIONS:
        row = sparsebev[section]
        assert row["samples"] == 2 and row["median_ms"] > 0 and row["warmup_s"] > 0, (section, row)
        assert row["cuda_graph"] is False, (section, row)
    bf16 = sparsebev["parity"]["bf16_vs_fp32_max_abs_logit"]
    for section in OPTION_PARITY:
        row = sparsebev[section]
        assert row["frames"] == 4 and row["eager_bf16_vs_fp32_max_abs_logit"] == bf16, (section, row)
        # bf16 weights round about as autocast does (not a different model); compiled = uncompiled bit for bit
        assert 0 < row["vs_eager_fp32_max_abs_logit"] < 3 * bf16, (section, row)
    assert sparsebev["parity_compile_bf16"]["vs_eager_fp32_max_abs_logit"] == bf16
    assert not any(section in results["streampetr"] for section in (*OPTION_SECTIONS, *OPTION_PARITY))
    assert not list(tmp_path.glob("*.onnx")) and not (tmp_path / "speed.json.tmp").exists()
    table = capsys.readouterr().out
    assert "skipped: needs CUDA" in table and "onnx_parity" in table
    # benchmarks/report.py reads the fastest measured end-to-end mode: on the CPU the CUDA-graph sections are skipped
    # and the option sections run eagerly (`"cuda_graph": false`), so it is one of the two eager ones
    report = load_benchmark("report")
    best = max((results["sparsebev"][mode]["fps"], mode) for mode in ("eager_fp32", "eager_bf16"))
    assert report.fps_of(results, "sparsebev") == best
    assert report.fps_of(results, "streampetr") == max(
        (results["streampetr"][mode]["fps"], mode) for mode in ("eager_fp32", "eager_bf16"))


def test_failing_section_is_recorded_and_the_run_goes_on(speed, tmp_path: Path, capsys):
    out = tmp_path / "speed.json"
    recorder = speed.Recorder(out, {}, time.monotonic(), time.monotonic() + 600.0, torch.device("cpu"))

    def broken() -> dict:
        raise ValueError("boom")

    recorder.section("sparsebev", "eager_fp32", broken)
    recorder.section("sparsebev", "eager_bf16", lambda: {"median_ms": 4.0, "mean_ms": 4.0, "fps": 250.0, "samples": 3})
    recorder.section("sparsebev", "graph_bf16", speed.NEEDS_CUDA)
    recorder.deadline = time.monotonic() - 1.0
    recorder.section("sparsebev", "train_step_bf16", broken)
    written = json.loads(out.read_text())["sparsebev"]
    assert written["eager_fp32"]["error"] == "ValueError: boom"
    assert written["eager_bf16"]["fps"] == 250.0
    assert written["graph_bf16"] == {"skipped": "needs CUDA"}
    assert written["train_step_bf16"]["skipped"].startswith("time guard")
    capsys.readouterr()
    speed.print_table(json.loads(out.read_text()), ["sparsebev", "streampetr"])
    table = capsys.readouterr().out
    assert "error: ValueError: boom" in table and "250.0" in table and "not run" in table


def test_a_killed_section_stays_marked_running(speed, tmp_path: Path):
    out = tmp_path / "speed.json"
    recorder = speed.Recorder(out, {}, time.monotonic(), time.monotonic() + 600.0, torch.device("cpu"))
    recorder.section("streampetr", "eager_fp32", lambda: {"median_ms": 5.0, "mean_ms": 5.0, "fps": 200.0, "samples": 2})

    def killed() -> dict:
        raise KeyboardInterrupt  # what SIGINT does; not an Exception, so it is not recorded as a section error

    with pytest.raises(KeyboardInterrupt):
        recorder.section("streampetr", "eager_bf16", killed)
    written = json.loads(out.read_text())["streampetr"]
    assert written["eager_fp32"]["fps"] == 200.0
    assert "running" in written["eager_bf16"]


def test_time_guard_skips_sections_not_started(speed, tmp_path: Path):
    out = tmp_path / "speed.json"
    argv = ["--device", "cpu", "--max-seconds", "0", "--onnx", "--out", str(out), *tiny_configs(tmp_path)]
    assert speed.main(argv) == 0
    results = json.loads(out.read_text())
    for arch in MODELS:
        for section in (*TORCH_SECTIONS, "parity", "onnx", "onnx_parity"):
            assert results[arch][section]["skipped"].startswith("time guard"), (arch, section)
    for section in (*OPTION_SECTIONS, *OPTION_PARITY):
        assert results["sparsebev"][section]["skipped"].startswith("time guard"), section
        assert results[arch]["graph_bf16"] == {"skipped": "needs CUDA"}


def test_compare_frame_keeps_the_scores_when_labels_swap(speed):
    from ftkd.structures.outputs import Detections

    boxes = torch.arange(27, dtype=torch.float32).view(3, 9)
    reference = Detections(boxes=boxes, scores=torch.tensor([0.9, 0.5, 0.1]), labels=torch.tensor([0, 1, 2]))
    close = Detections(boxes=boxes + 2e-4, scores=torch.tensor([0.9, 0.5001, 0.1]), labels=torch.tensor([0, 1, 2]))
    scores, box, compared, why = speed.compare_frame(reference, close)
    assert why is None and scores == pytest.approx(1e-4, rel=1e-2) and box == pytest.approx(2e-4, rel=1e-2)
    assert compared == 3
    tied = Detections(boxes=boxes, scores=torch.tensor([0.9, 0.9, 0.1]), labels=torch.tensor([0, 1, 2]))
    assert speed.compare_frame(tied, tied)[2] == 1  # the two tied ranks may swap: only the last box is compared
    swapped = Detections(boxes=boxes, scores=torch.tensor([0.9, 0.45, 0.1]), labels=torch.tensor([0, 2, 2]))
    scores, box, compared, why = speed.compare_frame(reference, swapped)
    assert scores == pytest.approx(0.05, rel=1e-2) and box == math.inf and compared == 0 and "labels differ" in why
