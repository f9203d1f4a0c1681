"""Multi-GPU scaling of `ftkd distill` (or `ftkd train`): step time, samples/s, scaling efficiency, peak memory, and
whether N processes and 1 process with N-fold gradient accumulation (the same global batch) give the same loss curve.

For each N of `--gpus` the script launches `torchrun --standalone --nproc_per_node=N -m ftkd distill CONFIG
--teacher T ...` for `--steps` optimiser steps (`train.max_steps`; no evaluation and no final.pt: the schedule is
not finished) with one sample per process (global batch N), logging every step (`train.log_every=1`). From each
run's `log.jsonl` (written by rank 0; ms_per_step is wall time per optimiser step including the wait for data):
    step time          median ms/step over the steps after the first window (warm-up)
    samples/s          N * 1000 / step time
    efficiency         samples/s(N) / (N * samples/s(1))
    peak memory        rank 0's torch.cuda.max_memory_allocated (MiB; ranks hold the same model and batch size)
Loss agreement: the largest N is repeated as 1 process with train.grad_accum=N (same seed, same global batch, same
samples per step). Both per-step total-loss curves are cut into windows of `--window` steps; the check reports the
mean over windows of |mean_N - mean_1| / mean_1 and calls it within noise if that is <= 2 x the mean over windows of
sqrt(se_N^2 + se_1^2) / mean_1, se = std of the window's per-step losses / sqrt(window) (a two-sample test of the
window means that ignores the pairing of steps, so it is lenient: both runs draw the same samples at each step).

    python benchmarks/scaling.py --gpus 1,2,4 --dataroot data/synth_bench --steps 12 --window 3 --out $OUT/scaling.json

Without `--teacher` a teacher checkpoint with random weights (seed 0) is written once under `--work-dir`: speed does
not depend on the weights. N larger than the visible GPU count is skipped; `--device cpu` runs N gloo processes on
the CPU (tests). Writes one JSON (atomically, after every run) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FORMAT = "ftkd-scaling-v1"
# profile -> (distillation config, its teacher's config, the plain student config for --mode train)
PROFILES = {
    "paper": (
        "configs/ftkd_sparsebev_r50.yaml", "configs/teacher_sparsebev_r101_future.yaml", "configs/sparsebev_r50.yaml"
    ),
    "tiny": (
        "configs/ftkd_sparsebev_tiny.yaml", "configs/teacher_sparsebev_tiny_future.yaml", "configs/sparsebev_tiny.yaml"
    ),
}
NOISE_RULE = (
    "windows of W consecutive optimiser steps; rel_diff = mean over windows of |mean_N - mean_1| / mean_1 (total "
    "loss, mean_1 from 1 process with grad_accum N); noise = mean over windows of sqrt(se_N^2 + se_1^2) / mean_1 with "
    "se = std(per-step losses of the window, ddof 1) / sqrt(W); within noise if rel_diff <= 2 * noise. Lenient: "
    "the two runs draw the same samples at each step, so their windows are paired, which this test ignores."
)


# ------------------------------------------------------------------------------------------------- arithmetic
def read_train_records(log_path: str | Path) -> list[dict[str, Any]]:
    """The `kind == "train"` lines of a run's log.jsonl, ordered by step."""
    records = []
    with open(log_path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{log_path}:{number}: not a JSON line ({err})") from err
            if record.get("kind") == "train":
                records.append(record)
    return sorted(records, key=lambda r: r["step"])


def read_header(log_path: str | Path) -> dict[str, Any]:
    """The run header of a log.jsonl (environment: device_name, git_sha, torch, world_size...), {} if absent."""
    with open(log_path) as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                return record if record.get("kind") == "header" else {}
    return {}


def median_step_ms(records: list[dict[str, Any]], warmup_steps: int) -> float:
    """Median ms per optimiser step over the records after step `warmup_steps` (records of one step each)."""
    timed = [r["ms_per_step"] for r in records if r["step"] > warmup_steps]
    if not timed:
        raise ValueError(
            f"no timed step after the {warmup_steps} warm-up steps ({len(records)} records): run more steps"
        )
    return statistics.median(timed)


def scaling_efficiency(samples_per_s: float, num_gpus: int, samples_per_s_one: float) -> float:
    """samples/s(N) / (N * samples/s(1)): 1 = perfect linear scaling."""
    return samples_per_s / (num_gpus * samples_per_s_one)


def window_stats(losses: list[float], window: int) -> list[tuple[float, float]]:
    """(mean, standard error of the mean) of each full window of `window` consecutive values (a tail is dropped)."""
    if window < 2:
        raise ValueError(f"window: expected >= 2 steps (a standard error needs two values), got {window}")
    stats = []
    for start in range(0, len(losses) - window + 1, window):
        values = losses[start : start + window]
        stats.append((statistics.fmean(values), statistics.stdev(values) / math.sqrt(window)))
    return stats


def loss_agreement(losses_n: list[float], losses_one: list[float], window: int) -> dict[str, Any]:
    """Compare two per-step total-loss curves of equal global batch window by window (rule: NOISE_RULE)."""
    steps = min(len(losses_n), len(losses_one))
    a, b = window_stats(losses_n[:steps], window), window_stats(losses_one[:steps], window)
    if not a:
        raise ValueError(f"loss agreement needs at least one window of {window} steps, the runs share {steps}")
    rel_diffs = [abs(ma - mb) / abs(mb) for (ma, _), (mb, _) in zip(a, b)]
    noises = [math.hypot(sa, sb) / abs(mb) for (_, sa), (mb, sb) in zip(a, b)]
    rel_diff, noise = statistics.fmean(rel_diffs), statistics.fmean(noises)
    # paired per-step view (diagnostic): a systematic bias, e.g. a loss scaled differently, shows as a signed mean
    # many standard errors away from 0; it is not the rule because successive steps of one run are correlated
    paired = [(x - y) / abs(y) for x, y in zip(losses_n[:steps], losses_one[:steps])]
    return {
        "window": window,
        "windows": len(a),
        "window_mean_loss_n": [m for m, _ in a],
        "window_mean_loss_one": [m for m, _ in b],
        "window_rel_diff": rel_diffs,
        "mean_abs_rel_diff": rel_diff,
        "noise_rel": noise,
        "within_noise": rel_diff <= 2.0 * noise,
        "paired_step_mean_rel_diff": statistics.fmean(paired),
        "paired_step_rel_diff_se": statistics.stdev(paired) / math.sqrt(len(paired)) if len(paired) > 1 else None,
        "rule": NOISE_RULE,
    }


def summarise_run(records: list[dict[str, Any]], global_batch: int, warmup_steps: int) -> dict[str, Any]:
    """Timing, memory and loss curve of one run (global batch = samples per optimiser step)."""
    step_ms = median_step_ms(records, warmup_steps)
    data_ms = [r["data_ms_per_step"] for r in records if r["step"] > warmup_steps]
    memory = [r["max_memory_gb"] for r in records if "max_memory_gb" in r]
    return {
        "steps": len(records),
        "timed_steps": len(data_ms),
        "median_ms_per_step": step_ms,
        "mean_ms_per_step": statistics.fmean(r["ms_per_step"] for r in records if r["step"] > warmup_steps),
        "median_data_ms_per_step": statistics.median(data_ms),
        "samples_per_s": global_batch * 1000.0 / step_ms,
        "peak_memory_mib_rank0": max(memory) * 1024.0 if memory else None,
        "loss": [r.get("loss", math.nan) for r in records],
    }


# ------------------------------------------------------------------------------------------------- launching
def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True, check=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def random_teacher(teacher_config: str | Path, path: Path) -> Path:
    """Write a teacher checkpoint with random weights (seed 0) for `teacher_config`, in the format `ftkd distill
    --teacher` loads (config + model state); reused if it exists."""
    if path.is_file():
        return path
    import torch

    from ftkd.config import load_config
    from ftkd.engine.checkpoint import config_to_json, save_checkpoint
    from ftkd.models.build import build_model

    config = load_config(teacher_config)
    torch.manual_seed(0)
    save_checkpoint({"config": config_to_json(config), "model": build_model(config.model).state_dict()}, path)
    return path


def build_command(args: argparse.Namespace, config: str, teacher: str | None, nproc: int, grad_accum: int,
                  out_dir: Path) -> list[str]:  # fmt: skip
    """The torchrun command of one run: `nproc` processes x `grad_accum` micro-batches of 1 sample per step."""
    overrides = [
        f"train.max_steps={args.steps}",
        "train.log_every=1",
        f"train.global_batch={nproc * grad_accum}",
        f"train.grad_accum={grad_accum}",
        "data.batch_size=1",
        f"train.seed={args.seed}",
        "train.final_eval=false",
        "train.progress_bar=false",
        f"train.checkpoint_every={args.steps + 1}",  # only the checkpoint every run writes at its end
    ]
    if args.device == "cpu":
        overrides.append("train.device=cpu")
    if args.num_workers is not None:
        overrides.append(f"data.num_workers={args.num_workers}")
    overrides += args.set
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "ftkd", args.mode, config]  # fmt: skip
    if teacher is not None:
        command += ["--teacher", teacher]
    command += ["--dataroot", args.dataroot, "--out-dir", str(out_dir)]
    if not args.data_check:
        command.append("--skip-data-check")
    return command + ["--set", *overrides]


