"""GPU utilisation of a GPU session, grouped by what ran on each GPU at each moment.

`benchmarks/gpu_session.sh` logs `nvidia-smi dmon -s um` every 15 s (`json/logs/dmon.log`) and benchmarks/lanes.py
records when each run started on which GPU and for how long (`lanes.json`). This script joins the two: every dmon
sample of a GPU is labelled by the runs active on that GPU then (e.g. "2 SparseBEV-family" or "1 StreamPETR"), and
the SM-busy percentage and memory in use are summarised per label. It is the evidence for how many runs a GPU should
take at once (`LANES_PER_GPU`):

    python benchmarks/gpu_utilisation.py --dmon json/logs/dmon.log --lanes json/lanes*.json --out utilisation.json
"""

from __future__ import annotations

import argparse
import calendar
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_records import write_json  # noqa: E402
from accuracy_stages import STAGES  # noqa: E402


def read_dmon(text: str, first_run_start: float) -> list[tuple[float, int, float, float]]:
    """(epoch seconds, gpu, SM %, framebuffer MiB) of every sample of an `nvidia-smi dmon -s um -o T` log. Its
    HH:MM:SS times are UTC; the log starts before the first run, so its first sample is put at the last such time at
    or before `first_run_start`, and a time earlier than the previous one is on the next day."""
    samples, day, previous = [], None, -1.0
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        hours, minutes, seconds = (int(x) for x in fields[0].split(":"))
        clock = hours * 3600 + minutes * 60 + seconds
        if day is None:
            day = calendar.timegm(time.gmtime(first_run_start)[:3] + (0, 0, 0))
            if day + clock > first_run_start:
                day -= 86400.0
        elif clock < previous:
            day += 86400.0
        previous = clock
        samples.append((day + clock, int(fields[1]), float(fields[2]), float(fields[8])))
    return samples


def run_label(runs: list[str]) -> str:
    """"idle", or the count of each model family among the stages running, e.g. "2 SparseBEV-family"."""
    if not runs:
        return "idle"
    families = ["StreamPETR" if STAGES[stage].student == "streampetr" else "SparseBEV-family" for stage in runs]
    return " + ".join(f"{families.count(name)} {name}" for name in sorted(set(families)))


def utilisation(dmon_text: str, lanes: dict[str, Any]) -> dict[str, Any]:
    """{label: {samples, sm_percent_median, sm_percent_p10, sm_percent_p90, memory_mib_median}} over all GPUs."""
    # a lane is named gpu<G>.<k>, or gpu<G1>+<G2>... .<k> for a run spread over several GPUs (DDP): on each of them
    runs = [(int(gpu), i["started"], i["started"] + i["seconds"], i["stage"])
            for i in lanes["items"] if i.get("started") and i.get("seconds")
            for gpu in i["lane"][3:].split(".")[0].split("+")]
    if not runs:
        raise ValueError("lanes.json: no item with a start time and a duration")
    groups: dict[str, list[tuple[float, float]]] = {}
    for moment, gpu, sm, memory in read_dmon(dmon_text, min(start for _, start, _, _ in runs)):
        active = sorted(stage for g, start, end, stage in runs if g == gpu and start <= moment < end)
        groups.setdefault(run_label(active), []).append((sm, memory))
    summary = {}
    for label, values in sorted(groups.items()):
        sm = sorted(v[0] for v in values)
        deciles = statistics.quantiles(sm, n=10) if len(sm) > 1 else [sm[0]] * 9
        summary[label] = {"samples": len(values), "sm_percent_median": statistics.median(sm),
                          "sm_percent_p10": deciles[0], "sm_percent_p90": deciles[-1],
                          "memory_mib_median": statistics.median(v[1] for v in values)}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dmon", required=True, help="nvidia-smi dmon -s um -o T log")
    parser.add_argument("--lanes", required=True, nargs="+",
                        help="the lanes*.json files of benchmarks/lanes.py of the same session (lanes_first.json, "
                             "lanes.json)")
    parser.add_argument("--out", required=True, help="JSON to write")
    args = parser.parse_args(argv)
    records = [json.loads(Path(path).read_text()) for path in args.lanes]
    environment = records[0].get("environment", {})
    lanes = {"environment": environment, "items": [item for record in records for item in record["items"]]}
    result = {"device": environment.get("device"), "commit": environment.get("commit"),
              "by_runs_on_the_gpu": utilisation(Path(args.dmon).read_text(), lanes)}
    write_json(result, Path(args.out))
    for label, row in result["by_runs_on_the_gpu"].items():
        print(f"{label:<40} {row['samples']:>4} samples, SM busy median {row['sm_percent_median']:.0f} % "
              f"(p10 {row['sm_percent_p10']:.0f}, p90 {row['sm_percent_p90']:.0f}), "
              f"memory {row['memory_mib_median']:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
