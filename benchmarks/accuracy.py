"""The accuracy benchmark protocol: teacher, students, FTKD, KD baselines and ablations on the synthetic benchmark set.

Each stage is one `ftkd train` / `ftkd distill` run (the command modules themselves, called in this process) with a
config of configs/*_small.yaml (profile `bench`) or configs/*_tiny.yaml (profile `tiny`, a CPU smoke test), the
profile's overrides and the stage's distillation overrides. Stages run in the order given, inside a time budget:

    python benchmarks/accuracy.py data teacher sparsebev ftkd_sparsebev --seed 0 --budget-s 540 --out-json-dir $OUT

- resumable: a finished stage (final.pt + metrics.json in its run folder) is not run again, only its JSON is
  rewritten; an unfinished one resumes from its last.pt. A stage is trained in chunks (`train.max_steps`, which
  leaves the schedule unchanged) sized from the measured step time so that the command stops cleanly, with a
  checkpoint, before the budget ends; the same command line run again continues where it stopped.
- dependencies: the dataset (`data`, preset of the profile) is generated if missing and checked once; a distillation
  stage whose teacher (its `Stage.teacher`, same seed) has no final.pt gets it run first.
- output: one JSON per (stage, seed), `<out-json-dir>/<stage>_seed<S>.json` (also kept as `stage.json` in the run
  folder): the resolved config, the official nuScenes metrics and their breakdown per distance band and visibility
  level (`breakdown`, ftkd.engine.breakdown) and on each half of the val scenes (`split_half`, for the report's
  evaluation-noise estimate), on a GPU for the `sparsebev` stage the metric through each online inference option
  (`online_parity`, benchmarks/online_parity.py), for StreamPETR students the geometry of their cross-attention
  (`attention_geometry`, benchmarks/streampetr_attention.py), train time and steps, device, commit, dirty flag,
  torch version, the facts that decide inference speed, and whether the student checkpoint holds exactly the
  baseline's tensors. `benchmarks/report.py` turns a folder of them into docs/results.md.
- several GPUs: under `torchrun --nproc_per_node N` (benchmarks/lanes.py `--gpus-per-lane N`) every stage trains
  with N processes at the profile's global batch (N x its per-process batch; BatchNorm statistics per process).
  Rank 0 plans, records and writes; the other ranks only train alongside it. The ranks must agree on every chunk
  without talking, so a stage then runs to its end in one chunk: the budget is not checked (the lanes' estimate
  decides whether it starts). `--one-chunk` does the same on one process, for machines whose files do not outlive
  the command (a stopped run could not be resumed there). A launch trains one stage: each run joins and leaves the
  process group, and a left default group cannot be joined again reliably (ranks arriving at different times read
  stale addresses).
Exit code 0 when every requested stage is finished, 3 when the budget stopped one (run the same command again).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_records import (FORMAT, environment, final_eval_seconds, flatten,  # noqa: E402  (sibling modules)
                              inference_facts, read_chunks, read_log, recipe_differences, summarize_metrics,
                              training_facts, write_json)
from accuracy_stages import PROFILES, STAGES, Stage, ensure_data, teacher_frame_overrides  # noqa: E402

if TYPE_CHECKING:
    from ftkd.config import ExperimentConfig

ROOT = Path(__file__).resolve().parents[1]
# stages whose trained student is also scored through each online inference option on a GPU (~1 min;
# benchmarks/online_parity.py): the baseline, the model the options' speed figures are about
ONLINE_PARITY_STAGES = ("sparsebev",)
logger = logging.getLogger("ftkd.benchmarks.accuracy")


# ------------------------------------------------------------------------------------------------------ stages
class Benchmark:
    """Runs stages of one (profile, seed) inside a deadline; see the module docstring."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.profile = PROFILES[args.profile]
        self.seed = args.seed
        # Paths given on the command line are relative to the working directory, the defaults to the repository.
        self.dataroot = Path(args.dataroot).resolve() if args.dataroot else ROOT / self.profile.dataroot
        self.runs = Path(args.runs_dir).resolve() / self.profile.name / f"seed{self.seed}"
        self.out = Path(args.out_json_dir).resolve()
        self.deadline = time.monotonic() + args.budget_s
        self.env = environment(args.commit)
        self.data_ready = False
        self.data_record: dict[str, Any] | None = None
        self.eval_seconds: list[float] = []
        self.bundle: list[dict[str, Any]] = []
        self.nusc = None  # the devkit's tables of the dataset, loaded once for the breakdowns
        self.rank = int(os.environ.get("RANK", 0))  # under torchrun: this process's rank, and how many train
        self.processes = int(os.environ.get("WORLD_SIZE", 1))

    def emit(self, record: dict[str, Any]) -> None:
        """Write a stage's JSON to the output folder: its own file, or appended to this process's bundle file."""
        if self.args.bundle:
            self.bundle.append(record)
            write_json(self.bundle, self.out / f"{self.args.bundle}.json")
        else:
            write_json(record, self.out / f"{record['stage']}_seed{record['seed']}.json")

    def run_dir(self, stage: str) -> Path:
        return self.runs / stage

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    # ------------------------------------------------------------------------------------------ configs
    def config_path(self, role: str) -> str:
        return self.profile.configs["teacher" if role == "teacher_nofuture" else role]

    def role_overrides(self, role: str, family: str) -> list[str]:
        """The profile's overrides of a role's config (seed, epochs, workers, from-scratch backbone)."""
        from ftkd.config import load_config

        config = load_config(ROOT / self.config_path(role))
        overrides = [
            f"train.seed={self.seed}",
            f"train.epochs={self.profile.epochs[family]}",
            "train.progress_bar=false",
        ]
        if config.data.num_workers > 0:
            workers = self.args.loader_workers or max(1, min(14, (os.cpu_count() or 2) - 2))
            overrides.append(f"data.num_workers={workers}")
        if not config.model.backbone.pretrained:
            # No pretrained weights travel to the GPU machine: random stages must not stay frozen, nor BatchNorm
            # keep the statistics of a random initialisation, nor the backbone learn at the 0.1x / 0.25x rate that
            # the official recipes use to protect ImageNet features (a random backbone has none to protect).
            kept = {k: v for k, v in (config.train.lr_multipliers or {}).items() if not k.startswith("backbone")}
            overrides += ["model.backbone.frozen_stages=0", "model.backbone.norm_eval=false",
                          f"train.lr_multipliers={json.dumps(kept)}"]
        if role == "teacher_nofuture":
            overrides += teacher_frame_overrides(config.data.num_past_frames, 0)
        if self.args.compile:
            overrides.append("train.compile=true")
        return overrides

    def family(self, stage: Stage) -> str:
        return stage.student or "teacher"

    def frame_overrides(self, stage: Stage) -> list[str]:
        """A teacher stage's own future horizon (`Stage.future_frames`) on top of its role's config."""
        from ftkd.config import load_config

        if stage.future_frames is None:
            return []
        config = load_config(ROOT / self.config_path(stage.role))
        return teacher_frame_overrides(config.data.num_past_frames, stage.future_frames)

    def command_argv(self, stage: Stage) -> list[str]:
        """The `ftkd train|distill` arguments of a stage (without the chunk's max_steps)."""
        backbone = ([f"model.backbone.pretrained={self.run_dir(stage.backbone_from) / 'checkpoints' / 'final.pt'}"]
                    if stage.backbone_from else [])
        overrides = [f"name={stage.name}", *self.role_overrides(stage.role, self.family(stage)),
                     *self.frame_overrides(stage), *stage.overrides, *backbone, *self.args.set]
        argv = [str(ROOT / self.config_path(stage.role)), "--set", *overrides, "--dataroot", str(self.dataroot),
                "--out-dir", str(self.run_dir(stage.name)), "--resume", "auto", "--skip-data-check"]
        if stage.kind == "distill":
            argv += ["--teacher", str(self.run_dir(stage.teacher) / "checkpoints" / "final.pt")]
        return argv

    def parse(self, stage: Stage, argv: list[str]) -> argparse.Namespace:
        from ftkd.commands import distill, train

        parser = argparse.ArgumentParser(prog=f"ftkd {stage.kind}")
        (distill if stage.kind == "distill" else train).add_parser(parser)
        return parser.parse_args(argv)

    def resolved_config(self, stage: Stage, argv: list[str]) -> ExperimentConfig:
        """The ExperimentConfig the command resolves from `argv` (the same override order as the command)."""
        from ftkd.commands.train import override_list
        from ftkd.config import load_config

        args = self.parse(stage, argv)
        overrides = override_list(args)
        if stage.kind == "distill":
            overrides.append(f"distill.teacher={args.teacher}")
        return load_config(args.config, overrides)

    def baseline_config(self, stage: Stage) -> ExperimentConfig:
        """The config of the stage's baseline student (same profile overrides, no distillation)."""
        baseline = STAGES[stage.student or stage.name]
        return self.resolved_config(baseline, self.command_argv(baseline))

    # ------------------------------------------------------------------------------------------ running
    def ensure_data(self) -> None:
        if self.data_ready:
            return
        start = time.perf_counter()
        record = ensure_data(self.profile, self.dataroot, self.args.workers, check=not self.args.skip_data_check)
        record["seconds_this_run"] = round(time.perf_counter() - start, 2)
        self.data_record = record
        self.data_ready = True

    def is_finished(self, stage: Stage) -> bool:
        run = self.run_dir(stage.name)
        return (run / "checkpoints" / "final.pt").is_file() and (run / "metrics.json").is_file()

    def run_stage(self, stage: Stage) -> str:
        """Run (or resume, or only re-record) one stage; returns its status line."""
        if self.rank > 0:
            return self.train_alongside(stage)
        self.ensure_data()
        if stage.kind == "data":
            record = {"format": FORMAT, "stage": "data", "seed": self.seed, "profile": self.profile.name,
                      "kind": "data", **self.data_record, "environment": self.env}
            self.emit(record)
            return "data: ready"
        run = self.run_dir(stage.name)
        if self.is_finished(stage) and (run / "stage.json").is_file():
            record = json.loads((run / "stage.json").read_text())  # recorded when it finished: same device, commit
            analyses = {"breakdown": self.breakdown, "split_half": self.split_half}
            missing = [key for key in analyses if key not in record]  # recorded before they existed
            if missing and self.wants_breakdown(run):
                config = self.resolved_config(stage, self.command_argv(stage))
                for key in missing:
                    record[key] = analyses[key](run, config)
                write_json(record, run / "stage.json")
            self.emit(record)
            return f"{stage.name}: finished earlier, NDS {record['metrics']['NDS']:.4f} (JSON rewritten)"
        argv = self.command_argv(stage)
        config = self.resolved_config(stage, argv)
        self.check_same_config(run, config)
        with run_lock(run):
            while not self.is_finished(stage):
                progress = self.read_progress(run)
                plan = self.next_chunk(progress)
                if plan is None:
                    step, total = progress.get("step", 0), progress.get("total_steps", "?")
                    return f"{stage.name}: stopped by the budget at step {step}/{total}; run the command again"
                self.run_chunk(stage, run, argv, plan)
        record = self.record(stage, config)
        write_json(record, run / "stage.json")
        self.emit(record)
        metrics = record["metrics"]
        return f"{stage.name}: NDS {metrics['NDS']:.4f} mAP {metrics['mAP']:.4f} mAVE {metrics['mAVE']:.4f}"

    def train_alongside(self, stage: Stage) -> str:
        """A torchrun process of rank > 0: train the stage with rank 0 (which decides from the same files that it
        must, and plans, records and writes), in one chunk to the end."""
        if stage.kind == "data" or self.is_finished(stage):
            return f"{stage.name}: nothing to train on rank {self.rank}"
        code = self.train_command(stage, self.command_argv(stage), 0)
        if code != 0:
            raise SystemExit(f"{stage.name}: ftkd {stage.kind} exited with {code} on rank {self.rank}")
        return f"{stage.name}: trained on rank {self.rank} of {self.processes}"

    def check_same_config(self, run: Path, config: ExperimentConfig) -> None:
        """Refuse to resume a run folder that was started with another config (schedule, model, data)."""
        from ftkd.utils.configuration import to_dict

        saved = run / "accuracy_config.json"
        ignored = {"data.num_workers", "data.dataroot", "data.cache_dir", "train.max_steps"}
        current = {k: v for k, v in flatten(to_dict(config)).items() if k not in ignored}
        if saved.is_file():
            before = json.loads(saved.read_text())
            differ = sorted(k for k in before.keys() | current.keys() if before.get(k) != current.get(k))
            if differ:
                raise SystemExit(
                    f"{run} was started with another config (differs in {differ}); use another --runs-dir or "
                    f"remove {run}"
                )
        else:
            run.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(current, indent=1))

    def read_progress(self, run: Path) -> dict[str, Any]:
        """Steps done, schedule length and timings of a run folder, from its log.jsonl and our chunk log."""
        entries = read_log(run / "log.jsonl")
        chunks = read_chunks(run)
        train = [e for e in entries if e.get("kind") == "train"]
        progress: dict[str, Any] = {"chunks": chunks}
        if train:
            last = train[-1]
            progress["step"] = int(last["step"])
            steps_per_epoch = round(last["step"] / last["epoch"]) if last.get("epoch") else 0
            if steps_per_epoch:
                epochs = json.loads((run / "config.json").read_text())["train"]["epochs"]
                progress["total_steps"] = max(1, math.ceil(epochs * steps_per_epoch - 1e-9))
            recent = [e["ms_per_step"] for e in train[-5:] if "ms_per_step" in e]
            if len(train) > 1:  # the first window of a run holds the warm-up (allocation, cudnn autotuning)
                recent = [e["ms_per_step"] for e in train[1:][-5:] if "ms_per_step" in e] or recent
            progress["seconds_per_step"] = statistics.median(recent) / 1000.0
        if chunks:
            last_chunk = chunks[-1]
            steps = last_chunk["end_step"] - last_chunk["start_step"]
            setup = last_chunk["wall_s"] - steps * progress.get("seconds_per_step", 0.0)
            progress["setup_s"] = max(5.0, setup)
        return progress

    def next_chunk(self, progress: dict[str, Any]) -> int | None:
        """max_steps of the next chunk (0 = to the end, evaluation included), or None if the budget is too short."""
        if self.processes > 1 or self.args.one_chunk:
            return 0  # every rank runs the same chunk (see the module docstring), or --one-chunk
        remaining = self.remaining()
        if "total_steps" not in progress or "seconds_per_step" not in progress:
            return self.profile.probe_steps if remaining > 120 else None
        step, total, per_step = progress["step"], progress["total_steps"], progress["seconds_per_step"]
        setup = progress.get("setup_s", 30.0)
        reserve = max([self.profile.eval_reserve_s] + [1.3 * s for s in self.eval_seconds])
        margin = 15.0
        if remaining - setup - margin - reserve >= (total - step) * per_step:
            return 0
        steps = math.floor((remaining - setup - margin) / per_step)
        target = min(step + steps, total - 1)  # the last step belongs to the chunk that also evaluates
        if steps < self.profile.min_chunk_steps or target <= step:
            return None  # (at total - 1 with no room for the evaluation, a chunk would train nothing)
        return target

    def train_command(self, stage: Stage, argv: list[str], max_steps: int) -> int:
        """Run `ftkd train|distill` (in this process) for one chunk of the stage; its exit code."""
        from ftkd.commands import distill, train

        command = distill if stage.kind == "distill" else train
        chunk_argv = [*argv, "--set", f"train.max_steps={max_steps}"]
        logger.info(f"{stage.name}: ftkd {stage.kind} " + " ".join(chunk_argv))
        return command.run(self.parse(stage, chunk_argv))

    def run_chunk(self, stage: Stage, run: Path, argv: list[str], max_steps: int) -> None:
        import torch

        start_step = self.read_progress(run).get("step", 0)
        start = time.perf_counter()
        code = self.train_command(stage, argv, max_steps)
        wall = time.perf_counter() - start
        if code != 0:
            raise SystemExit(f"{stage.name}: ftkd {stage.kind} exited with {code} (log: {run / 'train.log'})")
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the next chunk or stage builds its models afresh
        # The trainer logs the step it stops at, so the log's last step is exact after a chunk (the one read
        # before it may be stale if an earlier command was killed between checkpoints).
        end_step = self.read_progress(run).get("step", 0)
        if max_steps and end_step < max_steps and not self.is_finished(stage):
            raise SystemExit(f"{stage.name}: a chunk with train.max_steps={max_steps} stopped at step {end_step}")
        chunks = read_chunks(run)
        chunks.append({"start_step": start_step, "end_step": end_step, "max_steps": max_steps,
                       "wall_s": round(wall, 2), "device": self.env["device"]})
        (run / "accuracy_chunks.json").write_text(json.dumps(chunks))
        eval_time = final_eval_seconds(read_log(run / "log.jsonl"))
        if max_steps == 0 and eval_time is not None:
            self.eval_seconds.append(eval_time)

    # ------------------------------------------------------------------------------------------ records
    def record(self, stage: Stage, config: ExperimentConfig) -> dict[str, Any]:
        """The stage's JSON: config, official metrics, training facts, inference facts, checks."""
        import torch

        from ftkd.engine.checkpoint import load_checkpoint
        from ftkd.models.build import build_model
        from ftkd.utils.configuration import to_dict

        run = self.run_dir(stage.name)
        metrics = json.loads((run / "metrics.json").read_text())
        state = load_checkpoint(run / "checkpoints" / "final.pt")["model"]
        shapes = {k: list(v.shape) for k, v in state.items()}
        baseline = self.baseline_config(stage)
        reference = {k: list(v.shape) for k, v in build_model(baseline.model).state_dict().items()}
        entries = read_log(run / "log.jsonl")
        chunks = read_chunks(run)
        record: dict[str, Any] = {
            "format": FORMAT,
            "stage": stage.name,
            "seed": self.seed,
            "profile": self.profile.name,
            "kind": stage.kind,
            "student": stage.student or None,
            "description": stage.description,
            "teacher_stage": stage.teacher or None,
            "config_file": self.config_path(stage.role),
            "command": f"ftkd {stage.kind} " + " ".join(os.path.relpath(a, ROOT) if a.startswith(str(ROOT)) else a
                                                        for a in self.command_argv(stage)),
            "config": to_dict(config),
            "metrics": summarize_metrics(metrics),
            "train": {**training_facts(entries, chunks), "processes": self.processes},
            "inference": inference_facts(config, sum(math.prod(s) for s in shapes.values())),
            "checks": {
                "student_keys_match_baseline": shapes == reference,
                "extra_keys": sorted(set(shapes) - set(reference))[:10],
                "missing_keys": sorted(set(reference) - set(shapes))[:10],
                "recipe_differences_to_baseline": recipe_differences(to_dict(config), to_dict(baseline)),
            },
            "environment": self.env,
            "dataset": self.data_record,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if self.wants_breakdown(run):
            record["breakdown"] = self.breakdown(run, config)
            record["split_half"] = self.split_half(run, config)
            if stage.name in ONLINE_PARITY_STAGES and torch.cuda.is_available():
                record["online_parity"] = self.online_parity(run, config)
            if stage.student == "streampetr":
                record["attention_geometry"] = self.attention_geometry(run, config)
        return record

    def wants_breakdown(self, run: Path) -> bool:
        return not self.args.skip_breakdown and (run / "results_final.json").is_file()

    def breakdown(self, run: Path, config: ExperimentConfig) -> dict[str, Any]:
        """AP per distance band and visibility level of the run's final predictions (ftkd.engine.breakdown), also
        written to `<run>/breakdown.json`."""
        from ftkd.engine.breakdown import breakdown

        return self._analysis(run, config, "breakdown", lambda results, split: breakdown(
            results, self.dataroot, config.data.version, split, out_path=run / "breakdown.json", nusc=self.nusc))

    def split_half(self, run: Path, config: ExperimentConfig) -> dict[str, Any]:
        """The official metric of the run's final predictions on the first and the second half of the val scenes
        (ftkd.engine.breakdown.split_half), for the report's estimate of evaluation noise."""
        from ftkd.engine.breakdown import split_half

        return self._analysis(run, config, "split-half evaluation", lambda results, split: split_half(
            results, self.dataroot, config.data.version, split, nusc=self.nusc))

    def online_parity(self, run: Path, config: ExperimentConfig) -> dict[str, Any]:
        """The official metric of the trained student through each online inference option (bf16 autocast, bf16
        weights, compiled decoder layer; CUDA graphs) and their logits against eager fp32 (online_parity.py)."""
        from online_parity import online_parity

        return self._analysis(run, config, "online parity", lambda results, split: online_parity(
            run / "checkpoints" / "final.pt", run / "online_parity", split=split, nusc=self.nusc))

    def attention_geometry(self, run: Path, config: ExperimentConfig) -> dict[str, Any]:
        """Whether the trained StreamPETR's cross-attention finds the objects' tokens, and how much its outputs
        depend on the images (streampetr_attention.py; seconds)."""
        from streampetr_attention import attention_geometry

        return self._analysis(run, config, "attention geometry", lambda results, split: attention_geometry(
            run / "checkpoints" / "final.pt", split, dataroot=str(self.dataroot)))

    def _analysis(self, run: Path, config: ExperimentConfig, label: str,
                  compute: Callable[[Path, str], dict[str, Any]]) -> dict[str, Any]:
        """`compute(results_final.json, val split)` with the dataset's tables loaded once; {"error": ...} if it
        fails, so the stage's JSON is never lost to an analysis."""
        from ftkd.engine.evaluation import load_nuscenes

        try:
            if self.nusc is None:
                self.nusc = load_nuscenes(self.dataroot, config.data.version)
            return compute(run / "results_final.json", config.data.val_split)
        except Exception as err:  # any failure of the analysis is recorded; the stage is recorded all the same
            logger.warning(f"{run.name}: {label} failed: {type(err).__name__}: {err}")
            return {"error": f"{type(err).__name__}: {err}"}


@contextlib.contextmanager
def run_lock(run: Path) -> Iterator[None]:
    """Hold `<run>/.lock` (our pid) while a stage trains, so that two processes (e.g. one per GPU) never train the
    same run folder; a lock whose process is gone is taken over."""
    lock = run / ".lock"
    if lock.is_file():
        owner = lock.read_text().strip()
        if owner.isdigit() and int(owner) != os.getpid() and Path(f"/proc/{owner}").exists():
            raise SystemExit(f"{run} is being trained by process {owner} (remove {lock} if that is wrong)")
    lock.write_text(str(os.getpid()))
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def order_stages(names: list[str], benchmark: Benchmark) -> list[Stage]:
    """The requested stages in the order given, each missing teacher (or backbone source) inserted before the first
    stage that needs it."""
    ordered: list[Stage] = []
    for name in names:
        if name not in STAGES:
            raise SystemExit(f"unknown stage {name!r}; expected some of {list(STAGES)}")
        stage = STAGES[name]
        teacher = STAGES.get(stage.needs)
        if teacher is not None and teacher not in ordered and not benchmark.is_finished(teacher):
            if teacher.name not in names:
                logger.info(f"{name} needs stage {teacher.name} (seed {benchmark.seed}): running it first")
            ordered.append(teacher)
        if stage not in ordered:
            ordered.append(stage)
    return ordered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stages", nargs="+", metavar="STAGE", help=f"some of: {' '.join(STAGES)}")
    parser.add_argument("--seed", type=int, default=0, help="train.seed of every run (the dataset is fixed)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="bench")
    parser.add_argument("--budget-s", type=float, default=540.0, help="wall-clock budget of this command (s)")
    parser.add_argument("--out-json-dir", default=str(ROOT / "docs" / "results" / "accuracy"),
                        help="where the stage JSONs are written")
    parser.add_argument("--bundle", default=None, metavar="NAME",
                        help="write every JSON of this command into <out-json-dir>/NAME.json (a list; for device runs "
                        "whose output folder takes few files)")
    parser.add_argument("--runs-dir", default=str(ROOT / "runs" / "accuracy"),
                        help="run folders: <runs-dir>/<profile>/seed<S>/<stage>")
    parser.add_argument("--dataroot", default=None, help="synthetic set (default: the profile's, generated if missing)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes generating the dataset")
    parser.add_argument("--loader-workers", type=int, default=0,
                        help="data.num_workers of the training runs (default: cores - 2, at most 14)")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="extra dotted overrides for every training stage, e.g. train.epochs=4")
    parser.add_argument("--compile", action="store_true", help="train.compile=true (torch.compile of the objective)")
    parser.add_argument("--skip-data-check", action="store_true", help="do not run the quick data check")
    parser.add_argument("--skip-breakdown", action="store_true",
                        help="no AP per distance band / visibility level and no split-half metric in the stage JSONs "
                        "(saves ~2x a metric run)")
    parser.add_argument("--one-chunk", action="store_true",
                        help="train every stage to its end in one chunk, whatever the budget: where a run's "
                        "checkpoint is lost with the machine when the command ends, stopping early saves nothing")
    parser.add_argument("--commit", default=None, help="commit to record where the tree has no git metadata")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    import torch

    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
    benchmark = Benchmark(args)
    stages = order_stages(args.stages, benchmark)
    untrained = [s.name for s in stages if s.kind != "data" and not benchmark.is_finished(s)]
    if benchmark.processes > 1 and len(untrained) > 1:
        raise SystemExit(f"under torchrun a launch trains one stage, this one would train {untrained}: launch them "
                         "one after another (see the module docstring)")
    statuses, finished = [], True
    for stage in stages:
        status = benchmark.run_stage(stage)
        statuses.append(status)
        logger.info(status)
        if "stopped by the budget" in status:
            finished = False
            break
    done = {s.split(":")[0] for s in statuses}
    for name in args.stages:
        if name not in done:
            statuses.append(f"{name}: not started (budget)")
            finished = False
    print(f"\naccuracy benchmark, profile {args.profile}, seed {args.seed}, {benchmark.env['device']}, "
          f"{args.budget_s - benchmark.remaining():.0f} s of {args.budget_s:.0f} s")
    for status in statuses:
        print(f"  {status}")
    return 0 if finished else 3


if __name__ == "__main__":
    sys.exit(main())
