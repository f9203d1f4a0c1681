"""benchmarks/scaling.py: its arithmetic on hand-written logs (median after warm-up, efficiency, windowed loss
agreement), the commands it builds, skipping GPU counts that are not there, and (slow, ~45 s on 2 cores) the real
thing on the CPU: torchrun with 1 and 2 gloo processes plus 1 process with 2-fold accumulation, tiny FTKD config."""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scaling(load_benchmark):
    return load_benchmark("scaling")


def write_log(path: Path, ms: list[float], losses: list[float], memory_gb: float | None = None) -> Path:
    """A log.jsonl as the trainer writes it with log_every=1: header, one train line per step, an eval line."""
    train = []
    for step, (m, loss) in enumerate(zip(ms, losses), 1):
        record = {"kind": "train", "step": step, "loss": loss, "ms_per_step": m, "data_ms_per_step": m / 10}
        if memory_gb is not None:
            record["max_memory_gb"] = memory_gb * step / len(ms)
        train.append(record)
    # train lines out of order, to check the reader sorts them by step
    lines = [{"kind": "header", "device_name": "Test GPU", "world_size": 2}, *reversed(train)]
    lines.append({"kind": "eval", "step": len(ms), "NDS": 0.1})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_median_step_time_leaves_out_the_warm_up_window(scaling, tmp_path):
    log = write_log(tmp_path / "log.jsonl", [1000, 900, 100, 300, 200, 400], [5, 4, 3, 2, 1, 1], memory_gb=1.5)
    records = scaling.read_train_records(log)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]  # sorted, eval and header lines left out
    assert scaling.read_header(log)["device_name"] == "Test GPU"
    assert scaling.median_step_ms(records, 2) == 250.0  # median of 100, 300, 200, 400
    row = scaling.summarise_run(records, global_batch=2, warmup_steps=2)
    assert row["samples_per_s"] == pytest.approx(2 * 1000 / 250)
    assert row["mean_ms_per_step"] == pytest.approx(250.0)
    assert row["median_data_ms_per_step"] == pytest.approx(25.0)
    assert row["peak_memory_mib_rank0"] == pytest.approx(1.5 * 1024)
    assert row["loss"] == [5, 4, 3, 2, 1, 1] and row["timed_steps"] == 4
    with pytest.raises(ValueError, match="no timed step after the 6 warm-up steps"):
        scaling.median_step_ms(records, 6)


def test_scaling_efficiency(scaling):
    assert scaling.scaling_efficiency(4.0, 1, 4.0) == 1.0
    assert scaling.scaling_efficiency(6.0, 2, 4.0) == 0.75  # 2 GPUs give 1.5x the samples/s of one
    assert scaling.scaling_efficiency(16.0, 4, 4.0) == 1.0


def test_window_statistics_by_hand(scaling):
    stats = scaling.window_stats([1.0, 3.0, 5.0, 7.0, 9.0], 2)  # the tail (9) is dropped
    assert stats == [(2.0, pytest.approx(1.0)), (6.0, pytest.approx(1.0))]  # std([1, 3]) = sqrt(2), / sqrt(2)
    with pytest.raises(ValueError, match="window: expected >= 2"):
        scaling.window_stats([1.0, 2.0], 1)


