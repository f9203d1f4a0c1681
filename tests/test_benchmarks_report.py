"""benchmarks/report.py on hand-written accuracy JSON files (seed statistics, paired claims, missing rows, files), and
the stage table and chunk sizing of benchmarks/accuracy.py (configs only: no training)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ftkd.utils.configuration import to_dict


@pytest.fixture(scope="module")
def report(load_benchmark):
    return load_benchmark("report")


def record(stage: str, seed: int, nds: float, mAP: float, mave: float, profile: str = "bench",
           same_keys: bool = True) -> dict:
    """A minimal accuracy JSON as benchmarks/accuracy.py writes it (only the fields the report reads)."""
    per_class = {name: mAP for name in ("car", "truck", "bus", "trailer", "construction_vehicle", "pedestrian",
                                        "motorcycle", "bicycle", "traffic_cone", "barrier")}
    return {
        "format": "ftkd-accuracy-v1", "stage": stage, "seed": seed, "profile": profile, "kind": "distill",
        "config": {"train": {"epochs": 6.0}},
        "metrics": {"NDS": nds, "mAP": mAP, "mATE": 0.7, "mASE": 0.3, "mAOE": 0.6, "mAVE": mave, "mAAE": None,
                    "per_class_AP": per_class},
        "train": {"steps": 960, "train_s": 180.0, "wall_s": 200.0, "ms_per_step_median": 150.0, "max_memory_gb": 9.5},
        "checks": {"student_keys_match_baseline": same_keys, "recipe_differences_to_baseline": []},
        "environment": {"device": "NVIDIA H100 80GB HBM3", "commit": "0123456789abcdef", "git_dirty": False},
    }


def write(folder: Path, records: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for r in records:
        (folder / f"{r['stage']}_seed{r['seed']}_{r['profile']}.json").write_text(json.dumps(r))
    return folder


def test_mean_and_sample_std_against_hand_computed_values(report):
    mean, std = report.mean_std([0.30, 0.32, 0.37])
    assert mean == pytest.approx(0.33)
    # sample variance: ((-0.03)^2 + (-0.01)^2 + 0.04^2) / (3 - 1) = 0.0013
    assert std == pytest.approx(math.sqrt(0.0013))
    assert report.mean_std([0.5]) == (0.5, None)
    assert report.fmt("NDS", {0: 0.30, 1: 0.32, 2: 0.37}) == f"33.00 ± {100 * math.sqrt(0.0013):.2f}"
    assert report.fmt("mAVE", {0: 0.25}) == "0.250"
    assert report.fmt("mAVE", {}) == "—"


def test_paired_differences_and_verdicts(report, load_benchmark, tmp_path):
    folder = write(tmp_path / "acc", [
        record("sparsebev", 0, 0.30, 0.20, 0.60), record("sparsebev", 1, 0.31, 0.21, 0.58),
        record("sparsebev", 2, 0.29, 0.19, 0.62),
        record("ftkd_sparsebev", 0, 0.32, 0.22, 0.55), record("ftkd_sparsebev", 1, 0.335, 0.225, 0.54),
        record("ftkd_sparsebev", 2, 0.31, 0.20, 0.57),
        record("kd_mgd", 0, 0.33, 0.21, 0.50),  # one seed, better than FTKD
    ])
    rows, _, warnings = report.load_records(folder, "bench")
    assert warnings == []
    mean, std, n = report.paired(rows, "ftkd_sparsebev", "sparsebev", "NDS")
    differences = [0.02, 0.025, 0.02]
    assert n == 3 and mean == pytest.approx(sum(differences) / 3)
    assert std == pytest.approx(math.sqrt(sum((d - mean) ** 2 for d in differences) / 2))
    assert report.verdict((mean, std, n), higher_is_better=True) == "reproduced"
    assert report.verdict((0.01, 0.05, 3), higher_is_better=True) == "same direction, within noise"
    assert report.verdict((-0.02, 0.001, 3), higher_is_better=True) == "not reproduced"
    # the paired t-test, against tabulated critical values (t at 97.5 %: 12.706 for 1 dof, 4.303 for 2)
    core = load_benchmark("report_core")
    assert core.critical_t(2) == pytest.approx(12.706, abs=1e-3)
    assert core.critical_t(3) == pytest.approx(4.303, abs=1e-3)
    # 0.50 ± 0.14 over 2 seeds: 5.1 standard errors, beyond a two-standard-error rule but not beyond t = 12.7
    assert report.verdict((0.50, 0.14, 2), higher_is_better=True) == "same direction, within noise"
    # over 3 seeds: 2.53 standard errors are within noise (t = 4.30), 5.20 are not
    assert report.verdict((2.70, 1.85, 3), higher_is_better=True) == "same direction, within noise"
    assert report.verdict((3.00, 1.00, 3), higher_is_better=True) == "reproduced"
    # +1.0 with a paired std of 1.31 first passes at 10 seeds: t(9) * 1.31 / sqrt(10) = 2.262 * 0.414 = 0.937
    assert core.seeds_to_show(1.0, 1.31) == 10
    assert report.verdict((0.02, None, 1), higher_is_better=True) == "same direction, one seed (noise unknown)"
    assert report.verdict(None, higher_is_better=True) == "not yet run"
    verdicts = {(claim, comparison): v for claim, comparison, _, v in report.claims(rows)}
    assert verdicts[("FTKD improves SparseBEV: mAVE lower", "ftkd_sparsebev − sparsebev")] == "reproduced"
    assert verdicts[("FTKD beats MGD: NDS higher", "ftkd_sparsebev − kd_mgd")] == "not reproduced"
    assert verdicts[("FTKD improves StreamPETR: NDS higher", "ftkd_streampetr − streampetr")] == "not yet run"


def test_a_lucky_small_std_is_held_to_the_typical_paired_std(report, load_benchmark, tmp_path):
    core = load_benchmark("report_core")
    folder = write(tmp_path / "acc", [
        record("sparsebev", 0, 0.30, 0.2, 0.6), record("sparsebev", 1, 0.31, 0.2, 0.6),
        record("sparsebev", 2, 0.29, 0.2, 0.6),
        record("teacher", 0, 0.305, 0.2, 0.6), record("teacher", 1, 0.315, 0.2, 0.6),
        record("teacher", 2, 0.295, 0.2, 0.6),
        record("teacher_r18", 0, 0.33, 0.2, 0.6), record("teacher_r18", 1, 0.29, 0.2, 0.6),
        record("teacher_r18", 2, 0.31, 0.2, 0.6),
        record("teacher_long", 0, 0.50, 0.2, 0.6), record("teacher_long", 1, 0.10, 0.2, 0.6),  # 2 seeds: left out
    ])
    rows, _, _ = report.load_records(folder, "bench")
    # paired NDS stds: teacher - sparsebev 0 (a constant +0.005); r18 - sparsebev and r18 - teacher both have
    # deviations (+0.02, -0.03, +0.01) from their mean, variance 0.0014 / 2 = 0.0007
    assert core.typical_paired_std(rows, "NDS") == pytest.approx(math.sqrt((0 + 0.0007 + 0.0007) / 3))
    lucky = core.paired(rows, "teacher", "sparsebev", "NDS")
    assert lucky[1] == pytest.approx(0.0, abs=1e-12)
    assert core.told_apart(lucky) and core.verdict(lucky, True) == "reproduced"
    # held to 0.0216: 0.005 < t(2) 4.303 x 0.0216 / sqrt(3) = 0.054
    typical = core.typical_paired_std(rows, "NDS")
    assert not core.told_apart(lucky, typical)
    assert core.verdict(lucky, True, typical) == "same direction, within noise"
    assert core.told_apart((-0.06, 0.01, 3), typical)  # either direction
    assert core.verdict((-0.06, 0.01, 3), True, typical) == "not reproduced"
    assert not core.told_apart((0.5, None, 1), typical) and not core.told_apart(None)
    assert core.typical_paired_std(rows, "mAVE") == 0.0
    assert core.typical_paired_std({}, "NDS") is None


def test_a_verdict_between_two_models_at_the_floor_is_not_evidence(report, tmp_path):
    folder = write(tmp_path / "acc", [
        record("streampetr", 0, 0.036, 0.0007, 0.97), record("streampetr", 1, 0.034, 0.0005, 0.96),
        record("ftkd_streampetr", 0, 0.071, 0.0008, 0.93), record("ftkd_streampetr", 1, 0.072, 0.0009, 0.92),
        record("teacher", 0, 0.19, 0.05, 0.62), record("teacher", 1, 0.20, 0.06, 0.60),
    ])
    rows, _, _ = report.load_records(folder, "bench")
    verdicts = {(claim, comparison): v for claim, comparison, _, v in report.claims(rows)}
    assert verdicts[("FTKD improves StreamPETR: NDS higher", "ftkd_streampetr − streampetr")] == \
        "reproduced (both below 1% mAP: not evidence)"
    # one side above the floor: the plain verdict
    assert verdicts[("The offline teacher beats the StreamPETR student: NDS higher", "teacher − streampetr")] == \
        "reproduced"


def test_markdown_lists_missing_rows_and_uses_only_json_numbers(report, tmp_path):
    ddp = record("ftkd_sparsebev", 1, 0.34, 0.24, 0.53)
    ddp["train"]["processes"] = 2  # trained under torchrun on 2 GPUs
    folder = write(tmp_path / "acc", [
        record("sparsebev", 0, 0.30, 0.20, 0.60), record("ftkd_sparsebev", 0, 0.32, 0.22, 0.55), ddp,
        record("teacher", 0, 0.45, 0.35, 0.40, profile="tiny"),  # another profile: not reported
    ])
    (folder / "notes.json").write_text(json.dumps({"something": "else"}))
    out, png = tmp_path / "docs" / "results.md", tmp_path / "docs" / "results" / "accuracy.png"
    speed = tmp_path / "speed.json"
    speed.write_text(json.dumps({"device": "NVIDIA H100", "sparsebev": {"graph_bf16": {"fps": 123.4}}}))
    assert report.main(["--results-dir", str(folder), "--out", str(out), "--png", str(png), "--speed", str(speed)]) == 0
    text = out.read_text()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](results/accuracy.png)" in text
    assert "| +FTKD | 2 | 33.00 ± 1.41 | 23.00 ± 1.41 |" in text  # mean ± sample std of 0.32 / 0.34
    assert "| SparseBEV (baseline) | 1 | 30.00 | 20.00 |" in text
    assert "123.4" in text  # FPS from speed.json, for rows that keep the baseline's tensors
    missing = text.split("## Missing rows (not yet run)")[1]
    assert "- `sparsebev`: 1 of 3 seed(s) (seeds [0])" in missing
    assert "- `ftkd_sparsebev`: 2 of 3 seed(s) (seeds [0, 1])" in missing
    assert "- `teacher`: 0 of 3 seed(s) (no run)" in missing
    assert "- `kd_mgd`: 0 of 1 seed(s) (no run)" in missing
    assert "notes.json: not a ftkd-accuracy-v1 file, skipped" in text
    assert "45.00" not in text  # the tiny-profile teacher stays out
    provenance = next(line for line in text.splitlines() if line.startswith("| ftkd_sparsebev | 0,1 |"))
    assert "NVIDIA H100 80GB HBM3; NVIDIA H100 80GB HBM3 x2 processes (DDP)" in provenance


def test_zero_files_and_a_changed_student_graph(report, tmp_path):
    out, png = tmp_path / "results.md", tmp_path / "accuracy.png"
    assert report.main(["--results-dir", str(tmp_path / "none"), "--out", str(out), "--png", str(png),
                        "--speed", str(tmp_path / "no_speed.json")]) == 0
    text = out.read_text()
    assert png.is_file() and "No runs yet." in text
    assert text.count("not yet run") >= 20  # every claim, none invented
    folder = write(tmp_path / "acc", [record("sparsebev", 0, 0.30, 0.20, 0.60),
                                      record("ftkd_sparsebev", 0, 0.32, 0.22, 0.55, same_keys=False)])
    rows, _, _ = report.load_records(folder, "bench")
    page = report.build_markdown(rows, [], {"sparsebev": {"eager_bf16": {"fps": 99.0}}}, "a.png", "x", "bench", [])
    assert "NOT every distilled checkpoint" in page
    line = next(l for l in page.splitlines() if l.startswith("| +FTKD |"))
    assert "99.0" not in line  # no FPS claimed for a student whose graph differs from the baseline


@pytest.fixture(scope="module")
def accuracy(load_benchmark):
    return load_benchmark("accuracy")


def make_benchmark(accuracy, tmp_path, **changes):
    args = accuracy.argparse.Namespace(
        stages=[], seed=1, profile="bench", budget_s=500.0, out_json_dir=str(tmp_path / "out"), bundle=None,
        runs_dir=str(tmp_path / "runs"), dataroot=str(tmp_path / "data"), workers=1, set=[], compile=False,
        skip_data_check=True, commit=None, loader_workers=3, skip_breakdown=False, one_chunk=False,
    )
    for key, value in changes.items():
        setattr(args, key, value)
    return accuracy.Benchmark(args)


def test_every_stage_resolves_to_its_intended_config(accuracy, tmp_path):
    """The stage table against the protocol: same recipe as the baseline, one knob changed, teacher of the seed."""
    benchmark = make_benchmark(accuracy, tmp_path)
    configs = {name: benchmark.resolved_config(stage, benchmark.command_argv(stage))
               for name, stage in accuracy.STAGES.items() if stage.kind != "data"}
    for name, config in configs.items():
        stage = accuracy.STAGES[name]
        assert config.train.seed == 1 and config.name == name
        expected_epochs = {"teacher": 6.0, "sparsebev": 6.0, "streampetr": 12.0}[stage.student or "teacher"]
        assert config.train.epochs == {"teacher_long": 12.0, "streampetr_bs16_e48": 48.0,
                                     "streampetr_bs16_e96": 96.0}.get(name, expected_epochs)
        assert config.model.backbone.frozen_stages == 0
        if stage.backbone_from:  # initialised from a trained stage: BatchNorm frozen, the recipe's 0.25x backbone lr
            assert config.model.backbone.pretrained == str(tmp_path / "runs" / "bench" / "seed1" / stage.backbone_from
                                                           / "checkpoints" / "final.pt")
            assert config.model.backbone.norm_eval and config.model.freeze_norm_affine
            assert config.train.lr_multipliers == {"backbone.conv1": 0.25, "backbone.bn1": 0.25, "backbone.layer": 0.25}
        else:  # from scratch
            assert not config.model.backbone.pretrained and not config.model.backbone.norm_eval
            assert not any(key.startswith("backbone") for key in config.train.lr_multipliers)  # full lr when random
        assert config.data.num_workers == 3
        if stage.kind == "distill":
            baseline = configs[stage.student]
            assert accuracy.recipe_differences(to_dict(config), to_dict(baseline)) == []
            assert config.distill.teacher == str(tmp_path / "runs" / "bench" / "seed1" / stage.teacher / "checkpoints"
                                                 / "final.pt")
    full = configs["ftkd_sparsebev"].distill
    assert (full.pv_ffr, full.query_ffr, full.fld, full.mask_ratio, full.fld_queries, full.baseline) == (
        True, True, True, 0.5, "both", "none")
    assert configs["ftkd_streampetr"].distill == full  # the same FTKD settings and the same teacher
    mgd = configs["kd_mgd"].distill
    assert (mgd.pv_ffr, mgd.query_ffr, mgd.fld, mgd.baseline) == (False, False, False, "mgd")
    assert (configs["abl_query"].distill.pv_ffr, configs["abl_query"].distill.fld) == (False, False)
    assert (configs["abl_query_fld"].distill.pv_ffr, configs["abl_query_fld"].distill.fld) == (False, True)
    for name in ("mask_0.4_pvw_1e-5", "mask_0.75_pvw_1e-5", "mask_0.9_pvw_1e-5", "fld_fg_pvw_1e-5", "fld_bg_pvw_1e-5"):
        sweep, rescaled = configs[name].distill, configs["ftkd_pvw_1e-5"].distill
        assert sweep.weight_pv == rescaled.weight_pv == 1.0e-5  # the sweeps change one knob of the rescaled row
        changed = {k for k in to_dict(sweep) if to_dict(sweep)[k] != to_dict(rescaled)[k]}
        assert changed == ({"mask_ratio"} if name.startswith("mask") else {"fld_queries"}), name
    assert configs["mask_0.75_pvw_1e-5"].distill.mask_ratio == 0.75
    assert configs["fld_bg_pvw_1e-5"].distill.fld_queries == "background"
    assert configs["ftkd_streampetr_pvw_1e-5"].distill == configs["ftkd_pvw_1e-5"].distill
    for name in ("streampetr_bs16_e48", "streampetr_bs16_e96"):  # the recipe's global batch: 4x the samples a step
        longer = configs[name]
        assert (longer.data.batch_size, longer.train.lr) == (16, configs["streampetr"].train.lr)
        assert accuracy.recipe_differences(to_dict(longer), to_dict(configs["streampetr"])) != []
    assert configs["streampetr_raybias_heatmap"].model.ray_bias_sigma == 2.0
    assert configs["streampetr_raybias_heatmap"].model.heatmap_weight == 1.0
    nofuture, teacher = configs["teacher_nofuture"], configs["teacher"]
    assert teacher.data.num_future_frames == 3 and teacher.model.offline and teacher.model.num_frames == 7
    assert (nofuture.data.num_future_frames, nofuture.model.offline, nofuture.model.num_frames) == (0, False, 4)
    assert configs["kd_nofuture"].distill.teacher_future is False
    assert configs["teacher"].train.lr_multipliers == {"sampling_offset": 0.1}  # the recipe's non-backbone entry
    for rule in ("linear", "sqrt"):
        lr = configs[f"lr_bs32_{rule}"]
        assert (lr.train.global_batch, lr.train.grad_accum, lr.train.lr_scaling) == (32, 4, rule)
        assert accuracy.recipe_differences(to_dict(lr), to_dict(configs["sparsebev"])) == [
            "train.global_batch: 8 -> 32", "train.grad_accum: 1 -> 4"] + (
            ["train.lr_scaling: 'linear' -> 'sqrt'"] if rule == "sqrt" else [])
    assert configs["ftkd_pvw_1e-5"].distill.weight_pv == 1e-5 and configs["kd_mgd_w1e-3"].distill.weight_baseline == 1e-3
    assert configs["kd_mgd_w1e-3"].distill.baseline == "mgd" and not configs["kd_mgd_w1e-3"].distill.pv_ffr
    long_student = configs["ftkd_long_pvw_1e-5"]
    assert long_student.distill.teacher.endswith("seed1/teacher_long/checkpoints/final.pt")
    assert long_student.distill.weight_pv == 1e-5 and long_student.train.epochs == 6.0
    assert configs["streampetr_lr4e-4"].train.lr_scaling == "none" and configs["streampetr"].train.lr_scaling == "linear"
    assert configs["streampetr_nodn"].model.dn_groups == 0 and configs["streampetr"].model.dn_groups > 0


def test_beyond_the_paper_stages_change_one_knob(accuracy, tmp_path):
    """Issue 10: teachers with 0/1/3/7 future frames and a ResNet-18 teacher with future, each distilled into the same
    student with the FTKD of `ftkd_pvw_1e-5` (PV-FFR weight 1e-5) from the teacher of the same seed."""
    import dataclasses

    benchmark = make_benchmark(accuracy, tmp_path)
    names = ("teacher", "teacher_nofuture", "teacher_future1", "teacher_future7", "teacher_r18", "sparsebev",
             "ftkd_pvw_1e-5", "kd_nofuture_pvw_1e-5", "ftkd_future1_pvw_1e-5", "ftkd_future7_pvw_1e-5",
             "ftkd_teacher_r18_pvw_1e-5", "ftkd_future7_pvw_2e-6")
    stages = {name: accuracy.STAGES[name] for name in names}
    configs = {name: benchmark.resolved_config(stage, benchmark.command_argv(stage)) for name, stage in stages.items()}
    teacher = configs["teacher"]

    def changed(name: str) -> set[str]:
        return {d.split(":")[0] for d in accuracy.recipe_differences(to_dict(configs[name]), to_dict(teacher))}

    for name, future in (("teacher_nofuture", 0), ("teacher_future1", 1), ("teacher", 3), ("teacher_future7", 7)):
        config = configs[name]
        assert (config.data.num_future_frames, config.model.num_frames, config.model.offline) == (
            future, 3 + 1 + future, future > 0)
        assert config.model.backbone.depth == 34 and config.data.num_past_frames == 3
        assert changed(name) == (set() if future == 3 else {"data.num_future_frames", "model.num_frames"}
                                 | ({"model.offline"} if future == 0 else set()))
    r18 = configs["teacher_r18"]
    assert r18.model.backbone.depth == configs["sparsebev"].model.backbone.depth == 18
    assert (r18.data.num_future_frames, r18.model.num_frames, r18.model.offline) == (3, 7, True)
    assert changed("teacher_r18") == {"model.backbone"}
    assert dataclasses.replace(r18.model.backbone, depth=34) == teacher.model.backbone
    reference = configs["ftkd_pvw_1e-5"].distill
    students = {"kd_nofuture_pvw_1e-5": "teacher_nofuture", "ftkd_future1_pvw_1e-5": "teacher_future1",
                "ftkd_future7_pvw_1e-5": "teacher_future7", "ftkd_teacher_r18_pvw_1e-5": "teacher_r18"}
    for name, teacher_stage in students.items():
        stage, distill = accuracy.STAGES[name], configs[name].distill
        assert stage.teacher == teacher_stage and stage.student == "sparsebev"
        runs = tmp_path / "runs" / "bench" / "seed1"
        assert distill.teacher == str(runs / teacher_stage / "checkpoints" / "final.pt")
        assert distill.weight_pv == 1e-5
        assert distill.teacher_future is (teacher_stage != "teacher_nofuture")
        assert dataclasses.replace(distill, teacher=reference.teacher, teacher_future=True) == reference
        assert accuracy.recipe_differences(to_dict(configs[name]), to_dict(configs["sparsebev"])) == []
    # the loss-balance check: the 7-future-frame teacher's student with only the PV-FFR weight changed
    balanced = configs["ftkd_future7_pvw_2e-6"].distill
    assert accuracy.STAGES["ftkd_future7_pvw_2e-6"].teacher == "teacher_future7" and balanced.weight_pv == 2e-6
    assert dataclasses.replace(balanced, weight_pv=1e-5) == configs["ftkd_future7_pvw_1e-5"].distill
    # The horizon follows the profile's past frames (tiny: 1 past frame).
    tiny = make_benchmark(accuracy, tmp_path, profile="tiny")
    stage = accuracy.STAGES["teacher_future7"]
    config = tiny.resolved_config(stage, tiny.command_argv(stage))
    assert (config.data.num_past_frames, config.data.num_future_frames, config.model.num_frames) == (1, 7, 9)


def test_breakdown_is_recorded_or_its_error_is(accuracy, tmp_path, synth_root):
    """Benchmark.breakdown on a run folder's results_final.json (no detections: every AP 0), and on a broken one."""
    from ftkd.data.results import write_result_records
    from ftkd.engine.evaluation import load_nuscenes, split_sample_tokens

    benchmark = make_benchmark(accuracy, tmp_path, dataroot=str(synth_root))
    stage = accuracy.STAGES["sparsebev"]
    config = benchmark.resolved_config(stage, benchmark.command_argv(stage))
    run = tmp_path / "run"
    assert not benchmark.wants_breakdown(run)
    tokens = split_sample_tokens(load_nuscenes(synth_root, config.data.version), config.data.val_split)
    write_result_records({}, run / "results_final.json", sample_tokens=tokens)
    assert benchmark.wants_breakdown(run)
    out = benchmark.breakdown(run, config)
    assert out["distance"]["0-20"]["num_gt"] > 0 and out["distance"]["0-20"]["mAP"] == 0.0
    assert json.loads((run / "breakdown.json").read_text())["visibility"] == out["visibility"]
    write_result_records({}, run / "results_final.json", sample_tokens=tokens[1:])
    broken = benchmark.breakdown(run, config)
    assert list(broken) == ["error"] and "missing 1 of" in broken["error"]
    assert not make_benchmark(accuracy, tmp_path, skip_breakdown=True).wants_breakdown(run)


