"""benchmarks/accuracy.py under torchrun (slow, ~40 s on 2 cores): two gloo processes train a tiny teacher, then
(a second launch) its FTKD student; rank 0 alone records and writes, rank 1 trains alongside it; a launch that would
train both is refused, and a launch of finished stages finds them finished on every rank (the ranks decide from the
same files, without talking)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_stages_train_with_two_processes_and_rank_zero_records_them(synth_root, tmp_path):
    def launch(*stages: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                   str(ROOT / "benchmarks" / "accuracy.py"), *stages, "--profile", "tiny",
                   "--dataroot", str(synth_root), "--out-json-dir", str(tmp_path / "json"),
                   "--runs-dir", str(tmp_path / "runs"), "--skip-data-check", "--skip-breakdown"]
        # its own process group, so that a hang kills torchrun's workers too, not only the launcher
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                   start_new_session=True)
        try:
            stdout, stderr = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)

    refused = launch("ftkd_sparsebev")  # its teacher is missing: the launch would train two stages
    assert refused.returncode != 0
    assert "under torchrun a launch trains one stage, this one would train ['teacher', 'ftkd_sparsebev']" in \
        refused.stderr
    assert not (tmp_path / "runs").exists()
    for stage in ("teacher", "ftkd_sparsebev"):
        done = launch(stage)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert f"{stage}: trained on rank 1 of 2" in done.stdout
        record = json.loads((tmp_path / "json" / f"{stage}_seed0.json").read_text())
        assert record["train"]["processes"] == 2
        assert "x 2 process(es)" in record["train"]["schedule"]
        checkpoints = tmp_path / "runs" / "tiny" / "seed0" / stage / "checkpoints"
        assert sorted(p.name for p in checkpoints.iterdir()) == ["final.pt", "last.pt"]
    assert sorted(p.name for p in (tmp_path / "json").glob("*.json")) == ["ftkd_sparsebev_seed0.json",
                                                                          "teacher_seed0.json"]
    again = launch("teacher", "ftkd_sparsebev")  # both finished: nothing to train, so both may be named
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    output = again.stdout + again.stderr
    for stage in ("teacher", "ftkd_sparsebev"):
        assert f"{stage}: nothing to train on rank 1" in output and f"{stage}: finished earlier" in output
    assert "process group" not in output  # nobody trained: no process group was formed
