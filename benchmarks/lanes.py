"""Run many (stage, seed) items of the accuracy protocol at once on a multi-GPU machine, until a deadline.

`benchmarks/accuracy.py` runs the stages of one seed one after another in one process. On a machine with several
GPUs (and several small models per GPU) this script keeps every GPU busy: it starts `--lanes-per-gpu` lanes per GPU,
each lane a loop that takes the next item of the priority list whose teacher is trained (or that no other lane
holds), runs it as `accuracy.py STAGE --seed S` with `CUDA_VISIBLE_DEVICES` set to its GPU and the time left as
budget, and moves on. Items are given as `stage:seed` (`stage:0-2` for several seeds) in priority order:

    python benchmarks/lanes.py teacher:0-2 sparsebev:0-2 ftkd_sparsebev:0-2 --gpus 0,1,2,3 --lanes-per-gpu 2 \\
        --deadline-s 1300 --out-json-dir results/json

With `--gpus-per-lane N` (N > 1) a lane owns N GPUs and runs each item under `torchrun --nproc_per_node N`
(accuracy.py then trains with N processes at the same global batch). A distillation item waits for its teacher item
(same seed) to finish, a stage with `backbone_from` for that stage; an item whose teacher (or backbone source)
failed is skipped. Lanes
on a GPU named in `--hold GPU=FILE` start only once FILE exists (another job uses that GPU first). Every item's
output goes to `<out-json-dir>/<stage>_seed<S>.json` (accuracy.py's JSON) and `<log-dir>/<stage>_seed<S>.log`;
`lanes.json` in the out folder (or `--lanes-json`) records what each lane ran, when, and how it ended. With
`--expected-s` an item starts only if it should end before the deadline (a run cut by the deadline yields nothing):
its stage's median time once one has finished, before that the estimate (`--expect STAGE=SECONDS` for stages that
differ). With
`--patience-s` a free lane keeps to the priority order: it waits for an earlier item whose teacher should end that
soon instead of starting a later item that is ready now. The dataset must exist already
(`accuracy.py data` first): lanes pass `--skip-data-check`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_records import environment, write_json  # noqa: E402
from accuracy_stages import STAGES  # noqa: E402  (the protocol's stage table, one source of truth)

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Item:
    """One (stage, seed) run and what became of it."""

    stage: str
    seed: int
    state: str = "waiting"  # waiting, running, done, failed, stopped (by the deadline), skipped
    lane: str = ""
    started: float | None = None
    seconds: float | None = None
    exit_code: int | None = None

    @property
    def name(self) -> str:
        return f"{self.stage}_seed{self.seed}"

    @property
    def needs(self) -> str:
        """The stage this one waits for (same seed): its teacher, or the stage that initialises its backbone."""
        return STAGES[self.stage].needs


def parse_items(specs: list[str]) -> list[Item]:
    """`stage:seed` or `stage:first-last` -> items in the order given (duplicates dropped)."""
    items: list[Item] = []
    for spec in specs:
        stage, _, seeds = spec.partition(":")
        if stage not in STAGES or STAGES[stage].kind == "data":
            raise SystemExit(f"item {spec!r}: unknown stage {stage!r}; expected one of {list(STAGES)[1:]}")
        first, _, last = (seeds or "0").partition("-")
        try:
            seed_range = range(int(first), int(last or first) + 1)
        except ValueError:
            raise SystemExit(f"item {spec!r}: expected stage:seed or stage:first-last, e.g. teacher:0-2") from None
        for seed in seed_range:
            if not any(i.stage == stage and i.seed == seed for i in items):
                items.append(Item(stage, seed))
    return items


def parse_estimates(specs: list[str]) -> dict[str, float]:
    """`STAGE=SECONDS` -> {stage: seconds}."""
    estimates = {}
    for spec in specs:
        stage, _, seconds = spec.partition("=")
        if stage not in STAGES:
            raise SystemExit(f"--expect {spec!r}: unknown stage {stage!r}")
        try:
            estimates[stage] = float(seconds)
        except ValueError:
            raise SystemExit(f"--expect {spec!r}: expected STAGE=SECONDS, e.g. teacher_long=900") from None
    return estimates


@dataclass
class Queue:
    """The shared priority list; `take` hands a lane the first item it may run now."""

    items: list[Item]
    environment: dict = field(default_factory=dict)  # device, commit and versions, recorded with the items
    estimates: dict[str, float] = field(default_factory=dict)  # stage -> expected seconds before one has finished
    default_estimate_s: float = 0.0  # expected seconds of a stage without an estimate
    patience_s: float = 0.0  # a lane waits for an earlier item whose teacher should end within this many seconds
    lock: threading.Lock = field(default_factory=threading.Lock)

    def find(self, stage: str, seed: int) -> Item | None:
        return next((i for i in self.items if i.stage == stage and i.seed == seed), None)

    def expected_s(self, stage: str) -> float:
        """How long an item of `stage` should take: the median of its finished items, else the given estimate."""
        done = sorted(i.seconds for i in self.items if i.stage == stage and i.state == "done" and i.seconds)
        return done[len(done) // 2] if done else self.estimates.get(stage, self.default_estimate_s)

    def take(self, lane: str, time_left: float = float("inf"), now: float | None = None) -> Item | None | str:
        """An item to run that should finish within `time_left` seconds, None when nothing is left (or nothing
        left fits), "wait" when the rest waits for running teachers, or when an earlier item's teacher should end
        within `patience_s` (the lane is kept for that item rather than given to a later one; not for a teacher that
        has overrun its estimate). `now`: wall time."""
        now = time.time() if now is None else now
        with self.lock:
            waiting = False
            for item in self.items:
                if item.state != "waiting" or self.expected_s(item.stage) > time_left:
                    continue
                teacher = self.find(item.needs, item.seed) if item.needs else None
                if teacher is not None and teacher.state in ("failed", "stopped", "skipped"):
                    item.state = "skipped"
                    continue
                if teacher is not None and teacher.state != "done":
                    waiting = True
                    if teacher.state == "running" and self.patience_s > 0:
                        # a teacher past its estimate has no known end: it holds no lane (else a lane could idle
                        # until a ready later item no longer fits, as in the seventh session)
                        teacher_left = self.expected_s(teacher.stage) - (now - teacher.started)
                        if 0 < teacher_left <= self.patience_s and \
                                teacher_left + self.expected_s(item.stage) <= time_left:
                            return "wait"
                    continue
                item.state, item.lane, item.started = "running", lane, now
                return item
            return "wait" if waiting or any(i.state == "running" for i in self.items) else None

    def snapshot(self) -> list[dict]:
        with self.lock:
            return [dict(vars(i)) for i in self.items]

    def write(self, path: Path) -> None:
        """What each item became so far, with the environment that ran them (atomic JSON)."""
        write_json({"environment": self.environment, "items": self.snapshot()}, path)


def item_command(item: Item, gpus: str, budget: float, args: argparse.Namespace) -> list[str]:
    """accuracy.py's command line for `item` on the GPUs `gpus` ("2" or "0,1"): under torchrun for several."""
    nproc = len(gpus.split(","))
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
                if nproc > 1 else [sys.executable])
    return [*launcher, str(ROOT / "benchmarks" / "accuracy.py"), item.stage, "--seed", str(item.seed),
            "--profile", args.profile, "--budget-s", f"{budget:.0f}", "--out-json-dir", args.out_json_dir,
            "--runs-dir", args.runs_dir, "--skip-data-check", "--loader-workers", str(args.loader_workers),
            *(["--dataroot", args.dataroot] if args.dataroot else []),
            *(["--commit", args.commit] if args.commit else []),
            *(["--one-chunk"] if args.one_chunk else [])]