def stop_group(process: subprocess.Popen) -> None:
    """Stop a launch's process group (torchrun, its workers, their loader workers): SIGTERM, 10 s, then SIGKILL."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # whatever of the group is left
    except ProcessLookupError:
        pass
    process.wait()


def launch(command: list[str], out_dir: Path, timeout_s: float, threads: int) -> dict[str, Any]:
    """Run one torchrun command in a fresh run folder (its output in launch.log); kill its process group on timeout."""
    if out_dir.exists():
        shutil.rmtree(out_dir)  # the trainer appends to log.jsonl: a stale one would mix runs
    out_dir.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    start = time.perf_counter()
    with open(out_dir / "launch.log", "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
        try:
            returncode = process.wait(timeout=max(1.0, timeout_s))
        except subprocess.TimeoutExpired:
            stop_group(process)
            returncode = None
        except BaseException:  # Ctrl-C or SIGTERM of this script: no worker may keep holding a GPU
            stop_group(process)
            raise
    result = {"command": shlex.join(command), "wall_s": time.perf_counter() - start, "returncode": returncode}
    if returncode != 0:
        tail = (out_dir / "launch.log").read_text(errors="replace").splitlines()[-15:]
        result["error"] = ("timed out after %.0f s" % timeout_s if returncode is None else f"exit code {returncode}")
        result["log_tail"] = tail
    return result


def run_one(args: argparse.Namespace, name: str, config: str, teacher: str | None, nproc: int, grad_accum: int,
            deadline: float) -> dict[str, Any]:  # fmt: skip
    """Launch one run and summarise its log: the row of the JSON."""
    out_dir = Path(args.work_dir) / name
    command = build_command(args, config, teacher, nproc, grad_accum, out_dir)
    row: dict[str, Any] = {"name": name, "processes": nproc, "grad_accum": grad_accum}
    row["global_batch"] = nproc * grad_accum
    timeout = min(args.run_timeout_s, deadline - time.monotonic())
    if timeout < 5.0:
        row.update(command=shlex.join(command), ok=False, error=f"not started: --budget-s {args.budget_s} is spent")
        print(f"[scaling] {name}: {row['error']}", flush=True)
        return row
    print(f"[scaling] {name}: {shlex.join(command)}", flush=True)
    row.update(launch(command, out_dir, timeout, args.threads or max(1, (os.cpu_count() or 1) // max(args.gpus))))
    log_path = out_dir / "log.jsonl"
    if log_path.is_file():
        header = read_header(log_path)
        row["device_name"] = header.get("device_name")
        records = read_train_records(log_path)
        if len(records) > args.window:
            row.update(summarise_run(records, nproc * grad_accum, args.window))
        elif "error" not in row:
            row["error"] = f"{len(records)} logged steps, not more than the {args.window} warm-up steps"
    elif "error" not in row:
        row["error"] = f"no {log_path}"
    row["ok"] = "error" not in row
    if not row["ok"]:
        print(f"[scaling] {name} FAILED: {row['error']}\n  " + "\n  ".join(row.get("log_tail", [])), flush=True)
    return row


def write_json(record: dict[str, Any], path: Path) -> None:
    """Write `record` atomically (a temporary file in the same folder, then os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def print_table(record: dict[str, Any]) -> None:
    print(f"\ndevice {record['device_name']} ({record['gpus_available']} visible), mode {record['mode']}, "
          f"{record['steps']} steps, window {record['window']}")  # fmt: skip
    print(f"{'N':>3} {'global':>7} {'ms/step':>9} {'samples/s':>10} {'efficiency':>11} {'data ms':>8} {'peak MiB':>9}")
    for row in record["rows"]:
        if not row.get("ok"):
            print(f"{row['processes']:>3} {row['global_batch']:>7}  {row.get('skipped') or row.get('error')}")
            continue
        memory = row["peak_memory_mib_rank0"]
        efficiency = row.get("efficiency")
        print(f"{row['processes']:>3} {row['global_batch']:>7} {row['median_ms_per_step']:>9.1f} "
              f"{row['samples_per_s']:>10.2f} {'-' if efficiency is None else f'{efficiency:.3f}':>11} "
              f"{row['median_data_ms_per_step']:>8.1f} {'-' if memory is None else f'{memory:.0f}':>9}")  # fmt: skip
    agreement = record["agreement"]
    if "mean_abs_rel_diff" in agreement:
        cut = f" (accumulation run cut short: {agreement['reference_run']['error']})" if agreement["partial"] else ""
        print(f"loss agreement, {agreement['processes']} processes vs 1 process x {agreement['processes']} "
              f"accumulation: mean |rel diff| {agreement['mean_abs_rel_diff']:.4f}, noise {agreement['noise_rel']:.4f}"
              f" -> {'within' if agreement['within_noise'] else 'NOT within'} noise over {agreement['windows']} "
              f"windows{cut}")  # fmt: skip
    else:
        print(f"loss agreement: {agreement.get('status')}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every run of the measurement; returns (and writes) the JSON record."""
    deadline = time.monotonic() + (args.budget_s if args.budget_s else math.inf)
    distill_config, teacher_config, train_config = PROFILES[args.profile]
    config = args.config or (distill_config if args.mode == "distill" else train_config)
    teacher_config = args.teacher_config or teacher_config
    from ftkd.config import load_config

    experiment = load_config(ROOT / config, args.set)  # bad --set keys fail here, before any launch
    train = experiment.train
    sequential = train.sampler == "sequential" or (train.sampler == "auto" and experiment.model.arch == "streampetr")
    if args.device == "cuda":
        import torch

        available = torch.cuda.device_count()
    else:
        available = 0
    record: dict[str, Any] = {
        "format": FORMAT,
        "device_name": None,
        "device": args.device,
        "gpus_available": available,
        "commit": args.commit or git_commit(),
        "mode": args.mode,
        "config": config,
        "dataroot": args.dataroot,
        "steps": args.steps,
        "window": args.window,
        "warmup_steps": args.window,
        "seed": args.seed,
        "overrides": list(args.set),
        "sampler": "sequential" if sequential else "random",
        "timing": "median over steps after the first window of rank 0's wall ms per optimiser step (data wait "
        "included); samples/s = global batch * 1000 / that; efficiency = samples/s(N) / (N * samples/s(1))",
        "rows": [],
        "agreement": {"status": "not run"},
    }
    teacher = None
    if args.mode == "distill":
        if args.teacher:
            teacher, record["teacher"] = args.teacher, args.teacher
        else:
            path = Path(args.work_dir) / f"random_{Path(teacher_config).stem}.pt"
            teacher = str(random_teacher(ROOT / teacher_config, path))
            record["teacher"] = (f"{teacher_config} with random weights (seed 0): speed does not depend on the "
                                 "weights, the loss values do")  # fmt: skip
    out = Path(args.out)
    for nproc in sorted(set(args.gpus)):
        if args.device == "cuda" and nproc > available:
            message = f"skipped: {nproc} GPUs asked for, {available} visible"
            print(f"[scaling] N={nproc} {message}", flush=True)
            record["rows"].append({"processes": nproc, "global_batch": nproc, "ok": False, "skipped": message})
            continue
        record["rows"].append(run_one(args, f"n{nproc}", config, teacher, nproc, 1, deadline))
        write_json(record, out)
    done = {row["processes"]: row for row in record["rows"] if row.get("ok")}
    if 1 in done:
        for row in done.values():
            row["efficiency"] = scaling_efficiency(row["samples_per_s"], row["processes"], done[1]["samples_per_s"])
    largest = max((n for n in done if n > 1), default=None)
    if largest is None:
        record["agreement"] = {"status": "not run: no successful run with more than one process"}
    else:
        reference = run_one(args, f"n1_accum{largest}", config, teacher, 1, largest, deadline)
        record["agreement"] = {"processes": largest, "reference_run": reference}
        if sequential:
            record["agreement"]["note"] = (
                "streaming sampler: with accumulation one slot walks a sequence and the micro-batches of a step are "
                "consecutive frames, not the samples of N processes, so the curves are not expected to agree"
            )
        if reference.get("loss"):  # a run cut by the budget still compares the windows it finished
            record["agreement"].update(loss_agreement(done[largest]["loss"], reference["loss"], args.window))
            record["agreement"]["partial"] = not reference["ok"]
        else:
            record["agreement"]["status"] = f"not run: the accumulation run failed ({reference['error']})"
    names = [row.get("device_name") for row in record["rows"] if row.get("device_name")]
    record["device_name"] = names[0] if names else None
    write_json(record, out)
    print_table(record)
    print(f"wrote {out}")
    return record


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4],
                        help="process counts, comma separated (default 1,2,4)")  # fmt: skip
    parser.add_argument("--mode", choices=("distill", "train"), default="distill")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="paper",
                        help="paper: SparseBEV-R50 student, R101 15-frame teacher; tiny: CPU test configs")  # fmt: skip
    parser.add_argument("--config", default=None, help="experiment YAML (default: the profile's)")
    parser.add_argument("--teacher-config", default=None, help="teacher YAML for the random teacher (distill)")
    parser.add_argument("--teacher", default=None, help="teacher checkpoint (default: random weights, written once)")
    parser.add_argument("--dataroot", default="data/synth")
    parser.add_argument("--steps", type=int, default=40, help="optimiser steps per run")
    parser.add_argument("--window", type=int, default=5, help="steps per window (the first one is warm-up)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: gloo processes (tests)")
    parser.add_argument("--num-workers", type=int, default=None, help="loader workers per process (default: config)")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS a process (default: cores / max N)")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="extra config overrides for every run, e.g. distill.match_teacher_topk=300")  # fmt: skip
    parser.add_argument("--data-check", action="store_true", help="run the quick data check before each run")
    parser.add_argument("--run-timeout-s", type=float, default=600.0, help="a run is killed after this")
    parser.add_argument("--budget-s", type=float, default=None, help="no run goes on past this many seconds in all")
    parser.add_argument("--work-dir", default="runs/scaling", help="run folders and the random teacher")
    parser.add_argument("--out", default="docs/results/scaling.json")
    parser.add_argument("--commit", default=None, help="commit to record (default: git rev-parse HEAD here)")
    args = parser.parse_args(argv)
    if args.steps <= args.window or args.window < 2:
        parser.error(f"--steps ({args.steps}) must exceed --window ({args.window}), and --window must be >= 2")
    if any(n < 1 for n in args.gpus):
        parser.error(f"--gpus: expected positive counts, got {args.gpus}")
    # paths of the command line are the caller's; the runs start in the repository root
    for name in ("work_dir", "dataroot", "teacher", "config", "teacher_config"):
        if getattr(args, name) is not None:
            setattr(args, name, str(Path(getattr(args, name)).resolve()))
    return args


def main(argv: list[str] | None = None) -> int:
    """0 when every run that was not skipped succeeded and the agreement check ran, 1 otherwise."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # `python3 benchmarks/scaling.py` without ftkd installed
    args = parse_args(argv)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # stops the launch too
    try:
        record = run(args)
    finally:
        signal.signal(signal.SIGTERM, previous)
    failed = [row for row in record["rows"] if not row.get("ok") and not row.get("skipped")]
    return 1 if failed or "mean_abs_rel_diff" not in record["agreement"] else 0


if __name__ == "__main__":
    sys.exit(main())
