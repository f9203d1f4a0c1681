"""benchmarks/lanes.py: item parsing and the queue's dependency rules (which item a lane may take, and when)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def lanes(load_benchmark):
    return load_benchmark("lanes")


def test_items_expand_seed_ranges_in_order(lanes):
    items = lanes.parse_items(["teacher:0-2", "ftkd_sparsebev:1", "teacher:1", "kd_mgd"])
    assert [(i.stage, i.seed) for i in items] == [("teacher", 0), ("teacher", 1), ("teacher", 2),
                                                  ("ftkd_sparsebev", 1), ("kd_mgd", 0)]
    with pytest.raises(SystemExit, match="unknown stage 'nope'"):
        lanes.parse_items(["nope:0"])
    with pytest.raises(SystemExit, match="stage:first-last"):
        lanes.parse_items(["teacher:a-b"])


def test_students_wait_for_their_teacher_of_the_same_seed(lanes):
    queue = lanes.Queue(lanes.parse_items(["teacher:0", "ftkd_sparsebev:0", "sparsebev:0", "kd_nofuture:0"]))
    first = queue.take("a")
    assert (first.stage, first.state) == ("teacher", "running")
    second = queue.take("b")  # ftkd_sparsebev waits for teacher 0; kd_nofuture's teacher is not listed: it may run
    assert second.stage == "sparsebev"
    third = queue.take("c")
    assert third.stage == "kd_nofuture"  # accuracy.py trains its missing teacher_nofuture itself
    assert queue.take("d") == "wait"  # only ftkd_sparsebev is left, and its teacher is running
    first.state = "done"
    assert queue.take("d").stage == "ftkd_sparsebev"
    for item in queue.items:
        item.state = "done"
    assert queue.take("a") is None


def test_students_of_a_failed_teacher_are_skipped(lanes):
    queue = lanes.Queue(lanes.parse_items(["teacher:1", "ftkd_streampetr:1", "mask_0.4_pvw_1e-5:1"]))
    teacher = queue.take("a")
    teacher.state = "stopped"  # the deadline ended it
    assert queue.take("a") is None
    assert [i.state for i in queue.items] == ["stopped", "skipped", "skipped"]


def test_the_record_names_the_environment(lanes, tmp_path):
    queue = lanes.Queue(lanes.parse_items(["sparsebev:0"]), {"device": "NVIDIA H100 80GB HBM3", "commit": "abc"})
    queue.take("gpu0.0")
    queue.write(tmp_path / "lanes.json")
    record = json.loads((tmp_path / "lanes.json").read_text())
    assert record["environment"]["device"] == "NVIDIA H100 80GB HBM3"
    assert [(i["stage"], i["state"], i["lane"]) for i in record["items"]] == [("sparsebev", "running", "gpu0.0")]


def test_an_item_starts_only_if_it_should_end_before_the_deadline(lanes):
    items = lanes.parse_items(["teacher_long:0", "sparsebev:0-1", "streampetr:0"])
    queue = lanes.Queue(items, estimates=lanes.parse_estimates(["teacher_long=900"]), default_estimate_s=400.0)
    assert queue.take("a", time_left=500.0).stage == "sparsebev"  # teacher_long (900 s) does not fit in 500 s
    first = queue.items[1]
    first.state, first.seconds = "done", 300.0  # measured: sparsebev takes 300 s, not 400
    assert queue.expected_s("sparsebev") == 300.0 and queue.expected_s("streampetr") == 400.0
    assert queue.take("b", time_left=350.0).stage == "sparsebev"  # fits by its measured time
    assert queue.take("c", time_left=350.0) == "wait"  # nothing else fits; an item is still running
    assert queue.take("c", time_left=1000.0).stage == "teacher_long"
    with pytest.raises(SystemExit, match="unknown stage 'nope'"):
        lanes.parse_estimates(["nope=3"])
    with pytest.raises(SystemExit, match="STAGE=SECONDS"):
        lanes.parse_estimates(["teacher=long"])


def test_a_stage_initialised_from_another_waits_for_it(lanes):
    queue = lanes.Queue(lanes.parse_items(["streampetr_sparsebev_init:0", "sparsebev:0"]))
    first = queue.take("a")
    assert first.stage == "sparsebev"  # the StreamPETR item needs sparsebev seed 0's checkpoint first
    assert queue.take("b") == "wait"
    first.state = "done"
    assert queue.take("b").stage == "streampetr_sparsebev_init"


def test_patience_keeps_a_lane_for_an_earlier_item_whose_teacher_ends_soon(lanes):
    def queue_at(patience_s: float):
        queue = lanes.Queue(lanes.parse_items(["teacher:0", "ftkd_sparsebev:0", "sparsebev:0-1"]),
                            estimates={"teacher": 500.0, "sparsebev": 300.0}, default_estimate_s=400.0,
                            patience_s=patience_s)
        assert queue.take("a", now=0.0).stage == "teacher"
        assert queue.take("b", now=0.0).name == "sparsebev_seed0"  # the teacher ends in 500 s: not worth waiting
        return queue

    patient = queue_at(100.0)
    assert patient.take("c", now=450.0) == "wait"  # the teacher should end in 50 s: keep the lane for its student
    assert patient.take("c", time_left=420.0, now=450.0).name == "sparsebev_seed1"  # the student would not fit
    assert queue_at(100.0).take("c", now=350.0).name == "sparsebev_seed1"  # 150 s is longer than the patience
    assert queue_at(0.0).take("c", now=450.0).name == "sparsebev_seed1"  # without patience: the first ready item
    overdue = queue_at(100.0)  # the teacher has run 550 s of its expected 500: its end is unknown
    assert overdue.take("c", now=550.0).name == "sparsebev_seed1"
    late = queue_at(100.0)
    late.items[0].state = "done"
    assert late.take("c", now=520.0).stage == "ftkd_sparsebev"


def test_the_gpu_sessions_lists_name_real_stages(lanes):
    """The plans of benchmarks/gpu_session.sh parse, before a GPU session spends device time on a typo: every item
    names a stage, a THEN item's teacher is trained by its plan's FIRST items or earlier in THEN, FALLBACK items need
    nothing from FIRST (a FALLBACK student's teacher comes earlier in FALLBACK), FIRST fits 2 GPUs at one run per GPU,
    and the long StreamPETR run has its own estimate (the 400-s default would start it where it cannot end)."""
    import re
    from pathlib import Path

    script = (Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_session.sh").read_text()
    standalone = re.search(r'^STANDALONE="([^"]*)"', script, re.MULTILINE).group(1)
    script = script.replace("$STANDALONE", f'"{standalone}"')
    plans = re.findall(r'^\s*(\S+)\) PLAN_FIRST="([^"]*)"\s+PLAN_THEN="([^"]*)" ;;', script, re.MULTILINE)
    assert [plan[0] for plan in plans] == ["4", "*"]
    fallback = re.search(r'^FALLBACK=\$\{FALLBACK-"([^"]*)"\}', script, re.MULTILINE).group(1)
    fallback_items = lanes.parse_items(fallback.split())
    assert fallback_items
    trained_by_fallback = set()
    for item in fallback_items:
        assert not item.needs or (item.needs, item.seed) in trained_by_fallback, \
            f"{item.name}: its teacher is not earlier in FALLBACK"
        trained_by_fallback.add((item.stage, item.seed))
    for name, first, then in plans:
        first_items, then_items = lanes.parse_items(first.split()), lanes.parse_items(then.split())
        assert then_items, f"plan {name}: nothing to train"
        trained = {(i.stage, i.seed) for i in first_items}
        for item in then_items:
            assert not item.needs or (item.needs, item.seed) in trained, \
                f"plan {name}, {item.name}: its teacher is not among FIRST's items or earlier in THEN"
            trained.add((item.stage, item.seed))
        assert len(first_items) <= 2, f"plan {name}: more FIRST items than GPUs (one run per GPU)"
    expect = re.search(r'^EXPECT=\$\{EXPECT:-"([^"]*)"', script, re.MULTILINE).group(1).split()
    estimates = lanes.parse_estimates(expect[expect.index("--expect") + 1:])
    assert estimates["streampetr_bs16_e96"] > 1000 and estimates["teacher_future7"] > 0


def test_a_lane_of_several_gpus_runs_its_items_under_torchrun(lanes):
    import argparse
    import sys

    assert lanes.lane_groups("0,1,2,3", 1) == ["0", "1", "2", "3"]
    assert lanes.lane_groups("0,1,2,3", 2) == ["0,1", "2,3"]
    assert lanes.lane_groups("0,1,2,3", 4) == ["0,1,2,3"]
    with pytest.raises(SystemExit, match="--gpus-per-lane 3: expected a divisor of the 4 GPUs"):
        lanes.lane_groups("0,1,2,3", 3)
    args = argparse.Namespace(profile="bench", out_json_dir="j", runs_dir="r", loader_workers=6, dataroot=None,
                              commit="abc", one_chunk=False)
    item = lanes.Item("teacher", 1)
    single = lanes.item_command(item, "2", 300.4, args)
    assert single[0] == sys.executable and single[1].endswith("benchmarks/accuracy.py")
    assert single[2:6] == ["teacher", "--seed", "1", "--profile"] and "300" in single
    ddp = lanes.item_command(item, "0,1", 300.4, args)
    assert ddp[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert ddp[5:] == single[1:]
    assert "--one-chunk" not in single
    args.one_chunk = True
    assert lanes.item_command(item, "2", 300.4, args)[-1] == "--one-chunk"