def test_chunks_fit_the_budget(accuracy, tmp_path):
    benchmark = make_benchmark(accuracy, tmp_path)
    assert benchmark.next_chunk({}) == benchmark.profile.probe_steps  # nothing measured yet: probe
    progress = {"step": 100, "total_steps": 1000, "seconds_per_step": 0.3, "setup_s": 20.0}
    benchmark.deadline = accuracy.time.monotonic() + 500  # 900 steps x 0.3 s + setup, margin, eval reserve fit
    assert benchmark.next_chunk(progress) == 0
    benchmark.deadline = accuracy.time.monotonic() + 200  # (200 - 20 - 15) / 0.3 = 550 steps, no evaluation
    assert benchmark.next_chunk(progress) in (649, 650)
    benchmark.deadline = accuracy.time.monotonic() + 30
    assert benchmark.next_chunk(progress) is None
    # one step before the end with no room for the evaluation: stop, do not loop on chunks that train nothing
    progress_at_end = {**progress, "step": 999}
    benchmark.deadline = accuracy.time.monotonic() + 100
    assert benchmark.next_chunk(progress_at_end) is None
    # --one-chunk (files that die with the machine): to the end whatever the budget, probe included
    one_chunk = make_benchmark(accuracy, tmp_path, one_chunk=True)
    one_chunk.deadline = accuracy.time.monotonic() + 30
    assert one_chunk.next_chunk({}) == 0 and one_chunk.next_chunk(progress) == 0