def test_loss_agreement_within_and_outside_noise(scaling):
    agree = scaling.loss_agreement([10.0, 12.0, 20.0, 22.0], [10.0, 10.0, 20.0, 20.0], 2)
    # window means 11 / 10 and 21 / 20: relative differences 0.1 and 0.05; noise sqrt(1^2 + 0^2) / 10 and / 20
    assert agree["window_rel_diff"] == pytest.approx([0.1, 0.05])
    assert agree["mean_abs_rel_diff"] == pytest.approx(0.075)
    assert agree["noise_rel"] == pytest.approx(0.075)
    assert agree["within_noise"] is True
    assert agree["paired_step_mean_rel_diff"] == pytest.approx(statistics.fmean([0.0, 0.2, 0.0, 0.1]))
    # a curve 1.5x higher with little step-to-step noise is not within noise
    one = [10.0, 10.2, 10.0, 10.2]
    apart = scaling.loss_agreement([1.5 * x for x in one], one, 2)
    assert apart["mean_abs_rel_diff"] == pytest.approx(0.5) and apart["within_noise"] is False
    with pytest.raises(ValueError, match="at least one window of 4 steps"):
        scaling.loss_agreement([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 4)


def test_commands_split_the_global_batch_over_processes_or_accumulation(scaling, tmp_path):
    args = scaling.parse_args(["--profile", "tiny", "--steps", "10", "--window", "2", "--device", "cpu",
                               "--work-dir", str(tmp_path), "--set", "distill.match_teacher_topk=50"])  # fmt: skip
    ddp = scaling.build_command(args, "configs/ftkd_sparsebev_tiny.yaml", "t.pt", 4, 1, tmp_path / "n4")
    accum = scaling.build_command(args, "configs/ftkd_sparsebev_tiny.yaml", "t.pt", 1, 4, tmp_path / "acc")
    assert "--nproc_per_node=4" in ddp and "--nproc_per_node=1" in accum
    for command, accumulation in ((ddp, 1), (accum, 4)):
        assert command[command.index("-m", 3) + 1 : command.index("-m", 3) + 4] == ["ftkd", "distill",
                                                                                     "configs/ftkd_sparsebev_tiny.yaml"]
        overrides = command[command.index("--set") + 1 :]
        assert {"train.global_batch=4", f"train.grad_accum={accumulation}", "data.batch_size=1", "train.max_steps=10",
                "train.log_every=1", "train.final_eval=false", "train.device=cpu",
                "distill.match_teacher_topk=50"} <= set(overrides)  # fmt: skip
        assert "--skip-data-check" in command and command[command.index("--teacher") + 1] == "t.pt"
    with pytest.raises(SystemExit):
        scaling.parse_args(["--steps", "3", "--window", "3"])  # no step left after the warm-up window


def test_gpu_counts_beyond_the_visible_ones_are_skipped(scaling, tmp_path):
    out = tmp_path / "scaling.json"
    code = scaling.main(["--gpus", "4096,8192", "--teacher", str(tmp_path / "never_read.pt"), "--out", str(out),
                         "--work-dir", str(tmp_path / "runs")])  # fmt: skip
    record = json.loads(out.read_text())
    assert code == 1  # nothing measured
    assert [row["skipped"] for row in record["rows"]] == [
        f"skipped: {n} GPUs asked for, {record['gpus_available']} visible" for n in (4096, 8192)
    ]
    assert record["agreement"]["status"].startswith("not run")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_torchrun_with_one_and_two_gloo_processes_on_the_tiny_config(scaling, synth_root, tmp_path):
    """The whole script on the CPU (~45 s on 2 cores): 3 torchrun launches of the tiny FTKD student + random teacher."""
    out = tmp_path / "scaling.json"
    code = scaling.main(["--profile", "tiny", "--device", "cpu", "--gpus", "1,2", "--dataroot", str(synth_root),
                         "--steps", "4", "--window", "2", "--work-dir", str(tmp_path / "runs"), "--out", str(out),
                         "--budget-s", "300"])  # fmt: skip
    record = json.loads(out.read_text())
    assert code == 0, record
    rows = {row["processes"]: row for row in record["rows"]}
    assert sorted(rows) == [1, 2] and all(row["ok"] for row in rows.values())
    for n, row in rows.items():
        assert row["global_batch"] == n and row["samples_per_s"] > 0 and row["timed_steps"] == 2
        assert f"--nproc_per_node={n}" in row["command"] and len(row["loss"]) == 4
        assert all(math.isfinite(x) and x > 0 for x in row["loss"])
    assert rows[1]["efficiency"] == 1.0 and rows[2]["efficiency"] > 0
    assert "random weights" in record["teacher"] and record["device_name"]
    agreement = record["agreement"]
    assert agreement["processes"] == 2 and agreement["reference_run"]["grad_accum"] == 2
    assert agreement["windows"] == 2 and math.isfinite(agreement["mean_abs_rel_diff"]) and not agreement["partial"]
    # step 1 runs the same weights on the same two samples: only the random masks differ between the runs
    first_step = abs(rows[2]["loss"][0] - agreement["reference_run"]["loss"][0]) / agreement["reference_run"]["loss"][0]
    assert first_step < 0.05
    # every process wrote nothing but rank 0's files: one log, one checkpoint
    assert sorted(p.name for p in (tmp_path / "runs/n2/checkpoints").iterdir()) == ["last.pt"]


def _unused_output_worker(rank: int, world_size: int, port: int, out_dir: Path) -> None:
    """One gloo process training a toy objective whose output holds a tensor no loss uses."""
    import dataclasses
    import os

    import torch
    from torch import nn

    sys.path.insert(0, str(ROOT / "tests" / "engine"))
    from toy_objective import ToyObjective, leave_worker, toy_loader

    from ftkd.config import load_config
    from ftkd.engine import distributed
    from ftkd.engine.trainer import Trainer
    from ftkd.utils.seed import seed_everything

    @dataclasses.dataclass
    class Output:  # a dataclass like DetectorOutput (DDP looks into dataclasses for tensors)
        pred: torch.Tensor
        extra: torch.Tensor

    class UnusedOutputObjective(ToyObjective):
        """Like StreamPETR's stride-32 FPN level outside distillation: a parameter feeds an output, not a loss."""

        def __init__(self) -> None:
            super().__init__(dropout=0.0)
            self.extra = nn.Linear(9, 4)

        def forward(self, batch):
            losses, pred = super().forward(batch)
            return losses, Output(pred, self.extra(pred))

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    overrides = [f"train.out_dir={out_dir}", "train.device=cpu", "train.final_eval=false", "train.progress_bar=false",
                 "train.log_every=1", "train.global_batch=4", "train.max_steps=3", "train.find_unused_parameters=true"]
    config = load_config(None, overrides)
    seed_everything(0)
    try:
        loader = toy_loader(12, 2, rank, world_size, sampler="ftkd")
        trainer = Trainer(config, UnusedOutputObjective(), train_loader=loader)
        trainer.fit()
        assert trainer.step == 3
        # every process holds the same weights: the gradients were averaged at every step
        states = distributed.all_gather_object({k: v.clone() for k, v in trainer.objective.state_dict().items()})
        if rank == 0:
            different = [k for k in states[0] if not torch.equal(states[0][k], states[1][k])]
            (out_dir / "different.json").write_text(json.dumps(different))
    finally:
        distributed.cleanup()
    leave_worker()


def test_ddp_trains_an_objective_whose_outputs_hold_tensors_that_feed_no_loss(tmp_path):
    """DDP with find_unused_parameters sees only the losses (StreamPETR under torchrun failed at step 2 before)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_unused_output_worker, args=(2, port, tmp_path / "ddp"), nprocs=2, join=True)
    steps = [json.loads(line)["step"] for line in (tmp_path / "ddp/log.jsonl").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3]
    assert json.loads((tmp_path / "ddp/different.json").read_text()) == []
