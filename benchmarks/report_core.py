"""Shared primitives of benchmarks/report.py and its section modules: the accuracy JSON format, a stage's seed
records (`Row`), seed statistics (mean +- sample std, seed-paired differences, verdicts) and markdown cells/tables.

No module here imports report.py, so report.py, report_sections.py, report_noise.py and report_studies.py can all
import it.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scipy.stats import t as student_t

FORMAT = "ftkd-accuracy-v1"
METRICS = ("NDS", "mAP", "mATE", "mASE", "mAOE", "mAVE", "mAAE")
PERCENT = {"NDS", "mAP"}  # shown x100, as in the paper
LOWER_IS_BETTER = {"mATE", "mASE", "mAOE", "mAVE", "mAAE"}
BREAKDOWN_PREFIX = "mAP@"  # Row.values("mAP@distance:0-20") is the mAP of that breakdown subset
# The detection classes in the devkit's order (the order of its tables); Row.values("AP_car") is a class's AP
CLASSES = ("car", "truck", "bus", "trailer", "construction_vehicle", "pedestrian", "motorcycle", "bicycle",
           "traffic_cone", "barrier")


@dataclass
class Row:
    """One stage over its seeds: {metric: {seed: value}} and the per-seed records."""

    stage: str
    records: dict[int, dict[str, Any]]

    @property
    def seeds(self) -> list[int]:
        return sorted(self.records)

    def analyses(self, key: str, field: str) -> dict[int, dict[str, Any]]:
        """{seed: record[key]} of the seeds whose record holds the analysis `key` with `field` (not its error)."""
        return {seed: record[key] for seed, record in sorted(self.records.items())
                if field in record.get(key, {})}

    def values(self, metric: str) -> dict[int, float]:
        out = {}
        for seed, record in self.records.items():
            value = record["metrics"].get(metric)
            if value is None and metric.startswith("AP_"):
                value = record["metrics"].get("per_class_AP", {}).get(metric[3:])
            if value is None and metric.startswith(BREAKDOWN_PREFIX):
                value = breakdown_map(record, metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                out[seed] = float(value)
        return out


def breakdown_map(record: dict[str, Any], metric: str) -> float | None:
    """mAP of one breakdown subset of a record, metric "mAP@<family>:<key>" (None if not recorded)."""
    family, _, key = metric[len(BREAKDOWN_PREFIX):].partition(":")
    breakdown = record.get("breakdown")
    subset = breakdown.get(family, {}).get(key, {}) if isinstance(breakdown, dict) else {}
    return subset.get("mAP") if isinstance(subset, dict) else None


def train_processes(record: dict[str, Any]) -> int:
    """How many processes trained a run: more than 1 under torchrun (DDP, BatchNorm statistics per process)."""
    return (record.get("train") or {}).get("processes", 1)


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1 in the denominator; None for a single value)."""
    if not values:
        raise ValueError("mean_std of no values")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def load_records(results_dir: Path, profile: str) -> tuple[dict[str, Row], list[dict[str, Any]], list[str]]:
    """Stage rows of `profile`, the dataset records and warnings about files that were skipped."""
    rows: dict[str, Row] = {}
    datasets: list[dict[str, Any]] = []
    warnings: list[str] = []
    for path in sorted(results_dir.glob("*.json")) if results_dir.is_dir() else []:
        try:
            loaded = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            warnings.append(f"{path.name}: not valid JSON ({err})")
            continue
        for record in loaded if isinstance(loaded, list) else [loaded]:  # a bundle holds a list of records
            if not isinstance(record, dict) or record.get("format") != FORMAT:
                warnings.append(f"{path.name}: not a {FORMAT} file, skipped")
                continue
            if record.get("profile") != profile:
                continue
            if record.get("kind") == "data":
                datasets.append(record)
                continue
            row = rows.setdefault(record["stage"], Row(record["stage"], {}))
            if int(record["seed"]) in row.records:
                if row.records[int(record["seed"])] == record:
                    continue  # the same record copied twice (a stage re-recorded by a resumed command)
                warnings.append(f"{path.name}: a second record for {record['stage']} seed {record['seed']}, skipped")
                continue
            row.records[int(record["seed"])] = record
    return rows, datasets, warnings


def is_percent(metric: str) -> bool:
    return metric in PERCENT or metric.startswith("AP_") or metric.startswith(BREAKDOWN_PREFIX)


def value_text(metric: str, value: float | None, signed: bool = False) -> str:
    """'45.31' for a value of the metric (percent with 2 decimals for NDS, mAP and APs, 3 decimals for errors),
    '+1.20' when signed; '—' for None."""
    if value is None:
        return "—"
    scale, digits = (100.0, 2) if is_percent(metric) else (1.0, 3)
    return f"{value * scale:{'+' if signed else ''}.{digits}f}"


def fmt(metric: str, values: dict[int, float]) -> str:
    """'45.31 ± 0.42' (percent for NDS/mAP, 3 decimals for errors); '—' without values."""
    if not values:
        return "—"
    mean, std = mean_std(list(values.values()))
    return value_text(metric, mean) + ("" if std is None else f" ± {value_text(metric, std)}")