def test_teachers_run_before_their_students(accuracy, tmp_path):
    benchmark = make_benchmark(accuracy, tmp_path)
    names = [s.name for s in accuracy.order_stages(["kd_nofuture", "sparsebev", "ftkd_streampetr"], benchmark)]
    assert names == ["teacher_nofuture", "kd_nofuture", "sparsebev", "teacher", "ftkd_streampetr"]
    names = [s.name for s in accuracy.order_stages(["ftkd_sparsebev", "teacher"], benchmark)]
    assert names == ["teacher", "ftkd_sparsebev"]


def test_bundles_and_duplicates(report, tmp_path):
    """A bundle (list of records) reads like single files; an identical copy is silent, a conflicting one warned."""
    folder = tmp_path / "acc"
    folder.mkdir()
    first, second = record("sparsebev", 0, 0.30, 0.20, 0.60), record("sparsebev", 1, 0.34, 0.22, 0.58)
    (folder / "g0.json").write_text(json.dumps([first, second]))
    (folder / "sparsebev_seed0.json").write_text(json.dumps(first))
    (folder / "zz_conflict.json").write_text(json.dumps(record("sparsebev", 1, 0.99, 0.99, 0.1)))
    rows, _, warnings = report.load_records(folder, "bench")
    assert rows["sparsebev"].values("NDS") == {0: 0.30, 1: 0.34}
    assert warnings == ["zz_conflict.json: a second record for sparsebev seed 1, skipped"]