def lane_groups(gpus: str, gpus_per_lane: int) -> list[str]:
    """"0,1,2,3" with 2 GPUs per lane -> ["0,1", "2,3"]; the GPUs must divide evenly."""
    devices = gpus.split(",")
    if gpus_per_lane < 1 or len(devices) % gpus_per_lane:
        raise SystemExit(f"--gpus-per-lane {gpus_per_lane}: expected a divisor of the {len(devices)} GPUs "
                         f"of --gpus {gpus}")
    return [",".join(devices[i:i + gpus_per_lane]) for i in range(0, len(devices), gpus_per_lane)]


def run_lane(lane: str, gpu: str, queue: Queue, args: argparse.Namespace, deadline: float) -> None:
    """Take items until none is left or the deadline is too close to start one (`gpu`: one index, or several
    comma-separated for a lane of several GPUs)."""
    holds = [Path(file) for device, file in (h.split("=", 1) for h in args.hold) if device in gpu.split(",")]
    while not all(file.exists() for file in holds):
        if time.monotonic() > deadline - args.min_item_s:
            return
        time.sleep(5)
    log_dir = Path(args.log_dir)
    while True:
        if deadline - time.monotonic() < args.min_item_s:
            return
        item = queue.take(lane, deadline - time.monotonic())
        if item is None:
            return
        if item == "wait":
            time.sleep(10)
            continue
        command = item_command(item, gpu, deadline - time.monotonic(), args)
        environment = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu, "PYTHONUNBUFFERED": "1"}
        start = time.monotonic()
        with open(log_dir / f"{item.name}.log", "w") as log:
            code = subprocess.call(command, env=environment, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        with queue.lock:
            item.seconds, item.exit_code = round(time.monotonic() - start, 1), code
            item.state = {0: "done", 3: "stopped"}.get(code, "failed")
        queue.write(Path(args.lanes_json))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("items", nargs="+", metavar="STAGE:SEEDS", help="e.g. teacher:0-2 ftkd_sparsebev:0")
    parser.add_argument("--gpus", default="0", help="comma-separated CUDA device indices")
    parser.add_argument("--lanes-per-gpu", type=int, default=1, help="lanes on each GPU (or group of GPUs)")
    parser.add_argument("--gpus-per-lane", type=int, default=1,
                        help="GPUs of one lane: >1 runs every item under torchrun on that many (DDP)")
    parser.add_argument("--deadline-s", type=float, required=True, help="seconds from now when every lane stops")
    parser.add_argument("--min-item-s", type=float, default=150.0, help="no item starts with less time left")
    parser.add_argument("--expected-s", type=float, default=0.0,
                        help="an item starts only if it should finish before the deadline: its stage's median time "
                             "once one has finished, before that this estimate (0: any item starts)")
    parser.add_argument("--expect", nargs="*", default=[], metavar="STAGE=SECONDS",
                        help="estimates of stages that take longer or shorter than --expected-s")
    parser.add_argument("--patience-s", type=float, default=0.0,
                        help="a free lane waits rather than start a later item when an earlier item's teacher "
                             "should end within this many seconds (by the estimates)")
    parser.add_argument("--hold", nargs="*", default=[], metavar="GPU=FILE",
                        help="lanes on GPU (or on a group of GPUs holding it) start once FILE exists")
    parser.add_argument("--profile", default="bench")
    parser.add_argument("--out-json-dir", required=True)
    parser.add_argument("--runs-dir", default=str(ROOT / "runs" / "accuracy"))
    parser.add_argument("--dataroot", default=None, help="the synthetic set (default: the profile's)")
    parser.add_argument("--commit", default=None, help="commit to record where the tree has no git metadata")
    parser.add_argument("--log-dir", default=None, help="one log per item (default: <out-json-dir>/logs)")
    parser.add_argument("--lanes-json", default=None,
                        help="what each item became (default: <out-json-dir>/lanes.json; a second instance on other "
                             "GPUs names its own)")
    parser.add_argument("--loader-workers", type=int, default=0, help="data.num_workers of every run (0: default)")
    parser.add_argument("--one-chunk", action="store_true",
                        help="accuracy.py --one-chunk: every run trains to its end (for machines whose files do not "
                             "outlive the session)")
    args = parser.parse_args(argv)
    args.log_dir = args.log_dir or str(Path(args.out_json_dir) / "logs")
    args.lanes_json = args.lanes_json or str(Path(args.out_json_dir) / "lanes.json")
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.deadline_s
    estimates = parse_estimates(args.expect)
    queue = Queue(parse_items(args.items), environment(args.commit), estimates=estimates,
                  default_estimate_s=args.expected_s, patience_s=args.patience_s)
    lanes = [(f"gpu{group.replace(',', '+')}.{k}", group) for k in range(args.lanes_per_gpu)
             for group in lane_groups(args.gpus, args.gpus_per_lane)]
    threads = [threading.Thread(target=run_lane, args=(name, gpu, queue, args, deadline), name=name)
               for name, gpu in lanes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.write(Path(args.lanes_json))
    summary = queue.snapshot()
    for row in summary:
        print(f"{row['stage']:<18} seed {row['seed']}  {row['state']:<8} {row['lane']:<8} {row['seconds'] or '':>7}")
    return 0 if all(row["state"] == "done" for row in summary) else 3


if __name__ == "__main__":
    sys.exit(main())