def difference_text(metric: str, difference: tuple[float, float | None, int] | None) -> str:
    """'+1.20 ± 0.40 (n=3)' for a seed-paired difference (`paired`), '+1.20 (n=1)' on one seed; '—' for None."""
    if difference is None:
        return "—"
    mean, std, n = difference
    spread = "" if std is None else f" ± {value_text(metric, std)}"
    return f"{value_text(metric, mean, signed=True)}{spread} (n={n})"



# speed.py sections that time a whole online step (new frame through the backbone + decoder)
END_TO_END_MODES = ("eager_fp32", "eager_bf16", "graph_bf16", "graph_bf16_weights", "graph_compile_bf16",
                    "graph_compile_bf16_weights")


def fps_of(speed: dict[str, Any] | None, arch: str) -> tuple[float | None, str]:
    """The end-to-end online FPS of a student architecture from speed.json (the fastest measured end-to-end mode,
    opt-in options included) and its label."""
    if not speed or arch not in speed:
        return None, ""
    measured = [(float(entry["fps"]), mode) for mode in END_TO_END_MODES
                if isinstance(entry := speed[arch].get(mode), dict) and isinstance(entry.get("fps"), (int, float))
                and entry.get("cuda_graph") is not False]  # an option section run eagerly (CPU) is not its mode
    return max(measured) if measured else (None, "")


def paired(rows: dict[str, Row], stage_a: str, stage_b: str, metric: str) -> tuple[float, float | None, int] | None:
    """Mean and std over seeds of (a - b) for the seeds both stages have; None if they share none."""
    if stage_a not in rows or stage_b not in rows:
        return None
    a, b = rows[stage_a].values(metric), rows[stage_b].values(metric)
    common = sorted(set(a) & set(b))
    if not common:
        return None
    mean, std = mean_std([a[s] - b[s] for s in common])
    return mean, std, len(common)


def critical_t(n: int) -> float:
    """The two-sided 5 % critical value of Student's t for a mean of n paired differences (n - 1 degrees of
    freedom): 12.71 at n = 2, 4.30 at n = 3, 1.96 in the limit."""
    return float(student_t.ppf(0.975, n - 1))


def typical_paired_std(rows: dict[str, Row], metric: str, min_seeds: int = 3) -> float | None:
    """Root mean square of the paired-difference std over every pair of stages sharing at least `min_seeds` seeds:
    how noisy a comparison of two rows typically is here. One comparison's own std over 3 seeds can come out far too
    small by luck (over the 55 pairs of NDS differences of the twelfth session it ranged 0.12-3.56 NDS), and among
    the report's dozens of comparisons some will; None when no pair has enough seeds."""
    stages = sorted(stage for stage, row in rows.items() if len(row.values(metric)) >= min_seeds)
    stds = [difference[1] for i, a in enumerate(stages) for b in stages[i + 1:]
            if (difference := paired(rows, a, b, metric)) is not None and difference[2] >= min_seeds]
    return math.sqrt(sum(std**2 for std in stds) / len(stds)) if stds else None


def typical_text(rows: dict[str, Row], metrics: tuple[str, ...] = ("NDS", "mAP", "mAVE")) -> str:
    """`typical_paired_std` of each metric, as report text ("NDS 1.75, mAP 0.90, mAVE 0.050")."""
    return ", ".join(f"{metric} {value_text(metric, typical_paired_std(rows, metric))}" for metric in metrics)


def verdict(difference: tuple[float, float | None, int] | None, higher_is_better: bool,
            typical_std: float | None = None) -> str:
    """'reproduced' when the paired difference has the claimed sign and a paired t-test at 5 % (two-sided) tells it
    from zero: |mean| > t(n - 1) * s / sqrt(n), where s is the larger of the difference's own std and `typical_std`
    (`typical_paired_std`: no comparison is trusted to be quieter than this benchmark's comparisons typically are).
    With 2 or 3 seeds the sample std is itself so uncertain that a plain two-standard-error rule, or the own std
    alone, calls noise-sized differences reproduced."""
    if difference is None:
        return "not yet run"
    mean, std, n = difference
    if mean == 0 or (mean > 0) != higher_is_better:
        return "not reproduced"
    if std is None or n < 2:
        return "same direction, one seed (noise unknown)"
    return "reproduced" if told_apart(difference, typical_std) else "same direction, within noise"


def told_apart(difference: tuple[float, float | None, int] | None, typical_std: float | None = None) -> bool:
    """Whether a paired difference passes `verdict`'s test in either direction (False below 2 seeds)."""
    if difference is None or difference[1] is None or difference[2] < 2:
        return False
    mean, std, n = difference
    spread = max(std, typical_std or 0.0)
    return mean != 0 and (spread == 0 or abs(mean) > critical_t(n) * spread / math.sqrt(n))


def seeds_to_show(effect: float, std: float) -> int:
    """The fewest seeds per row at which a paired difference of `effect` with this std passes `verdict`'s test."""
    n = 2
    while not told_apart((effect, std, n)):
        n += 1
    return n


def markdown_table(header: list[str], lines: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(l) + " |" for l in lines]


def seed_count(rows: dict[str, Row], stage: str) -> str:
    return str(len(rows[stage].seeds)) if stage in rows else "0"


def metric_cells(rows: dict[str, Row], stage: str, metrics: tuple[str, ...] = METRICS) -> list[str]:
    row = rows.get(stage)
    return [fmt(m, row.values(m)) if row else "—" for m in metrics]
