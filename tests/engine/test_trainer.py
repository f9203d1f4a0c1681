"""The training loop on a toy objective: exact resume (after a clean stop and after SIGKILL), accumulation == big
batch, 2-process gloo DDP == one process (training and gathered predictions), the non-finite guard."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from toy_objective import ToyObjective, leave_worker, toy_eval_loader, toy_loader

from ftkd.config import load_config
from ftkd.engine import distributed
from ftkd.engine.inference import predict
from ftkd.engine.trainer import NonFiniteLossError, Trainer
from ftkd.utils.seed import seed_everything

NUM_SAMPLES = 16


def toy_config(out_dir, *overrides):
    return load_config(
        None,
        [
            f"train.out_dir={out_dir}",
            "train.device=cpu",
            "train.final_eval=false",
            "train.progress_bar=false",
            "train.log_every=1",
            "train.checkpoint_every=1000",
            "train.epochs=2",
            "train.lr=1e-2",
            "train.reference_batch=4",
            "train.warmup_iters=2",
            "train.global_batch=4",
            *overrides,
        ],
    )


def run(
    out_dir, *overrides, dropout=0.1, nan_calls=None, resume=None, rank=0, world_size=1, sampler="torch",
    streaming=False, seconds=0.0,
):  # fmt: skip
    config = toy_config(out_dir, *overrides)
    seed_everything(config.train.seed)  # same initial weights everywhere, as `ftkd train` does
    objective = ToyObjective(dropout=dropout, nan_calls=nan_calls, streaming=streaming, seconds=seconds)
    per_device = config.train.global_batch // (world_size * config.train.grad_accum)
    loader = toy_loader(NUM_SAMPLES, per_device, rank=rank, world_size=world_size, seed=config.train.seed, sampler=sampler)
    trainer = Trainer(config, objective, train_loader=loader, resume=resume)
    trainer.fit()
    return trainer


def train_records(out_dir, kind="train"):
    lines = (out_dir / "log.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines) if r.get("kind") == kind}  # the last record of a step wins


@pytest.mark.parametrize("sampler, streaming", [("torch", False), ("ftkd", False), ("ftkd", True)])
def test_interrupted_and_resumed_run_reproduces_the_uninterrupted_losses(tmp_path, sampler, streaming):
    full = run(tmp_path / "full", sampler=sampler, streaming=streaming)
    assert full.schedule.total_steps == 8 and full.step == 8
    assert (tmp_path / "full" / "checkpoints" / "final.pt").is_file()
    assert (tmp_path / "full" / "config.json").is_file()
    header = json.loads((tmp_path / "full" / "log.jsonl").read_text().splitlines()[0])
    assert header["kind"] == "header" and {"git_sha", "torch", "cuda", "device"} <= header.keys()

    # stop mid-epoch after 3 steps (the checkpoint is the state a killed run leaves behind), then resume
    stopped = run(tmp_path / "split", "train.max_steps=3", sampler=sampler, streaming=streaming)
    assert stopped.step == 3 and stopped.batch_in_epoch == 3
    assert not (tmp_path / "split" / "checkpoints" / "final.pt").exists()
    resumed = run(tmp_path / "split", resume="auto", sampler=sampler, streaming=streaming)
    assert resumed.step == 8

    expected, got = train_records(tmp_path / "full"), train_records(tmp_path / "split")
    assert sorted(got) == list(range(1, 9))
    for step in range(1, 9):  # bit-identical: dropout RNG, sampler position, optimiser state, memory restored
        for key in ("loss", "loss_box", "loss_small", "grad_norm", "lr"):
            assert got[step][key] == expected[step][key], (step, key)
    final_full = torch.load(tmp_path / "full/checkpoints/final.pt", weights_only=True)["model"]
    final_split = torch.load(tmp_path / "split/checkpoints/final.pt", weights_only=True)["model"]
    assert all(torch.equal(final_full[k], final_split[k]) for k in final_full)


def test_a_killed_run_resumes_from_its_last_checkpoint_to_the_same_losses(tmp_path):
    full = train_records(run(tmp_path / "full", streaming=True).out_dir)
    # a separate process checkpoints every 3 steps and is killed with SIGKILL during step 5 or 6
    script = (
        "import sys, pathlib; sys.path.insert(0, sys.argv[1]); from test_trainer import run; "
        "run(pathlib.Path(sys.argv[2]), 'train.checkpoint_every=3', streaming=True, seconds=0.3)"
    )
    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-c", script, str(Path(__file__).parent), str(out)])
    try:
        deadline = time.monotonic() + 120
        while not ((out / "log.jsonl").is_file() and 4 in train_records(out)):
            assert process.poll() is None and time.monotonic() < deadline, "the run to kill ended or never started"
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait()
    assert max(train_records(out)) < 8  # it really died mid-run
    resumed = run(out, resume="auto", streaming=True)
    assert resumed.step == 8
    got = train_records(out)  # steps 4.. were logged again by the resumed run (the last record of a step wins)
    for step in range(4, 9):
        assert got[step]["loss"] == full[step]["loss"], step


def test_resume_with_another_split_of_the_same_global_batch(tmp_path):
    full = train_records(run(tmp_path / "full", dropout=0.0, sampler="ftkd").out_dir)
    run(tmp_path / "split", "train.max_steps=3", dropout=0.0, sampler="ftkd")  # 4 per device, no accumulation
    resumed = run(tmp_path / "split", "train.grad_accum=2", resume="auto", dropout=0.0, sampler="ftkd")
    assert resumed.plan.per_device_batch == 2 and resumed.step == 8
    got = train_records(tmp_path / "split")
    for step in range(4, 9):
        assert got[step]["loss"] == pytest.approx(full[step]["loss"], rel=1e-5, abs=1e-7)
    with pytest.raises(ValueError, match=r"global batch of 4, this run has 8.*train.global_batch=4"):
        run(tmp_path / "split", "train.global_batch=8", resume="auto")


def test_gradient_accumulation_equals_the_big_batch(tmp_path):
    big = run(tmp_path / "big", dropout=0.0)
    accumulated = run(tmp_path / "acc", "train.grad_accum=2", dropout=0.0)
    assert accumulated.plan.per_device_batch == 2 and accumulated.schedule.total_steps == big.schedule.total_steps
    expected, got = train_records(tmp_path / "big"), train_records(tmp_path / "acc")
    for step in expected:
        assert got[step]["loss"] == pytest.approx(expected[step]["loss"], rel=1e-5, abs=1e-7)
        assert got[step]["lr"] == expected[step]["lr"]


def test_nan_guard_skips_bad_steps_then_stops_with_a_clear_message(tmp_path):
    # one bad step is skipped (the weights stay as they were) and training goes on
    trainer = run(tmp_path / "one", nan_calls={2}, dropout=0.0)
    assert trainer.step == 8
    assert sorted(train_records(tmp_path / "one", "bad_step")) == [3]
    # three in a row stop the run
    with pytest.raises(NonFiniteLossError, match=r"3 consecutive steps had a non-finite loss.*max_bad_steps=3"):
        run(tmp_path / "many", "train.max_bad_steps=3", nan_calls={1, 2, 3, 4})
    bad = train_records(tmp_path / "many", "bad_step")
    assert sorted(bad) == [2, 3, 4] and bad[4]["consecutive"] == 3


def test_a_skipped_step_leaves_the_weights_unchanged(tmp_path):
    config = toy_config(tmp_path, "train.max_steps=1")
    seed_everything(0)
    objective = ToyObjective(dropout=0.0, nan_calls={0})
    before = {k: v.clone() for k, v in objective.model.state_dict().items()}
    Trainer(config, objective, train_loader=toy_loader(NUM_SAMPLES, 4)).fit()
    after = objective.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def _ddp_worker(rank, world_size, port, out_dir):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    try:
        trainer = run(out_dir, dropout=0.0, rank=rank, world_size=world_size)
        predictions = predict(trainer.objective.model, toy_eval_loader(NUM_SAMPLES - 3, 2, rank, world_size), trainer.device)
        if rank == 0:
            torch.save(_as_dict(predictions), out_dir / "predictions.pt")
        else:
            assert predictions == []
    finally:
        distributed.cleanup()
    leave_worker()


def _as_dict(predictions):
    return {"tokens": [m.sample_token for m, _ in predictions], "boxes": torch.cat([d.boxes for _, d in predictions])}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_ddp_equals_one_process_at_the_same_global_batch(tmp_path):
    single = run(tmp_path / "single", dropout=0.0)
    mp.spawn(_ddp_worker, args=(2, _free_port(), tmp_path / "ddp"), nprocs=2, join=True)
    expected, got = train_records(tmp_path / "single"), train_records(tmp_path / "ddp")
    assert sorted(got) == sorted(expected) == list(range(1, single.schedule.total_steps + 1))
    for step in expected:
        assert got[step]["loss"] == pytest.approx(expected[step]["loss"], rel=1e-5, abs=1e-7)
        assert got[step]["grad_norm"] == pytest.approx(expected[step]["grad_norm"], rel=1e-4)
    ddp_model = torch.load(tmp_path / "ddp/checkpoints/final.pt", weights_only=True)["model"]
    single_model = torch.load(tmp_path / "single/checkpoints/final.pt", weights_only=True)["model"]
    for key in single_model:
        torch.testing.assert_close(ddp_model[key], single_model[key], rtol=1e-4, atol=1e-6)
    # predictions gathered from both processes: every sample once, in dataset order, as one process predicts them
    gathered = torch.load(tmp_path / "ddp" / "predictions.pt", weights_only=True)
    alone = _as_dict(predict(single.objective.model, toy_eval_loader(NUM_SAMPLES - 3, 2), single.device))
    assert gathered["tokens"] == alone["tokens"] == [f"token{i:04d}" for i in range(NUM_SAMPLES - 3)]
    torch.testing.assert_close(gathered["boxes"], alone["boxes"], rtol=1e-4, atol=1e-5)
