"""`ftkd demo --quick` end to end on the CPU: world, metric check, teacher, student, FTKD student, the official metric
of each, the table, the pictures, summary.json / summary.md; plus the pieces of ftkd.demo checked by hand."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from ftkd.cli import main
from ftkd.data.config import DataConfig
from ftkd.demo import DemoPlan, demo_plan, experiment_overrides, format_table, frames_seen, make_world

MODELS = ("teacher", "student", "FTKD student")
COLUMNS = ("NDS", "mAP", "mATE", "mASE", "mAOE", "mAVE", "mAAE")


def test_frames_seen_and_table_by_hand():
    assert frames_seen(DataConfig(num_past_frames=1, num_future_frames=1)) == "1 past + current + 1 future"
    assert frames_seen(DataConfig(num_past_frames=7, num_future_frames=0)) == "7 past + current"
    assert frames_seen(DataConfig(num_past_frames=0, num_future_frames=0)) == "current"
    row = {"model": "m", "frames": "current", **dict(zip(COLUMNS, (0.5, 0.25, 1, 1, 1, 1, 1)))}
    text = format_table([row]).splitlines()
    assert text[0].split() == ["model", "frames", "seen", *COLUMNS]
    assert text[1].split() == ["m", "current", "0.5000", "0.2500", *["1.0000"] * 5]
    assert format_table([row], markdown=True).splitlines()[2] == (
        "| m | current | 0.5000 | 0.2500 | 1.0000 | 1.0000 | 1.0000 | 1.0000 | 1.0000 |"
    )


def test_overrides_give_exactly_the_planned_steps(tmp_path):
    from ftkd.config import load_config
    from ftkd.demo import STUDENT_CONFIG
    from ftkd.engine.optim import make_schedule, plan_batches

    plan = DemoPlan(scenes=10, val_scenes=2, samples_per_scene=10, stored_size=(256, 144), image_size=(48, 128),
                    lr=1e-3, teacher_steps=7, student_steps=61, log_every=10)
    for steps in (1, 7, 40, 61, 97):
        config = load_config(STUDENT_CONFIG, experiment_overrides(plan, tmp_path / "data", tmp_path / "run", steps, 3))
        batch_plan = plan_batches(config.train, config.data.batch_size, 1)
        schedule = make_schedule(config.train, batch_plan, math.ceil(80 / 2))  # 8 train scenes x 10 keyframes
        assert schedule.total_steps == steps
    assert config.train.seed == 3 and config.train.device == "cpu" and tuple(config.data.image_size) == (48, 128)
    assert config.train.lr == 1e-3 and config.data.frame_source == "keyframes"
    assert demo_plan(False, 5).student_steps == round(demo_plan(False, 10).student_steps / 2)
    with pytest.raises(ValueError, match="--minutes"):
        demo_plan(False, 0)


def test_demo_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--quick", "--out", str(out), "--seed", "0"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out

    summary = json.loads((out / "summary.json").read_text())
    names = [row["model"] for row in summary["rows"]]
    assert names == ["ground truth as prediction", "perturbed ground truth", "untrained student", *MODELS]
    rows = {row["model"]: row for row in summary["rows"]}
    lines = printed.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("model ") and "frames seen" in line)
    assert lines[header].split()[-7:] == list(COLUMNS)
    for name, line in zip(names, lines[header + 1:]):  # every row is printed, with the numbers of its metrics.json
        assert line.startswith(name + "  ") and line.split()[-7:] == [f"{rows[name][c]:.4f}" for c in COLUMNS]
    assert rows["teacher"]["frames"] == "1 past + current + 1 future"
    assert rows["student"]["frames"] == rows["FTKD student"]["frames"] == "1 past + current"
    # the metric sanity rows: ground truth scores perfectly on the classes it holds, the perturbed copy clearly less
    truth = json.loads((out / "gt_as_prediction" / "metrics" / "metrics.json").read_text())
    assert truth["mean_ap_present"] > 0.99 and rows["ground truth as prediction"]["mAP"] == truth["mean_ap"]
    assert rows["perturbed ground truth"]["NDS"] < rows["ground truth as prediction"]["NDS"] - 0.05

    for name in ("untrained student", *MODELS):
        metrics = json.loads((out / "eval" / name.replace(" ", "_") / "metrics.json").read_text())
        assert metrics["split"] == "synth_val" and metrics["num_gt_boxes"] > 0
        assert rows[name]["NDS"] == pytest.approx(metrics["nd_score"])
        assert rows[name]["mAVE"] == pytest.approx(metrics["tp_errors"]["vel_err"])
        assert 0.0 <= metrics["nd_score"] <= 1.0
    for name in MODELS:
        assert Path(summary["checkpoints"][name]).is_file()
    assert set(summary["picture_score_thresholds"]) == set(MODELS)

    assert set(summary["pictures"]) == {f"{m} {kind}" for m in MODELS for kind in ("BEV", "cameras")} | {
        "side by side BEV"}
    for path in summary["pictures"].values():
        image = imread(path)  # [H, W, 4] floats in [0, 1]
        assert image.shape[0] > 300 and image.shape[1] > 300, path
        assert np.asarray(image[..., :3]).std() > 0.05, f"{path} is (almost) blank"
    side = imread(summary["pictures"]["side by side BEV"])
    assert side.shape[1] > 2 * side.shape[0]  # three square plots in a row
    assert "[1/9] synthetic world" in printed and "[9/9]" in printed and "elapsed" in printed
    # a second run reuses the world written with the same config; a folder that is no demo world is left alone
    assert make_world(out / "data", demo_plan(True, 10), seed=0) == (out / "data", True)
    (tmp_path / "other").mkdir()
    with pytest.raises(FileExistsError, match="synth_config.json"):
        make_world(tmp_path / "other", demo_plan(True, 10), seed=0)
    markdown = (out / "summary.md").read_text()
    assert "| FTKD student | 1 past + current |" in markdown and "docs/results.md" in markdown
    assert "bev_side_by_side.png" in markdown