def with_breakdown(entry: dict, distance: dict[str, float | None], visibility: dict[str, float | None]) -> dict:
    """`entry` with the `breakdown` block of benchmarks/accuracy.py (only the fields the report reads)."""
    def subsets(values):
        return {key: {"mAP": value, "num_gt": 10 * (i + 1)} for i, (key, value) in enumerate(values.items())}

    return {**entry, "breakdown": {"all": {"num_gt_per_class": {"car": 7, "truck": 0}},
                                   "distance": subsets(distance), "visibility": subsets(visibility)}}


def test_where_the_gain_lands_and_beyond_the_paper_sections(report, load_benchmark, tmp_path):
    bands = ("0-20", "20-40", ">40")
    levels = ("1", "2", "3", "4")
    records = [
        with_breakdown(record("sparsebev", 0, 0.30, 0.20, 0.60), dict(zip(bands, (0.30, 0.10, 0.02))),
                       dict(zip(levels, (0.05, 0.10, 0.15, 0.25)))),
        with_breakdown(record("sparsebev", 1, 0.31, 0.21, 0.58), dict(zip(bands, (0.32, 0.12, None))),
                       dict(zip(levels, (0.07, 0.10, 0.15, 0.25)))),
        with_breakdown(record("ftkd_pvw_1e-5", 0, 0.32, 0.22, 0.55), dict(zip(bands, (0.31, 0.14, 0.03))),
                       dict(zip(levels, (0.09, 0.10, 0.15, 0.25)))),
        with_breakdown(record("ftkd_pvw_1e-5", 1, 0.33, 0.23, 0.54), dict(zip(bands, (0.34, 0.14, 0.01))),
                       dict(zip(levels, (0.10, 0.10, 0.15, 0.25)))),
        {**record("ftkd_sparsebev", 0, 0.28, 0.18, 0.65), "breakdown": {"error": "ValueError: broken"}},
        record("teacher", 0, 0.40, 0.30, 0.50), record("teacher_future7", 0, 0.42, 0.31, 0.45),
        record("ftkd_future7_pvw_1e-5", 0, 0.34, 0.24, 0.52), record("teacher_r18", 0, 0.35, 0.25, 0.55),
        record("ftkd_future7_pvw_2e-6", 0, 0.36, 0.25, 0.50),
    ]
    for r in records:
        r["config"] = {"train": {"epochs": 6.0}, "model": {"backbone": {"depth": 18 if "r18" in r["stage"] else 34}},
                       "data": {"num_future_frames": 7 if "future7" in r["stage"] else 3}}
    folder = write(tmp_path / "acc", records)
    out, png = tmp_path / "docs" / "results.md", tmp_path / "docs" / "results" / "accuracy.png"
    assert report.main(["--results-dir", str(folder), "--out", str(out), "--png", str(png),
                        "--speed", str(tmp_path / "none.json")]) == 0
    text = out.read_text()
    for name in ("future_horizon.png", "capacity_future.png", "gain_breakdown.png"):
        assert (png.parent / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"](results/{name})" in text
    # the three studies are subsections of "Beyond the paper"
    beyond = text.split("## Beyond the paper")[1].split("\n## ")[0]
    assert [line for line in beyond.splitlines() if line.startswith("### ")] == [
        "### Where the gain lands", "### How much future", "### Is it the future or the teacher's size?"]
    gain = beyond.split("### Where the gain lands")[1].split("### How much future")[0]
    # 20-40 m: baseline 0.10, 0.12 -> 11.00 ± 1.41; distilled 0.14, 0.14; paired 0.04, 0.02 -> +3.00 ± 1.41 (n=2).
    assert "| 20-40 m | 20 | 11.00 ± 1.41 | — | — | 14.00 ± 0.00 | +3.00 ± 1.41 (n=2) |" in gain
    # > 40 m: seed 1 of the baseline has no ground truth there (mAP None): one pair only.
    assert "| > 40 m | 30 | 2.00 | — | — | 2.00 ± 1.41 | +1.00 (n=1) |" in gain
    assert "| visibility 0-40 % | 10 | 6.00 ± 1.41 | — | — | 9.50 ± 0.71 | +3.50 ± 0.71 (n=2) |" in gain
    assert "streampetr AP" not in gain  # no StreamPETR run: no table
    # per class, the classes with ground truth (car only): AP_car equals each record's mAP here; ftkd_sparsebev's
    # metrics have it although its breakdown failed
    assert "| AP car | 7 | 20.50 ± 0.71 | 18.00 | -2.00 (n=1) | 22.50 ± 0.71 | +2.00 ± 0.00 (n=2) |" in gain
    assert "| AP truck" not in gain and "| AP bus" not in gain
    assert ("Per class, told apart from seed noise (the test above): SparseBEV + FTKD, PV-FFR weight 1e-5, AP car: "
            "ΔAP_car +2.00 ± 0.00 (n=2).") in gain
    assert ("| 7 future frames | `teacher_future7` (ResNet-34, 7 future) | 1 | 42.00 | 31.00 | 0.450 | "
            "`ftkd_future7_pvw_1e-5` | 1 | 34.00 | 24.00 | 0.520 | +4.00 (n=1) | +2.00 (n=1) |") in beyond
    assert "| (b) student-size backbone, future | `teacher_r18` (ResNet-18, 3 future) | 1 | 35.00 |" in beyond
    assert "- Student, 7 vs 3 future frames: ΔNDS +2.00 (n=1), ΔmAVE -0.030 (n=1) (same direction, one seed" in beyond
    # the teachers' own step: teacher_future7 0.42 / 0.45 vs teacher 0.40 / 0.50 (seed 0)
    assert "- Teacher, 7 vs 3 future frames: ΔNDS +2.00 (n=1), ΔmAVE -0.050 (n=1) (same direction, one seed" in beyond
    assert beyond.index("- Teacher, 7 vs 3") < beyond.index("- Student, 1 vs 0")
    assert "- `teacher_future1`: 0 of 3 seed(s) (no run)" in text  # the studies need 3 seeds per row
    # the loss-balance check, seed 0: 0.36 - 0.34 and 0.36 - 0.32 NDS, 0.50 - 0.52 and 0.50 - 0.55 mAVE
    assert ("(`ftkd_future7_pvw_1e-5`): ΔNDS +2.00 (n=1), ΔmAVE -0.020 (n=1) (same direction, one seed (noise "
            "unknown)); vs the 3-future-frame teacher's student (`ftkd_pvw_1e-5`): ΔNDS +4.00 (n=1), ΔmAVE -0.050 "
            "(n=1) (same direction, one seed") in beyond
    # in plain words, counted by hand: of the horizon's 16 comparisons only ftkd_pvw_1e-5 vs baseline has 2 seeds
    # (NDS +0.02 twice: std 0, told apart; mAVE -0.05, -0.04: 0.045 < t(1) 12.71 x 0.0071 / sqrt(2) = 0.064, noise);
    # one seed: the two 7-vs-3 steps, the 7-frame student vs baseline (NDS, mAVE) and the two balance checks; the
    # other 8 share no seed.
    assert ("student NDS: 0: —, 1: —, 3: 32.50, 7: 34.00 (1 seed) (baseline student 30.50). Told apart from seed "
            "noise (the test above): student of the 3-future-frame teacher vs baseline: ΔNDS +2.00 ± 0.00 (n=2). "
            "Of the 16 comparisons, 1 within seed noise, 6 on one seed, 8 without a shared seed.") in beyond
    # the gain study: 7 subsets of ftkd_pvw_1e-5 (> 40 m on one seed, the rest within noise or exactly 0), and 7 of
    # ftkd_sparsebev, whose breakdown failed
    assert ("+1.00 (n=1) beyond 40 m and +3.50 ± 0.71 (n=2) at visibility 0-40 %. So far distillation moves the mAP "
            "of no distance band or visibility level by more than this benchmark's noise: none of its 14 paired "
            "comparisons passes the test above. Of the 14 comparisons, 6 within seed noise, 1 on one seed, 7 without "
            "a shared seed.") in gain
    assert load_benchmark("report_studies").gain_section({}, None)[0].startswith("No breakdown in the JSON files yet")


def test_the_studies_quote_each_students_kd_balance(load_benchmark):
    studies = load_benchmark("report_studies")

    def run(stage: str, ratio: float, pv: float, finished: bool = True) -> dict:
        return {"stage": stage, "seed": 0, "finished": finished,
                "last": {"kd_over_detection": ratio, "kd_weighted": {"loss_pv": pv, "loss_query": 4.0}}}

    balance = {"runs": [run("ftkd_pvw_1e-5", 0.5, 4.0), run("ftkd_pvw_1e-5", 0.7, 6.0),
                        run("ftkd_future7_pvw_1e-5", 1.4, 20.0), run("ftkd_future7_pvw_1e-5", 9.0, 99.0, False)]}
    text = studies.balance_text(balance, ["kd_nofuture_pvw_1e-5", "ftkd_pvw_1e-5", "ftkd_future7_pvw_1e-5"])
    # means over finished runs only: (0.5 + 0.7) / 2, (4 + 6) / 2; 20 / 5 = 4x
    assert "`ftkd_pvw_1e-5` 0.60 (PV 5.0, 2 runs), `ftkd_future7_pvw_1e-5` 1.40 (PV 20.0, 1 run)." in text
    assert "the PV term of `ftkd_future7_pvw_1e-5` is 4x that of `ftkd_pvw_1e-5`" in text
    assert "kd_nofuture" not in text
    assert studies.balance_text(None, ["ftkd_pvw_1e-5"]) == ""
    # a student at another PV-FFR weight (the horizon's balance check) is quoted with its weight and kept out of the
    # same-weight comparison: with its PV 4.0 counted, the ratio would read 5x that of it
    for entry in balance["runs"]:
        entry["kd_weights"] = {"loss_pv": 1e-5, "loss_query": 16.0}
    balance["runs"].append({**run("ftkd_future7_pvw_2e-6", 0.5, 4.0), "kd_weights": {"loss_pv": 2e-6}})
    horizon = studies.horizon_study({}, {}, balance)
    assert horizon[-1].endswith(
        "`ftkd_pvw_1e-5` 0.60 (PV 5.0, 2 runs), `ftkd_future7_pvw_1e-5` 1.40 (PV 20.0, 1 run), `ftkd_future7_pvw_2e-6` "
        "0.50 (PV 4.0 at PV-FFR weight 2e-6, 1 run). At the same PV-FFR weight the PV term of `ftkd_future7_pvw_1e-5` "
        "is 4x that of `ftkd_pvw_1e-5`: the weight was chosen with the 3-future-frame teacher, and the size of the PV "
        "term (how far the student's reconstruction is from the teacher's features) differs between teachers.")


def test_a_conclusion_keeps_its_caveat_while_a_compared_row_has_fewer_than_3_seeds(report, load_benchmark,
                                                                                  tmp_path):
    studies = load_benchmark("report_studies")
    base = [record("sparsebev", seed, nds, 0.2, 0.6) for seed, nds in ((0, 0.30), (1, 0.32), (2, 0.29))]
    distilled = [record("ftkd_pvw_1e-5", seed, nds, 0.2, 0.6) for seed, nds in ((0, 0.31), (1, 0.30), (2, 0.31))]
    comparisons = [("distilled vs baseline", "ftkd_pvw_1e-5", "sparsebev", "NDS")]
    rows, _, _ = report.load_records(write(tmp_path / "three", base + distilled), "bench")
    three = studies.in_plain_words(rows, comparisons, "nothing moves")
    # +0.33 ± 2.08 NDS over 3 seeds: within noise, and both rows have the protocol's 3 seeds
    assert "Of the 1 comparisons, 1 within seed noise." in three and "can still change" not in three
    rows, _, _ = report.load_records(write(tmp_path / "two", base + distilled[:2]), "bench")
    two = studies.in_plain_words(rows, comparisons, "nothing moves")
    assert "1 within seed noise. The rows with fewer than 3 seeds can still change this." in two


def test_a_rerun_of_the_same_seed_is_compared_with_the_earlier_run(report, tmp_path):
    ddp_run = record("kd_mgd", 1, 0.25, 0.1, 0.7)
    ddp_run["train"] = {**ddp_run.get("train", {}), "processes": 2}
    folder = write(tmp_path / "acc", [record("sparsebev", 0, 0.30, 0.20, 0.60), ddp_run])
    earlier_run = record("sparsebev", 0, 0.27, 0.18, 0.62)
    earlier_run["environment"]["commit"] = "fedcba9876543210"
    write(folder / "earlier", [earlier_run, record("kd_mgd", 2, 0.2, 0.1, 0.7)])  # kd_mgd seed 2: no rerun
    write(folder / "earlier" / "session1", [record("kd_mgd", 1, 0.26, 0.1, 0.7)])
    out = tmp_path / "results.md"
    assert report.main(["--results-dir", str(folder), "--out", str(out), "--png", str(tmp_path / "a.png"),
                        "--loss-balance"]) == 0
    text = out.read_text()
    assert "| sparsebev | 0 | fedcba98 | 01234567 | 27.00 → 30.00 | 18.00 → 20.00 | 0.620 → 0.600 | +3.00 |" in text
    section = text.split("## The same seed in two sessions")[1].split("##")[0]
    assert "| kd_mgd | 1 | 01234567 | 01234567 (2 processes) | 26.00 → 25.00 |" in section  # torchrun run marked
    assert "| kd_mgd | 2 |" not in section


def with_split_half(entry: dict, h1: dict[str, float], h2: dict[str, float]) -> dict:
    """`entry` with the `split_half` block of benchmarks/accuracy.py (only the fields the report reads)."""
    halves = [{**h, "num_gt": 100 + i} for i, h in enumerate((h1, h2))]
    return {**entry, "split_half": {"scenes": [["scene-0040", "scene-0041"], ["scene-0042", "scene-0043"]],
                                    "halves": halves, "split": "synth_val"}}


def test_evaluation_noise_from_split_halves(report, tmp_path):
    """Hand-made halves of two stages whose systematic half differences differ (+0.02 and +0.10): the spread is taken
    within each stage and pooled (a global spread would count the 0.08 between them as evaluation noise)."""
    nds = {("sparsebev", 0): 0.30, ("sparsebev", 1): 0.31, ("sparsebev", 2): 0.29,
           ("ftkd_sparsebev", 0): 0.32, ("ftkd_sparsebev", 1): 0.335, ("ftkd_sparsebev", 2): 0.31}
    nds_diffs = {("sparsebev", 0): 0.02, ("sparsebev", 1): 0.04, ("sparsebev", 2): 0.00,
                 ("ftkd_sparsebev", 0): 0.09, ("ftkd_sparsebev", 1): 0.11}
    records = []
    for (stage, seed), value in nds.items():
        entry = record(stage, seed, value, 0.20, 0.60)
        if (stage, seed) in nds_diffs:
            d = nds_diffs[(stage, seed)]
            entry = with_split_half(entry, {"NDS": value + d / 2, "mAP": 0.21 + d, "mAVE": 0.6},
                                    {"NDS": value - d / 2, "mAP": 0.21, "mAVE": None})
        records.append(entry)
    rows, _, _ = report.load_records(write(tmp_path / "acc", records), "bench")
    text = "\n".join(report.eval_noise_section(rows))
    # within sparsebev: (0.02, 0.04, 0.00) around 0.02 -> 2 * 0.02^2; within ftkd: (0.09, 0.11) around 0.10 ->
    # 2 * 0.01^2; 5 runs - 2 stage means = 3 degrees of freedom
    within = math.sqrt((2 * 0.02 ** 2 + 2 * 0.01 ** 2) / 3)
    evaluation = within / 2
    # pooled seed std: sparsebev variance 0.0001; ftkd_sparsebev variance of (0.32, 0.335, 0.31)
    ftkd_mean = (0.32 + 0.335 + 0.31) / 3
    ftkd_var = sum((v - ftkd_mean) ** 2 for v in (0.32, 0.335, 0.31)) / 2
    seed = math.sqrt((0.0001 + ftkd_var) / 2)
    share = evaluation ** 2 / seed ** 2
    assert 0.5 < share < 1.0  # built to land between one half and all
    row = (f"| NDS | 5 (2 stages) | +2.00 to +10.00 | {within * 100:.2f} | 3 | {evaluation * 100:.2f} | "
           f"{seed * 100:.2f} (2 rows) | {share * 100:.0f} % |")
    assert row in text
    assert "| mAP | 5 (2 stages) | +2.00 to +10.00 | " in text and "| 0.00 (2 rows) | — |" in text  # mAP 0.20 always
    assert "| mAVE |" not in text  # no run has mAVE in both halves
    assert "2 scenes with 100 GT boxes and 2 scenes with 101 GT boxes" in text
    assert (f"**Evaluation sampling dominates**: the finite validation set accounts for about {share * 100:.0f} %"
            in text)
    assert f"would leave a seed std of about {math.sqrt(seed ** 2 - evaluation ** 2) * 100:.2f} NDS" in text
    # One run per stage leaves no degree of freedom: the section asks for repeated seeds.
    single = [r for r in records if "split_half" not in r or r["seed"] == 0]
    rows, _, _ = report.load_records(write(tmp_path / "single", single), "bench")
    assert report.eval_noise_section(rows)[0].startswith("Needs the split-half evaluation of at least 3 runs (2 so far)")
    three = [r for r in records if "split_half" not in r or r["stage"] == "sparsebev" or r["seed"] == 0]
    rows, _, _ = report.load_records(write(tmp_path / "three", three), "bench")  # 4 runs, 2 stages: 2 dof
    assert "| NDS | 4 (2 stages) |" in "\n".join(report.eval_noise_section(rows))
    page = report.build_markdown(rows, [], None, "a.png", "x", "bench", [])
    assert page.index("## How noisy is one evaluation") < page.index("## The same seed in two sessions")


def test_split_half_is_recorded_or_its_error_is(accuracy, tmp_path, synth_root):
    """Benchmark.split_half on a run folder's results_final.json (no detections: every AP 0): two halves of the
    tiny train split's 3 scenes; the tiny val split (1 scene) cannot be halved and records the error."""
    from ftkd.data.results import write_result_records
    from ftkd.engine.evaluation import load_nuscenes, split_sample_tokens

    benchmark = make_benchmark(accuracy, tmp_path, dataroot=str(synth_root), set=["data.val_split=synth_train"])
    stage = accuracy.STAGES["sparsebev"]
    config = benchmark.resolved_config(stage, benchmark.command_argv(stage))
    run = tmp_path / "run"
    tokens = split_sample_tokens(load_nuscenes(synth_root, config.data.version), "synth_train")
    write_result_records({}, run / "results_final.json", sample_tokens=tokens)
    out = benchmark.split_half(run, config)
    assert [len(scenes) for scenes in out["scenes"]] == [1, 2]
    assert all(half["num_gt"] > 0 and half["mAP"] == 0.0 and half["num_pred"] == 0 for half in out["halves"])
    val = make_benchmark(accuracy, tmp_path, dataroot=str(synth_root))
    broken = val.split_half(run, val.resolved_config(stage, val.command_argv(stage)))
    assert list(broken) == ["error"] and "has 1 scene(s)" in broken["error"]


def test_online_parity_is_recorded_or_its_error_is(accuracy, tmp_path, synth_root):
    """Benchmark.online_parity on a run folder's final.pt (on the CPU: the eager modes), and without one."""
    from ftkd.config import load_config
    from ftkd.engine.checkpoint import config_to_json, save_checkpoint
    from ftkd.models.build import build_model

    benchmark = make_benchmark(accuracy, tmp_path, dataroot=str(synth_root))
    stage = accuracy.STAGES["sparsebev"]
    assert stage.name in accuracy.ONLINE_PARITY_STAGES
    config = benchmark.resolved_config(stage, benchmark.command_argv(stage))
    run = tmp_path / "run"
    assert list(benchmark.online_parity(run, config)) == ["error"]  # no checkpoint yet: recorded, not raised
    tiny = load_config(accuracy.ROOT / "configs" / "sparsebev_tiny.yaml",
                       [f"data.dataroot={synth_root}", "data.image_size=[32,96]"])
    save_checkpoint({"config": config_to_json(tiny), "model": build_model(tiny.model).state_dict()},
                    run / "checkpoints" / "final.pt")
    out = benchmark.online_parity(run, config)
    assert list(out["modes"]) == ["fp32", "bf16_weights"] and out["split"] == config.data.val_split
    assert (run / "online_parity" / "bf16_weights" / "metrics.json").is_file()


def test_velocity_note_names_the_class_that_crossed_the_recall_floor(report):
    """Hand-made teachers: the long one detects motorcycles (velocity error 5) where the short one scored the capped
    1; its mAVE is higher only through that class."""
    def teacher(stage: str, seed: int, moto: float, car: float) -> dict:
        entry = record(stage, seed, 0.3, 0.1, 0.0)
        errors = {"car": car, "motorcycle": moto, "bus": 1.0, "traffic_cone": None}
        entry["metrics"]["per_class_TP"] = {c: {"vel_err": v} for c, v in errors.items()}
        entry["metrics"]["mAVE"] = (car + moto + 1.0) / 3
        entry["metrics"]["per_class_AP"]["motorcycle"] = 0.002 if moto != 1.0 else 0.0
        return entry

    long = report.Row("teacher_long", {0: teacher("teacher_long", 0, 5.0, 0.5), 1: teacher("teacher_long", 1, 6.0, 0.6)})
    short = report.Row("teacher", {0: teacher("teacher", 0, 1.0, 0.7)})
    note = report.velocity_note(long, short)
    assert "motorcycle (AP 0.20 %, velocity error 5.50 m/s)" in note
    # the other classes measured in both: car only (0.55 vs 0.7); bus is capped at 1 in both, traffic_cone has none
    assert "0.550 and 0.700 m/s" in note
    assert report.velocity_note(short, long) == ""  # lower mAVE: nothing to explain


def test_the_page_lists_every_stage_of_the_protocol_once(report, accuracy):
    """report.ALL_STAGES (the page's order) names each stage of accuracy_stages.STAGES but `data`, exactly once."""
    assert sorted(report.ALL_STAGES) == sorted(name for name in accuracy.STAGES if name != "data")
    assert len(set(report.ALL_STAGES)) == len(report.ALL_STAGES)


def test_online_parity_section_reads_records_and_files(report, tmp_path):
    parity = {"device": "NVIDIA H100", "split": "synth_val", "num_samples": 80, "max_abs_logit": 5.0,
              "modes": {"fp32": {"NDS": 0.2, "mAP": 0.07, "mAVE": 0.6, "seconds": 3.0},
                        "bf16_weights": {"NDS": 0.199, "mAP": 0.069, "mAVE": 0.61, "seconds": 2.0,
                                         "max_abs_logit_diff": 0.25, "median_max_abs_logit_diff": 0.03}}}
    entry = record("sparsebev", 0, 0.20, 0.07, 0.60)
    rows, _, _ = report.load_records(write(tmp_path / "res", [{**entry, "online_parity": parity}]), "bench")
    page = report.build_markdown(rows, [], None, "x.png", "res", "bench", [],
                                 parities=[("online_parity_cpu_tiny", {**parity, "device": "cpu", "note": "tiny"})])
    section = page.split("## Online inference options on a trained student")[1].split("\n## ")[0]
    assert "| sparsebev seed 0 (bench) | bf16_weights | 19.90 | 6.90 | 0.610 | 0.250 (median 0.030) | 2.0 |" in section
    assert "| online_parity_cpu_tiny | fp32 | 20.00 | 7.00 | 0.600 | reference | 3.0 |" in section
    assert "- online_parity_cpu_tiny: cpu, split synth_val (80 samples), largest fp32 |logit| 5.00. tiny" in section
    empty = report.build_markdown({}, [], None, "x.png", "res", "bench", [])
    assert "No online parity measurement yet" in empty


def test_streampetr_explanation_quotes_the_attention_lift_of_both_runs(report, tmp_path):
    def streampetr(stage: str, lift: float | None) -> dict:
        entry = record(stage, 0, 0.04, 0.001, 0.97)
        geometry = {"split": "synth_val", "frames": 16, "radius_m": 2.0, "attention_lift": lift,
                    "attention_mass_near": 0.02 * (lift or 0), "token_fraction_near": 0.02, "image_dependence": 0.5}
        return {**entry, "attention_geometry": geometry} if lift is not None else entry

    rows, _, _ = report.load_records(write(tmp_path / "both", [streampetr("streampetr", 1.1),
                                                                streampetr("streampetr_bs16_e48", 2.6)]), "bench")
    page = report.build_markdown(rows, [], None, "x.png", "res", "bench", [])
    assert "at the recipe's global batch 16 for 48 epochs (4x the samples) 0.10 %" in page
    assert "attention lift 2.60 against 1.10" in page
    rows, _, _ = report.load_records(write(tmp_path / "one", [streampetr("streampetr", None),
                                                               streampetr("streampetr_bs16_e48", 2.6)]), "bench")
    assert "starts to find the objects" not in report.build_markdown(rows, [], None, "x.png", "res", "bench", [])


def test_attention_section_names_the_radius_its_rows_used(report):
    def measured(radius: float) -> dict:
        return {"split": "synth_val", "frames": 16, "radius_m": radius, "attention_lift": 1.0,
                "attention_mass_near": 0.02, "token_fraction_near": 0.02, "image_dependence": 0.5}

    assert "passes within 2 m of that centre" in "\n".join(report.attention_section([("a", measured(2.0))]))
    mixed = "\n".join(report.attention_section([("a", measured(2.0)), ("b", measured(3.0))]))
    assert "passes within the row's radius (2, 3 m) of that centre" in mixed


def test_paired_gap_sentence_says_when_evaluation_noise_covers_it(report, tmp_path):
    """The FTKD − baseline paired NDS difference is set against the noise of its two evaluations: where that noise
    reaches the difference's own std, the page says so instead of quoting a zero remainder."""
    def page(name: str, spreads: tuple[float, ...], ftkd: tuple[float, ...]) -> str:
        records = []
        for seed, (base, spread) in enumerate(zip((0.30, 0.31, 0.29), spreads)):
            records.append(with_split_half(record("sparsebev", seed, base, 0.20, 0.60),
                                           {"NDS": base + spread / 2, "mAP": 0.2, "mAVE": 0.6},
                                           {"NDS": base - spread / 2, "mAP": 0.2, "mAVE": 0.6}))
            records.append(record("ftkd_pvw_1e-5", seed, ftkd[seed], 0.20, 0.60))
        rows, _, _ = report.load_records(write(tmp_path / name, records), "bench")
        return "\n".join(report.eval_noise_section(rows))

    # half differences 0, 0.1, 0.2: within std 0.1, evaluation std 0.05; paired differences all 0.01 (std 0)
    assert "that alone could explain all of its spread." in page("noisy", (0.0, 0.1, 0.2), (0.31, 0.32, 0.30))
    # half differences 0, 0.002, 0.004: evaluation std 0.001; paired differences 0.01, 0.03, -0.01 (std 0.02)
    noise = math.sqrt(2) * 0.001
    rest = math.sqrt(0.02 ** 2 - noise ** 2)
    text = page("quiet", (0.0, 0.002, 0.004), (0.31, 0.34, 0.28))
    assert f"add at most about {noise * 100:.2f}" in text
    assert f"without them its std would be about {rest * 100:.2f}." in text


def test_the_seed0_variants_are_set_against_the_baselines_seed_spread(report, tmp_path):
    """Hand-computed: variants at seed 0 of 18, 20, 22 NDS (mean 20, std 2) against a baseline of 17, 19, 21 over
    seeds (mean 19, std 2) whose seed 0 is its lowest; a stage that is not a balanced-weight variant is left out."""
    records = [record("sparsebev", seed, nds, 0.05, 0.6) for seed, nds in ((0, 0.17), (1, 0.19), (2, 0.21))]
    records += [record(stage, 0, nds, 0.05, 0.6) for stage, nds in
                (("kd_fitnet", 0.18), ("abl_query_fld", 0.20), ("tsa_learned_pvw_1e-5", 0.22), ("kd_mgd", 0.05))]
    folder = write(tmp_path / "acc", records)
    out = tmp_path / "results.md"
    assert report.main(["--results-dir", str(folder), "--out", str(out), "--png", str(tmp_path / "a.png")]) == 0
    line = next(l for l in out.read_text().splitlines() if "KD variants are indistinguishable" in l)
    assert "The 3 SparseBEV students" in line and "reach 18.00-22.00 NDS, mean 20.00, std 2.00" in line
    assert "spans 17.00-21.00 over its 3 seeds (std 2.00, mean 19.00)" in line
    assert "is the lowest of its 3 (17.00)" in line and "differ by +1.00 NDS on average" in line
    assert "standard error of that mean alone is 1.15" in line  # 2 / sqrt(3)
