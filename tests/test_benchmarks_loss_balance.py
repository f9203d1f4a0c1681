"""benchmarks/loss_balance.py: KD weights, the weighted balance of a logged window and of a run folder, and the
report's section and analysis built from it (hand-computed values)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ftkd.distill.config import DistillConfig
from ftkd.distill.objective import kd_loss_weights


@pytest.fixture(scope="module")
def balance(load_benchmark):
    return load_benchmark("loss_balance")


def test_kd_weights_follow_the_config():
    assert kd_loss_weights(DistillConfig(), 6) == {"loss_pv": 1e-3, "loss_query": 16.0, "loss_fld_cls": 2.0,
                                                   "loss_fld_box": 0.25}
    weights = kd_loss_weights(DistillConfig(pv_ffr=False, fld_layers="all", weight_logits=2.0), 3)
    assert weights == {"loss_query": 16.0, "loss_fld_cls": 4.0, "loss_fld_box": 0.5, "loss_fld_cls_0": 4.0,
                       "loss_fld_box_0": 0.5, "loss_fld_cls_1": 4.0, "loss_fld_box_1": 0.5}
    mgd = DistillConfig(pv_ffr=False, query_ffr=False, fld=False, baseline="mgd", weight_baseline=1e-3)
    assert kd_loss_weights(mgd, 6) == {"loss_mgd": 1e-3}


def test_window_balance_by_hand(balance):
    weights = {"loss_pv": 1e-3, "loss_query": 16.0}
    entry = {"step": 40, "loss": 100.0, "loss_pv": 50_000.0, "loss_query": 1.0, "loss_cls": 3.0, "grad_norm": 900.0}
    result = balance.window_balance(entry, weights)
    assert result["kd_weighted"] == {"loss_pv": pytest.approx(50.0), "loss_query": 16.0}
    assert result["detection"] == pytest.approx(34.0)  # 100 - 50 - 16
    assert result["kd_over_detection"] == pytest.approx(66.0 / 34.0)
    assert result["grad_norm"] == 900.0
    assert balance.window_balance({"step": 1, "loss": 20.0}, {})["kd_over_detection"] == 0.0


def test_run_folders_and_report_section(balance, load_benchmark, tmp_path):
    distill = dataclasses.asdict(DistillConfig(teacher="runs/t/final.pt"))
    for stage, kd, grad, config in (("ftkd_sparsebev", {"loss_pv": 40_000.0, "loss_query": 0.5}, 800.0, distill),
                                    ("sparsebev", {}, 40.0, {**distill, "teacher": ""})):
        run = tmp_path / "bench" / "seed0" / stage
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"distill": config, "model": {"num_layers": 6},
                                                     "train": {"grad_clip": 35.0}}))
        total = 20.0 + sum(v * {"loss_pv": 1e-3, "loss_query": 16.0}[k] for k, v in kd.items())
        lines = [{"kind": "train", "step": 20, "loss": total + 10, **kd, "grad_norm": grad * 2},
                 {"kind": "train", "step": 40, "loss": total, **kd, "grad_norm": grad},
                 {"kind": "eval", "tag": "final"}]
        (run / "log.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    out = tmp_path / "balance.json"
    assert balance.main(["--runs-dir", str(tmp_path), "--out", str(out)]) == 0
    runs = {r["stage"]: r for r in json.loads(out.read_text())["runs"]}
    ftkd = runs["ftkd_sparsebev"]["last"]
    assert ftkd["detection"] == pytest.approx(20.0) and ftkd["kd_over_detection"] == pytest.approx(48.0 / 20.0)
    assert runs["sparsebev"]["kd_weights"] == {} and runs["sparsebev"]["finished"]

    report = load_benchmark("report")
    data = report.merge_balances([json.loads(out.read_text())])
    section = "\n".join(report.balance_section(data))
    assert "pv 40.0, query 8.0" in section and "2.40" in section
    rows = {}
    text = "\n".join(report.analysis(rows, data))
    assert "2-2x the detection loss" in text and "83-83 % of it PV-FFR" in text  # 40 / 48
    assert "20-20x the baseline's" in text  # grad norm 800 / 40


def test_sessions_stay_apart_when_merged(load_benchmark):
    """Two sessions with the same stage and seed: each run keeps its commit, and the grad-norm ratio pairs a
    distilled run with the baseline of its own session."""
    report = load_benchmark("report")

    def run(stage: str, grad: float) -> dict:
        kd = {"loss_pv": 10.0} if stage != "sparsebev" else {}
        return {"stage": stage, "seed": 0, "grad_clip": 35.0, "finished": True, "kd_weights": {},
                "last": {"step": 9, "detection": 20.0, "kd_weighted": kd, "grad_norm": grad,
                         "kd_over_detection": sum(kd.values()) / 20.0}}

    first = {"commit": "aaaa", "device": "H100", "runs": [run("ftkd_sparsebev", 400.0), run("sparsebev", 40.0)]}
    second = {"commit": "bbbb", "device": "H100", "runs": [run("sparsebev", 80.0)]}
    merged = report.merge_balances([first, second])
    assert [(r["stage"], r["commit"]) for r in merged["runs"]] == [
        ("ftkd_sparsebev", "aaaa"), ("sparsebev", "aaaa"), ("sparsebev", "bbbb")]
    assert "aaaa" in "\n".join(report.balance_section(merged))
    text = "\n".join(report.analysis({}, merged))
    assert "10-10x the baseline's" in text  # 400 / 40 of the same session, not 400 / 80
