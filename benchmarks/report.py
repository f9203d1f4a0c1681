"""Rebuild docs/results.md and docs/results/accuracy.png from the JSON files of benchmarks/accuracy.py.

    python benchmarks/report.py [--results-dir docs/results/accuracy] [--speed docs/results/speed.json]
                                [--out docs/results.md] [--png docs/results/accuracy.png] [--profile bench]

Every number in the page comes from those files: per (stage, seed) one JSON; a row shows mean +- sample standard
deviation over its seeds and their count. Claims are judged on differences paired by seed (the same seed gives the
baseline and the distilled student the same initialisation and data order). Rows that have not been run are listed,
never filled in. Works with zero, one or many JSON files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = "ftkd-accuracy-v1"
METRICS = ("NDS", "mAP", "mATE", "mASE", "mAOE", "mAVE", "mAAE")
PERCENT = {"NDS", "mAP"}  # shown x100, as in the paper
LOWER_IS_BETTER = {"mATE", "mASE", "mAOE", "mAVE", "mAAE"}
MAIN_STAGES = ("teacher", "sparsebev", "ftkd_sparsebev", "streampetr", "ftkd_streampetr")
MAIN_SEEDS = 3  # the main rows need at least this many seeds
CLASSES = ("car", "truck", "bus", "trailer", "construction_vehicle", "pedestrian", "motorcycle", "bicycle",
           "traffic_cone", "barrier")

# The paper's nuScenes-val numbers (FTKD, arXiv 2512.08247; collected in the project's reference notes on the paper,
# sections 2.5 and 2.6). Its mask-ratio sweep used query ("BEV") FFR alone and its FLD selection rows FLD alone;
# our sweeps change one knob of the full FTKD run, so compare orderings, not levels.
PAPER: dict[str, dict[str, float]] = {
    "sparsebev": {"NDS": 55.5, "mAP": 44.7, "mAVE": 0.251, "FPS": 20.2},
    "kd_mgd": {"NDS": 55.1, "mAP": 44.8, "FPS": 20.2},
    "ftkd_sparsebev": {"NDS": 56.5, "mAP": 46.0, "mAVE": 0.234, "FPS": 20.2},
    "streampetr": {"NDS": 55.0, "mAP": 45.0, "FPS": 33.9},
    "ftkd_streampetr": {"NDS": 56.3, "mAP": 46.3, "FPS": 33.9},
    "abl_query": {"NDS": 55.8, "mAP": 45.2, "mAVE": 0.243},
    "abl_query_fld": {"NDS": 56.3, "mAP": 45.6, "mAVE": 0.235},
    "mask_0.4": {"NDS": 55.4, "mAP": 44.8},
    "mask_0.5": {"NDS": 55.8, "mAP": 45.2},
    "mask_0.75": {"NDS": 54.9, "mAP": 45.1},
    "mask_0.9": {"NDS": 54.8, "mAP": 44.3},
    "fld_fg": {"NDS": 55.4, "mAP": 44.9},
    "fld_bg": {"NDS": 55.5, "mAP": 45.1},
    "fld_both": {"NDS": 55.9, "mAP": 45.3},
}
PAPER_ONLY_ROWS = {"sparsebev": [("+FD3D (not implemented here)", {"NDS": 55.0, "mAP": 44.6, "FPS": 20.2}),
                                 ("+STXD (not implemented here)", {"NDS": 55.6, "mAP": 45.0, "FPS": 20.2})],
                   "streampetr": [("+STXD (not implemented here)", {"NDS": 55.6, "mAP": 45.5, "FPS": 33.9})]}

# (label, stage) rows of each table
MAIN_ROWS = {
    "sparsebev": [("SparseBEV (baseline)", "sparsebev"), ("+FitNet", "kd_fitnet"), ("+MGD", "kd_mgd"),
                  ("+MGD, weight 1e-3", "kd_mgd_w1e-3"), ("+logit KD", "kd_logit"),
                  ("+FTKD, past-only teacher", "kd_nofuture"), ("+FTKD", "ftkd_sparsebev"),
                  ("+FTKD, PV-FFR weight 1e-5", "ftkd_pvw_1e-5"),
                  ("+FTKD, PV-FFR weight 1e-5, 12-epoch teacher", "ftkd_long_pvw_1e-5")],
    "streampetr": [("StreamPETR (baseline)", "streampetr"), ("+FTKD", "ftkd_streampetr")],
}
TEACHER_ROWS = [("Offline teacher (past + current + future)", "teacher"),
                ("Offline teacher, 12 epochs", "teacher_long"),
                ("Teacher without future frames", "teacher_nofuture")]
ABLATION_ROWS = [("", "", "", "sparsebev"), ("", "x", "", "abl_query"), ("", "x", "x", "abl_query_fld"),
                 ("x", "x", "x", "ftkd_sparsebev")]  # PV-FFR, query-FFR, FLD, stage
MASK_ROWS = [("0.4", "mask_0.4"), ("0.5", "ftkd_sparsebev"), ("0.75", "mask_0.75"), ("0.9", "mask_0.9")]
FLD_ROWS = [("foreground", "fld_fg"), ("background", "fld_bg"), ("foreground + background", "ftkd_sparsebev")]
LR_ROWS = [("8", "recipe (2e-4)", "sparsebev"), ("32", "linear (x4)", "lr_bs32_linear"),
           ("32", "square root (x2)", "lr_bs32_sqrt")]  # global batch, lr rule, stage
ALL_STAGES = ("teacher", "teacher_nofuture", "sparsebev", "ftkd_sparsebev", "streampetr", "ftkd_streampetr",
              "kd_fitnet", "kd_mgd", "kd_logit", "kd_nofuture", "abl_query", "abl_query_fld", "mask_0.4", "mask_0.75",
              "mask_0.9", "fld_fg", "fld_bg", "ftkd_pvw_1e-5", "kd_mgd_w1e-3", "lr_bs32_linear", "lr_bs32_sqrt",
              "streampetr_nodn", "teacher_future1", "teacher_future7", "teacher_r18", "kd_nofuture_pvw_1e-5",
              "ftkd_future1_pvw_1e-5", "ftkd_future7_pvw_1e-5", "ftkd_teacher_r18_pvw_1e-5", "teacher_long",
              "ftkd_long_pvw_1e-5", "streampetr_lr4e-4")
# Beyond the paper (issue 10). Future horizon: (future frames, teacher stage, its FTKD student at PV-FFR weight 1e-5).
HORIZON_ROWS = [(0, "teacher_nofuture", "kd_nofuture_pvw_1e-5"), (1, "teacher_future1", "ftkd_future1_pvw_1e-5"),
                (3, "teacher", "ftkd_pvw_1e-5"), (7, "teacher_future7", "ftkd_future7_pvw_1e-5")]
# Capacity vs future: (label, teacher stage, student stage).
CAPACITY_ROWS = [("(a) large backbone, no future", "teacher_nofuture", "kd_nofuture_pvw_1e-5"),
                 ("(b) student-size backbone, future", "teacher_r18", "ftkd_teacher_r18_pvw_1e-5"),
                 ("(c) large backbone, future (the paper's teacher)", "teacher", "ftkd_pvw_1e-5")]
BEYOND_STAGES = {stage for rows in (HORIZON_ROWS, CAPACITY_ROWS) for _, *stages in rows for stage in stages}
# Where the gain lands: subsets of the breakdown JSON (family, key, label) and (label, distilled, baseline) pairs.
BREAKDOWN_PREFIX = "mAP@"  # Row.values("mAP@distance:0-20") is the mAP of that breakdown subset
BREAKDOWN_SUBSETS = [("distance", "0-20", "0-20 m"), ("distance", "20-40", "20-40 m"), ("distance", ">40", "> 40 m"),
                     ("visibility", "1", "visibility 0-40 %"), ("visibility", "2", "visibility 40-60 %"),
                     ("visibility", "3", "visibility 60-80 %"), ("visibility", "4", "visibility 80-100 %")]
GAIN_PAIRS = [("SparseBEV + FTKD", "ftkd_sparsebev", "sparsebev"),
              ("SparseBEV + FTKD, PV-FFR weight 1e-5", "ftkd_pvw_1e-5", "sparsebev"),
              ("StreamPETR + FTKD", "ftkd_streampetr", "streampetr")]
CHART_ROWS = [("teacher", "teacher"), ("SparseBEV", "sparsebev"), ("+FitNet", "kd_fitnet"), ("+MGD", "kd_mgd"),
              ("+logit KD", "kd_logit"), ("+FTKD past-only", "kd_nofuture"), ("+FTKD", "ftkd_sparsebev"),
              ("StreamPETR", "streampetr"), ("+FTKD ", "ftkd_streampetr")]


@dataclass
class Row:
    """One stage over its seeds: {metric: {seed: value}} and the per-seed records."""

    stage: str
    records: dict[int, dict[str, Any]]

    @property
    def seeds(self) -> list[int]:
        return sorted(self.records)

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


def fmt(metric: str, values: dict[int, float]) -> str:
    """'45.31 ± 0.42' (percent for NDS/mAP, 3 decimals for errors); '—' without values."""
    if not values:
        return "—"
    mean, std = mean_std(list(values.values()))
    scale, digits = (100.0, 2) if is_percent(metric) else (1.0, 3)
    text = f"{mean * scale:.{digits}f}"
    return text if std is None else f"{text} ± {std * scale:.{digits}f}"


def paper_value(metric: str, value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}" if metric in PERCENT or metric == "FPS" else f"{value:.3f}"


def fps_of(speed: dict[str, Any] | None, arch: str) -> tuple[float | None, str]:
    """The end-to-end online FPS of a student architecture from speed.json (best measured mode) and its label."""
    if not speed or arch not in speed:
        return None, ""
    for mode in ("graph_bf16", "eager_bf16", "eager_fp32"):
        entry = speed[arch].get(mode)
        if isinstance(entry, dict) and isinstance(entry.get("fps"), (int, float)):
            return float(entry["fps"]), mode
    return None, ""


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


def verdict(difference: tuple[float, float | None, int] | None, higher_is_better: bool) -> str:
    """'reproduced' when the paired difference has the claimed sign and exceeds two standard errors."""
    if difference is None:
        return "not yet run"
    mean, std, n = difference
    if mean == 0 or (mean > 0) != higher_is_better:
        return "not reproduced"
    if std is None or n < 2:
        return "same direction, one seed (noise unknown)"
    if std == 0 or abs(mean) > 2 * std / math.sqrt(n):
        return "reproduced"
    return "same direction, within noise"


def claims(rows: dict[str, Row]) -> list[tuple[str, str, str, str]]:
    """(claim, comparison, difference text, verdict) for every claim of the paper we test."""
    checks = [
        ("The offline teacher beats the SparseBEV student", "teacher", "sparsebev", ("NDS", "mAP")),
        ("The offline teacher beats the StreamPETR student", "teacher", "streampetr", ("NDS", "mAP")),
        ("FTKD improves SparseBEV", "ftkd_sparsebev", "sparsebev", ("NDS", "mAP", "mAVE")),
        ("FTKD improves StreamPETR", "ftkd_streampetr", "streampetr", ("NDS", "mAP", "mAVE")),
        ("FTKD beats FitNet feature imitation", "ftkd_sparsebev", "kd_fitnet", ("NDS",)),
        ("FTKD beats MGD", "ftkd_sparsebev", "kd_mgd", ("NDS",)),
        ("FTKD beats logit KD", "ftkd_sparsebev", "kd_logit", ("NDS",)),
        ("Future frames matter (FTKD vs past-only teacher)", "ftkd_sparsebev", "kd_nofuture", ("NDS", "mAVE")),
        ("Query-FFR alone helps", "abl_query", "sparsebev", ("NDS",)),
        ("+FLD helps on top of query-FFR", "abl_query_fld", "abl_query", ("NDS",)),
        ("+PV-FFR helps on top of query-FFR + FLD", "ftkd_sparsebev", "abl_query_fld", ("NDS",)),
        ("Mask ratio 0.5 beats 0.4", "ftkd_sparsebev", "mask_0.4", ("NDS",)),
        ("Mask ratio 0.5 beats 0.75", "ftkd_sparsebev", "mask_0.75", ("NDS",)),
        ("Mask ratio 0.5 beats 0.9", "ftkd_sparsebev", "mask_0.9", ("NDS",)),
        ("FLD on fg + bg beats fg only", "ftkd_sparsebev", "fld_fg", ("NDS",)),
        ("FLD on fg + bg beats bg only", "ftkd_sparsebev", "fld_bg", ("NDS",)),
    ]
    out = []
    for claim, a, b, metrics in checks:
        for metric in metrics:
            difference = paired(rows, a, b, metric)
            higher = metric not in LOWER_IS_BETTER
            if difference is None:
                text = "—"
            else:
                mean, std, n = difference
                scale, digits = (100.0, 2) if metric in PERCENT else (1.0, 3)
                spread = "" if std is None else f" ± {std * scale:.{digits}f}"
                text = f"{mean * scale:+.{digits}f}{spread} (n={n})"
            direction = "higher" if higher else "lower"
            out.append((f"{claim}: {metric} {direction}", f"{a} − {b}", text, verdict(difference, higher)))
    return out


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(l) + " |" for l in lines]


def _seeds(rows: dict[str, Row], stage: str) -> str:
    return str(len(rows[stage].seeds)) if stage in rows else "0"


def metric_cells(rows: dict[str, Row], stage: str, metrics: tuple[str, ...] = METRICS) -> list[str]:
    row = rows.get(stage)
    return [fmt(m, row.values(m)) if row else "—" for m in metrics]


def main_table(rows: dict[str, Row], student: str, speed: dict[str, Any] | None) -> list[str]:
    fps, mode = fps_of(speed, student)
    header = ["Method", "Seeds", *METRICS, "ΔNDS", "ΔmAP", "FPS", "Paper NDS", "Paper mAP", "Paper mAVE", "Paper FPS"]
    baseline = MAIN_ROWS[student][0][1]
    lines = []
    for label, stage in MAIN_ROWS[student]:
        deltas = []
        for metric in ("NDS", "mAP"):
            difference = paired(rows, stage, baseline, metric) if stage != baseline else None
            deltas.append("—" if difference is None else f"{difference[0] * 100:+.2f}")
        same_graph = stage in rows and all(
            r["checks"]["student_keys_match_baseline"] for r in rows[stage].records.values()
        )
        fps_cell = f"{fps:.1f}" if fps is not None and same_graph else "—"
        paper = PAPER.get(stage, {})
        lines.append([label, _seeds(rows, stage), *metric_cells(rows, stage), *deltas, fps_cell,
                      *(paper_value(m, paper.get(m)) for m in ("NDS", "mAP", "mAVE", "FPS"))])
    for label, paper in PAPER_ONLY_ROWS[student]:
        lines.append([label, "—", *["—"] * len(METRICS), "—", "—", "—",
                      *(paper_value(m, paper.get(m)) for m in ("NDS", "mAP", "mAVE", "FPS"))])
    note = (f"FPS: end-to-end online inference of the paper-scale {student} (ResNet-50, 256x704) from speed.json "
            f"({mode}, {speed.get('device', '?')}); the same number for every row whose checkpoint holds exactly the "
            "baseline's tensors (the distilled students run the baseline's graph)." if fps is not None
            else "FPS: no docs/results/speed.json entry for this architecture yet.")
    return _table(header, lines) + ["", note]


def simple_table(rows: dict[str, Row], first: list[str], entries: list[tuple[list[str], str, dict[str, float]]],
                 metrics: tuple[str, ...] = ("NDS", "mAP", "mAVE"), paper_columns: bool = True) -> list[str]:
    paper_metrics = metrics if paper_columns else ()
    header = [*first, "Seeds", *metrics, *(f"Paper {m}" for m in paper_metrics)]
    lines = [[*cells, _seeds(rows, stage), *metric_cells(rows, stage, metrics),
              *(paper_value(m, paper.get(m)) for m in paper_metrics)] for cells, stage, paper in entries]
    return _table(header, lines)


def missing_rows(rows: dict[str, Row]) -> list[str]:
    """One line per stage that lacks seeds: main rows need MAIN_SEEDS seeds, the others one."""
    lines = []
    for stage in ALL_STAGES:
        need = MAIN_SEEDS if stage in MAIN_STAGES or stage in BEYOND_STAGES else 1
        have = rows[stage].seeds if stage in rows else []
        if len(have) < need:
            got = f"seeds {have}" if have else "no run"
            lines.append(f"- `{stage}`: {len(have)} of {need} seed(s) ({got})")
    return lines


def provenance(rows: dict[str, Row], datasets: list[dict[str, Any]]) -> list[str]:
    header = ["Stage", "Seeds", "Epochs", "Steps", "Train min", "Wall min", "ms/step", "Peak GB", "Device",
              "Commit", "Dirty", "Same tensors as baseline", "Recipe differences"]
    lines = []
    for stage in ALL_STAGES:
        if stage not in rows:
            continue
        records = list(rows[stage].records.values())
        train = [r["train"] for r in records]

        def avg(key: str, scale: float = 1.0, digits: int = 1) -> str:
            values = [t[key] for t in train if isinstance(t.get(key), (int, float))]
            return f"{statistics.fmean(values) * scale:.{digits}f}" if values else "—"

        devices = sorted({r["environment"]["device"] for r in records})
        commits = sorted({str(r["environment"]["commit"])[:8] for r in records})
        dirty = sorted({str(r["environment"].get("git_dirty")) for r in records})
        same = all(r["checks"]["student_keys_match_baseline"] for r in records)
        differences = sorted({d for r in records for d in r["checks"]["recipe_differences_to_baseline"]})
        lines.append([stage, ",".join(map(str, rows[stage].seeds)),
                      ",".join(sorted({str(r["config"]["train"]["epochs"]) for r in records})),
                      avg("steps", digits=0), avg("train_s", 1 / 60), avg("wall_s", 1 / 60),
                      avg("ms_per_step_median", digits=0),
                      avg("max_memory_gb"), "; ".join(devices), ", ".join(commits), ", ".join(dirty),
                      "yes" if same else "NO", "; ".join(differences) or "none"])
    out = _table(header, lines) if lines else ["No runs yet."]
    for record in datasets[:1]:
        generation = record.get("generation", {})
        config = record.get("synth_config", {})
        size = f"{config.get('image_width')}x{config.get('image_height')}"
        seconds = generation.get("seconds", "?")
        out += ["", f"Dataset: synthetic set of {config.get('scenes')} scenes ({config.get('val_scenes')} val) x "
                f"{config.get('samples_per_scene')} keyframes at {size}; generated in {seconds} s "
                f"({generation.get('images_per_second', '?')} images/s, {generation.get('workers', '?')} workers) on "
                f"{record.get('environment', {}).get('cpu', '?')}."]
    return out


def plot(rows: dict[str, Row], path: Path) -> None:
    """Bars of NDS, mAP (percent) and mAVE per row with the seed standard deviation as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [(label, stage) for label, stage in CHART_ROWS if stage in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    if not present:
        for axis in axes:
            axis.axis("off")
        axes[1].text(0.5, 0.5, "no accuracy results yet", ha="center", va="center", fontsize=14)
    for axis, metric in zip(axes, ("NDS", "mAP", "mAVE")) if present else []:
        scale = 100.0 if metric in PERCENT else 1.0
        means, errors, colours = [], [], []
        for _, stage in present:
            values = list(rows[stage].values(metric).values())
            mean, std = mean_std(values) if values else (math.nan, None)
            means.append(mean * scale)
            errors.append((std or 0.0) * scale)
            colours.append("tab:gray" if stage == "teacher" else "tab:orange" if stage.startswith("ftkd") else
                           "tab:blue" if stage in ("sparsebev", "streampetr") else "tab:green")
        positions = list(range(len(present)))
        bars = axis.bar(positions, means, yerr=errors, color=colours, capsize=3)
        axis.bar_label(bars, [f"{m:.1f}" if metric in PERCENT else f"{m:.3f}" for m in means], fontsize=7)
        labels = [f"{label}\n(n={len(rows[stage].seeds)})" for label, stage in present]
        axis.set_xticks(positions, labels, rotation=45, ha="right", fontsize=8)
        axis.set_ylim(bottom=0)
        axis.set_title(f"{metric} ({'%, higher is better' if metric in PERCENT else 'm/s, lower is better'})")
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle("Synthetic benchmark: mean ± std over seeds")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


SPEED_MODES = (("eager_fp32", "eager fp32"), ("eager_bf16", "eager bf16"), ("graph_bf16", "CUDA graph bf16"),
               ("backbone_only_fp32", "backbone only, fp32"), ("backbone_only_bf16", "backbone only, bf16"),
               ("train_step_bf16", "training step, bf16"))
FPS_TARGETS = {"sparsebev": 100.0, "streampetr": 150.0}  # the issues' targets on an H100


def speed_section(speed: dict[str, Any] | None) -> list[str]:
    """Latency of the paper-size students from benchmarks/speed.py's JSON."""
    if not speed:
        return ["No docs/results/speed.json yet."]
    lines = []
    for arch in ("sparsebev", "streampetr"):
        entry = speed.get(arch)
        if not isinstance(entry, dict):
            continue
        for key, label in SPEED_MODES:
            row = entry.get(key, {})
            if not isinstance(row, dict) or "median_ms" not in row:
                lines.append([arch, label, "—", "—", "—", str(row.get("error") or row.get("skipped") or "not run")])
                continue
            peak = f"{row['peak_gib']:.1f}" if "peak_gib" in row else "—"
            lines.append([arch, label, f"{row['median_ms']:.2f}", f"{row['fps']:.1f}", peak, ""])
        onnx = entry.get("onnx", {})
        if isinstance(onnx, dict) and "latency" in onnx:
            parity = entry.get("onnx_parity", {})
            note = (f"{onnx['provider']} (available: {', '.join(onnx['providers_available'])}); export "
                    f"{onnx['export_s']:.0f} s, {onnx['file_mb']:.0f} MB, opset {onnx['opset']}; parity vs PyTorch: "
                    f"score {parity.get('max_score_diff', float('nan')):.1e}, box "
                    f"{parity.get('max_box_diff', float('nan')):.1e}, within tolerance: {parity.get('within_tolerance')}")
            lines.append([arch, "ONNX Runtime", f"{onnx['latency']['median_ms']:.1f}", f"{onnx['latency']['fps']:.2f}",
                          "—", note])
    out = _table(["Student", "Mode", "ms (median)", "FPS", "Peak GiB", "Note"], lines)
    verdicts = []
    for arch, target in FPS_TARGETS.items():
        fps, mode = fps_of(speed, arch)
        if fps is not None:
            verdicts.append(f"{arch}: {fps:.1f} FPS ({mode}) against the target of {target:.0f}: "
                            f"{'met' if fps >= target else 'not met'}")
    return out + ["", f"Device: {speed.get('device')}, commit {str(speed.get('commit'))[:8]}, torch "
                  f"{speed.get('torch')}. Protocol: {speed.get('protocol', '')}", "", *(f"- {v}" for v in verdicts)]


def scaling_section(scaling: dict[str, Any] | None) -> list[str]:
    """Multi-GPU distillation throughput from benchmarks/scaling.py's JSON."""
    if not scaling:
        return ["No docs/results/scaling.json yet."]
    lines = [[str(r["processes"]), str(r["global_batch"]), f"{r['median_ms_per_step']:.1f}",
              f"{r['samples_per_s']:.2f}", f"{r.get('efficiency', float('nan')):.3f}",
              f"{r.get('peak_memory_mib_rank0', float('nan')):.0f}"]
             for r in scaling.get("rows", []) if r.get("ok") and r.get("grad_accum", 1) == 1]
    out = _table(["GPUs", "Global batch", "ms/step", "samples/s", "Efficiency", "Peak MiB (rank 0)"], lines)
    agreement = scaling.get("agreement") or {}
    out += ["", f"Device: {scaling.get('device_name')} x {scaling.get('gpus_available')}, commit "
            f"{str(scaling.get('commit'))[:8]}; `{scaling.get('config')}` distilled from a random-weight teacher, "
            f"{scaling.get('steps')} steps per run, overrides {scaling.get('overrides')}. {scaling.get('timing', '')}."]
    if agreement:
        out += ["", f"Loss curves, {agreement.get('processes')} processes vs 1 process with accumulation at the same "
                f"global batch: mean |relative difference| {agreement.get('mean_abs_rel_diff', float('nan')):.1e}, "
                f"noise {agreement.get('noise_rel', float('nan')):.3f}, within noise: {agreement.get('within_noise')}. "
                "With a "
                "random teacher the total loss (~1e12) is the PV-FFR term against huge random features, which both "
                "runs compute on the same samples: this check shows the two paths see the same data and weights, "
                "not that the detection losses agree."]
    return out


def balance_section(balance: dict[str, Any] | None) -> list[str]:
    """KD terms against the detection loss at the end of each run, from benchmarks/loss_balance.py's JSON."""
    if not balance or not balance.get("runs"):
        return ["No docs/results/loss_balance.json yet."]
    lines = []
    for run in sorted(balance["runs"], key=lambda r: (r["stage"], r["seed"])):
        last = run["last"]
        terms = ", ".join(f"{k.removeprefix('loss_')} {v:.1f}" for k, v in last["kd_weighted"].items()) or "—"
        ratio = last["kd_over_detection"]
        lines.append([run["stage"], str(run["seed"]), str(last["step"]), "yes" if run["finished"] else "no",
                      f"{last['detection']:.1f}", terms, "—" if ratio is None else f"{ratio:.2f}",
                      f"{last['grad_norm']:.0f}", str(run["grad_clip"])])
    return _table(["Stage", "Seed", "Step", "Finished", "Detection loss", "Weighted KD terms", "KD / detection",
                   "Grad norm", "Clip"], lines) + [
        "", f"Last logged training window of every run folder of the session ({balance.get('device', '')}); the "
        "KD terms are weighted as the objective weighs them. Gradient norms are before clipping at the recipe's 35."]


def analysis(rows: dict[str, Row], balance: dict[str, Any] | None) -> list[str]:
    """What the numbers say, in words; every number is computed from the JSON files."""
    out = []
    gap = paired(rows, "teacher", "sparsebev", "NDS")
    if gap is not None:
        teacher = next(iter(rows["teacher"].records.values()))
        mAP = {stage: statistics.fmean(rows[stage].values("mAP").values()) * 100 for stage in ("teacher", "sparsebev")}
        out.append(f"- **The teacher is barely stronger than the student.** The offline teacher "
                   f"(ResNet-{teacher['config']['model']['backbone']['depth']}, "
                   f"{teacher['config']['data']['num_future_frames']} future frames) beats the SparseBEV student by "
                   f"{gap[0] * 100:+.2f} NDS (paired over {gap[2]} seeds, std "
                   f"{0 if gap[1] is None else gap[1] * 100:.2f}); both are trained from scratch for "
                   f"{teacher['config']['train']['epochs']:g} epochs and reach {mAP['teacher']:.1f} % and "
                   f"{mAP['sparsebev']:.1f} % mAP. A teacher that knows little more than its student has little to "
                   "pass on. The future frames do help the teacher itself: see the Teachers table.")
    if balance and balance.get("runs"):
        def ratios(stage: str) -> list[float]:
            return [r["last"]["kd_over_detection"] for r in balance["runs"]
                    if r["stage"] == stage and r["last"]["kd_over_detection"] is not None]
        ftkd, mgd, query = ratios("ftkd_sparsebev"), ratios("kd_mgd"), ratios("abl_query")
        last = {(r["stage"], r["seed"]): r["last"] for r in balance["runs"]}
        pv_share = [v["kd_weighted"].get("loss_pv", 0.0) / sum(v["kd_weighted"].values())
                    for (stage, _), v in last.items() if stage == "ftkd_sparsebev" and v["kd_weighted"]]
        grad_ratio = [last[("ftkd_sparsebev", seed)]["grad_norm"] / last[("sparsebev", seed)]["grad_norm"]
                      for (stage, seed) in last if stage == "ftkd_sparsebev" and ("sparsebev", seed) in last]
        pv_weight = next((r["kd_weights"]["loss_pv"] for r in balance["runs"] if "loss_pv" in r["kd_weights"]), 0.0)
        if ftkd and pv_share and grad_ratio:
            out.append(f"- **At the paper's loss weights the KD terms swamp detection.** At the end of training the "
                       f"weighted KD terms of FTKD are {min(ftkd):.0f}-{max(ftkd):.0f}x the detection loss, "
                       f"{min(pv_share) * 100:.0f}-{max(pv_share) * 100:.0f} % of it PV-FFR (weight {pv_weight:g} "
                       "on a sum of squared errors of un-normalised FPN features, which are "
                       "far larger in networks trained from scratch than in ImageNet-pretrained ones)"
                       + (f"; MGD's term is {statistics.fmean(mgd):.0f}x" if mgd else "")
                       + (f", while query-FFR alone is {statistics.fmean(query):.2f}x (an unfinished run)" if query else "")
                       + f". The gradient norm before clipping is then {min(grad_ratio):.0f}-{max(grad_ratio):.0f}x "
                       "the baseline's (same seed, last window), and clipping at 35 "
                       "shrinks the detection gradient by that factor: the distilled students trained on detection at "
                       "a fraction of the baseline's effective rate, which explains their lower mAP (and MGD's). "
                       "The rows `ftkd_pvw_1e-5` and `kd_mgd_w1e-3` rescale those two weights to ~0.2-0.6x the "
                       "detection loss; they are the first rows of the next GPU session.")
    if "streampetr" in rows:
        mAP = statistics.fmean(rows["streampetr"].values("mAP").values()) * 100
        epochs = next(iter(rows["streampetr"].records.values()))["config"]["train"]["epochs"]
        out.append(f"- **StreamPETR does not learn from scratch at this scale** ({mAP:.2f} % mAP after {epochs:g} "
                   "epochs, "
                   "with and without query denoising; its detection loss does fall), so its FTKD rows cannot say "
                   "anything yet. We have hypotheses, not an explanation: PETR-style position embeddings are known "
                   "to converge slowly and the official recipe starts from pretrained image features; its lr, "
                   "scaled linearly from the recipe's batch 16 to our batch 4, is 20x lower per sample than the tiny "
                   "config that does learn on the CPU (SparseBEV learns at the same per-sample lr, though). The "
                   "`streampetr_lr4e-4` row tests the lr first.")
    return out


def paired_text(rows: dict[str, Row], stage_a: str, stage_b: str, metric: str) -> str:
    """'+1.20 ± 0.40 (n=3)' for the seed-paired difference a - b (percent for NDS/mAP); '—' without common seeds."""
    difference = paired(rows, stage_a, stage_b, metric)
    if difference is None:
        return "—"
    mean, std, n = difference
    scale, digits = (100.0, 2) if is_percent(metric) else (1.0, 3)
    return f"{mean * scale:+.{digits}f}" + ("" if std is None else f" ± {std * scale:.{digits}f}") + f" (n={n})"


def subset_gt(rows: dict[str, Row], family: str, key: str) -> str:
    """Ground-truth boxes of a breakdown subset (the same validation split for every run), from any record."""
    for row in rows.values():
        for record in row.records.values():
            subset = (record.get("breakdown") or {}).get(family, {}).get(key)
            if isinstance(subset, dict) and "num_gt" in subset:
                return str(subset["num_gt"])
    return "—"


def gain_section(rows: dict[str, Row], png_link: str | None) -> list[str]:
    """mAP per distance band and visibility level, baseline vs distilled students, with seed-paired differences."""
    pairs = [(label, a, b) for label, a, b in GAIN_PAIRS
             if any(rows[s].values(f"{BREAKDOWN_PREFIX}distance:0-20") for s in (a, b) if s in rows)]
    if not pairs:
        return ["No breakdown in the JSON files yet: `benchmarks/accuracy.py` records one (`breakdown`, from "
                "`ftkd.engine.breakdown`) for every stage it finishes."]
    out = []
    for baseline in dict.fromkeys(b for _, _, b in pairs):
        students = [(label, a) for label, a, b in pairs if b == baseline]
        header = ["Subset", "GT boxes", f"{baseline} mAP", *(x for label, _ in students for x in (
            f"{label} mAP", "Δ (paired)"))]
        lines = []
        for family, key, label in BREAKDOWN_SUBSETS:
            metric = f"{BREAKDOWN_PREFIX}{family}:{key}"
            cells = [label, subset_gt(rows, family, key), fmt(metric, rows[baseline].values(metric))
                     if baseline in rows else "—"]
            for _, stage in students:
                cells += [fmt(metric, rows[stage].values(metric)) if stage in rows else "—",
                          paired_text(rows, stage, baseline, metric)]
            lines.append(cells)
        out += [*_table(header, lines), ""]
    out += ["mAP (%) over the classes with ground truth in the subset, mean ± std over seeds; Δ is the distilled "
            "student minus the baseline, paired by seed. Official matching (devkit `accumulate` on the metric's "
            "filtered boxes). Distance bands restrict ground truth and predictions to the band (a prediction by its "
            "own centre); a visibility level restricts the ground truth, and a prediction whose nearest same-class "
            "ground-truth box is of another level and within the matching threshold is ignored (see "
            "`ftkd/engine/breakdown.py`)."]
    if png_link:
        out += ["", f"![Paired mAP difference per distance band and visibility level]({png_link})"]
    return out


def facts(rows: dict[str, Row], stage: str) -> str:
    """'ResNet-34, 3 future' of a teacher stage from its recorded config; '—' if it has no record."""
    if stage not in rows:
        return "—"
    config = next(iter(rows[stage].records.values()))["config"]
    return f"ResNet-{config['model']['backbone']['depth']}, {config['data']['num_future_frames']} future"


def beyond_table(rows: dict[str, Row], entries: list[tuple[str, str, str]], reference: str) -> list[str]:
    """Teacher and student NDS/mAP/mAVE per entry (label, teacher, student), the student's paired NDS gain over
    the baseline student and its paired NDS difference to the `reference` student."""
    metrics = ("NDS", "mAP", "mAVE")
    header = ["Teacher", "Teacher stage", "Teacher seeds", *(f"Teacher {m}" for m in metrics), "Student stage",
              "Student seeds", *(f"Student {m}" for m in metrics), "Student ΔNDS vs baseline",
              f"Student ΔNDS vs `{reference}`"]
    lines = [[label, f"`{teacher}` ({facts(rows, teacher)})", _seeds(rows, teacher),
              *metric_cells(rows, teacher, metrics), f"`{student}`", _seeds(rows, student),
              *metric_cells(rows, student, metrics),
              paired_text(rows, student, "sparsebev", "NDS"),
              "—" if student == reference else paired_text(rows, student, reference, "NDS")]
             for label, teacher, student in entries]
    return _table(header, lines)


def beyond_section(rows: dict[str, Row], links: dict[str, str]) -> list[str]:
    """The future-horizon and capacity-vs-future studies (issue 10): tables, plots and what the seeds say."""
    horizon = [(f"{frames} future frame{'s' if frames != 1 else ''}", teacher, student)
               for frames, teacher, student in HORIZON_ROWS]
    out = ["Both studies distil the same SparseBEV student with the full FTKD at PV-FFR weight 1e-5 (at the paper's "
           "1e-3 the PV term is ~20x the detection loss for models trained from scratch, see above); the student "
           "with the 3-future-frame `teacher` is the `ftkd_pvw_1e-5` row. Differences are paired by seed.", "",
           "### How much future", "", *beyond_table(rows, horizon, "ftkd_pvw_1e-5"), ""]
    if "horizon" in links:
        out += [f"![Teacher and student NDS, mAP and mAVE against the future horizon]({links['horizon']})", ""]
    steps = [(f"{b} vs {a} future frames", sb, sa) for (a, _, sa), (b, _, sb) in zip(HORIZON_ROWS, HORIZON_ROWS[1:])]
    out += [f"- Student, {label}: ΔNDS {paired_text(rows, b, a, 'NDS')}, ΔmAVE {paired_text(rows, b, a, 'mAVE')} "
            f"({verdict(paired(rows, b, a, 'NDS'), True)})" for label, b, a in steps]
    out += ["", "### Is it the future or the teacher's size?", "",
            *beyond_table(rows, CAPACITY_ROWS, "ftkd_pvw_1e-5"), ""]
    if "capacity" in links:
        out += [f"![Teacher and student NDS, mAP and mAVE per teacher]({links['capacity']})", ""]
    (_, _, large_past), (_, _, small_future), (_, _, large_future) = CAPACITY_ROWS
    comparisons = (
        ("future frames with a student-size teacher vs a large teacher without future (b − a)", small_future,
         large_past),
        ("a large teacher vs a student-size one, both with future (c − b)", large_future, small_future),
        ("future frames for the large teacher (c − a)", large_future, large_past),
    )
    for label, a, b in comparisons:
        verdict_text = verdict(paired(rows, a, b, "NDS"), True)
        out.append(f"- Student, {label}: ΔNDS {paired_text(rows, a, b, 'NDS')} ({verdict_text})")
    return out


def plot_beyond(rows: dict[str, Row], folder: Path) -> dict[str, Path]:
    """future_horizon.png (teacher and student against the horizon), capacity_future.png (per teacher) and
    gain_breakdown.png (paired mAP difference per subset) in `folder`; each is drawn even without data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = {"horizon": folder / "future_horizon.png", "capacity": folder / "capacity_future.png",
             "gain": folder / "gain_breakdown.png"}

    def points(stage: str, metric: str) -> tuple[float, float]:
        values = list(rows[stage].values(metric).values()) if stage in rows else []
        if not values:
            return math.nan, 0.0
        mean, std = mean_std(values)
        scale = 100.0 if is_percent(metric) else 1.0
        return mean * scale, (std or 0.0) * scale

    figure, axes = plt.subplots(1, 3, figsize=(13, 4))
    frames = [f for f, _, _ in HORIZON_ROWS]
    for axis, metric in zip(axes, ("NDS", "mAP", "mAVE")):
        for role, index, style in (("teacher", 1, "s--"), ("student", 2, "o-")):
            means, errors = zip(*(points(entry[index], metric) for entry in HORIZON_ROWS))
            axis.errorbar(frames, means, yerr=errors, fmt=style, capsize=3, label=role)
        axis.set_xticks(frames)
        axis.set_xlim(min(frames) - 0.5, max(frames) + 0.5)
        axis.set_xlabel("future frames of the teacher")
        axis.set_title(f"{metric} ({'%' if is_percent(metric) else 'm/s'})")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("Future horizon: mean ± std over seeds (student: SparseBEV + FTKD, PV-FFR weight 1e-5)")
    figure.tight_layout()
    figure.savefig(paths["horizon"], dpi=110)
    plt.close(figure)

    figure, axes = plt.subplots(1, 3, figsize=(13, 4))
    positions = list(range(len(CAPACITY_ROWS)))
    for axis, metric in zip(axes, ("NDS", "mAP", "mAVE")):
        for role, index, offset, colour in (("teacher", 1, -0.2, "tab:gray"), ("student", 2, 0.2, "tab:orange")):
            means, errors = zip(*(points(entry[index], metric) for entry in CAPACITY_ROWS))
            axis.bar([p + offset for p in positions], means, width=0.4, yerr=errors, capsize=3, color=colour,
                     label=role)
        axis.set_xticks(positions, [label.split(" (")[0] for label, _, _ in CAPACITY_ROWS], rotation=20, ha="right",
                        fontsize=7)
        axis.set_title(f"{metric} ({'%' if is_percent(metric) else 'm/s'})")
        axis.grid(axis="y", alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("Capacity vs future: mean ± std over seeds")
    figure.tight_layout()
    figure.savefig(paths["capacity"], dpi=110)
    plt.close(figure)

    figure, axes = plt.subplots(1, 2, figsize=(12, 4))
    for axis, family in zip(axes, ("distance", "visibility")):
        subsets = [(key, label) for f, key, label in BREAKDOWN_SUBSETS if f == family]
        width = 0.8 / len(GAIN_PAIRS)
        for i, (label, stage, baseline) in enumerate(GAIN_PAIRS):
            differences = [paired(rows, stage, baseline, f"{BREAKDOWN_PREFIX}{family}:{key}") for key, _ in subsets]
            means = [100.0 * d[0] if d else math.nan for d in differences]
            errors = [100.0 * (d[1] or 0.0) if d else 0.0 for d in differences]
            axis.bar([p + (i - (len(GAIN_PAIRS) - 1) / 2) * width for p in range(len(subsets))], means, width=width,
                     yerr=errors, capsize=3, label=label)
        axis.axhline(0.0, color="black", linewidth=0.8)
        axis.set_xticks(range(len(subsets)), [label for _, label in subsets], fontsize=8)
        axis.set_ylabel("Δ mAP (points), paired by seed")
        axis.set_title(f"per {family} {'band' if family == 'distance' else 'level'}")
        axis.grid(axis="y", alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle("Where the gain lands: distilled minus baseline student, mean ± std over seeds")
    figure.tight_layout()
    figure.savefig(paths["gain"], dpi=110)
    plt.close(figure)
    return paths


def build_markdown(rows: dict[str, Row], datasets: list[dict[str, Any]], speed: dict[str, Any] | None,
                   png_link: str, source: str, profile: str, warnings: list[str],
                   scaling: dict[str, Any] | None = None, balance: dict[str, Any] | None = None,
                   beyond_links: dict[str, str] | None = None) -> str:
    """The whole results page; `beyond_links` holds the relative links of plot_beyond's pictures (none if None)."""
    beyond_links = beyond_links or {}
    files = sum(len(r.records) for r in rows.values()) + len(datasets)
    lines = [
        "# Accuracy results",
        "",
        f"Generated by `benchmarks/report.py` from {files} JSON file(s) in `{source}` (profile `{profile}`); do not "
        "edit by hand. Protocol, scale and commands: [benchmark.md](benchmark.md). Metrics are the official nuScenes "
        "detection metrics (devkit `DetectionEval`, `detection_cvpr_2019`) on the synthetic benchmark's validation "
        "split; NDS and mAP in percent, TP errors in their units; mean ± sample std over seeds. The paper's columns "
        "are its nuScenes-val numbers at full scale, for reference only: our models, data and schedules are far "
        "smaller, so compare directions and orderings, not levels.",
        "",
        "## Which of the paper's claims we reproduced",
        "",
        "A claim is *reproduced* when the difference, paired by seed, has the paper's sign and exceeds two standard "
        "errors (2 std / sqrt(n)); *same direction* when the sign matches but the seeds cannot tell it from noise.",
        "",
        *_table(["Claim", "Comparison", "Difference (mean ± std over seeds)", "Verdict"],
                [list(c) for c in claims(rows)]),
        "",
    ]
    explained = analysis(rows, balance)
    if explained:
        lines += ["## What explains the differences", "", *explained, ""]
    undistilled = ("teacher", "teacher_nofuture", "sparsebev", "streampetr", "lr_bs32_linear", "lr_bs32_sqrt",
                   "streampetr_nodn", "teacher_future1", "teacher_future7", "teacher_r18")
    distilled = [r for s in ALL_STAGES if s in rows and s not in undistilled for r in rows[s].records.values()]
    if distilled:
        same = all(r["checks"]["student_keys_match_baseline"] for r in distilled)
        lines += [f"No inference cost: {'every' if same else 'NOT every'} distilled checkpoint "
                  f"({len(distilled)}) holds exactly the baseline student's tensors (names and shapes).", ""]
    for student, title in (("sparsebev", "SparseBEV"), ("streampetr", "StreamPETR")):
        lines += [f"## Main results: {title} student", "", *main_table(rows, student, speed), ""]
    teachers = [([label], stage, {}) for label, stage in TEACHER_ROWS]
    lines += ["## Teachers", "", *simple_table(rows, ["Teacher"], teachers, METRICS, paper_columns=False), "",
              "The paper gives no numbers for its teacher.", ""]
    lines += ["## Component ablation (SparseBEV student)", "",
              *simple_table(rows, ["PV-FFR", "Query-FFR", "FLD"],
                            [([pv, query, fld], stage, PAPER.get(stage, {}))
                             for pv, query, fld, stage in ABLATION_ROWS]),
              "", "The first row is the baseline student (no distillation).", ""]
    lines += ["## Mask ratio (full FTKD, one ratio for PV and query FFR)", "",
              *simple_table(rows, ["Mask ratio"], [([ratio], stage, PAPER.get(f"mask_{ratio}", {}))
                                                   for ratio, stage in MASK_ROWS]),
              "", "The paper's sweep used query FFR alone.", ""]
    lines += ["## FLD query selection (full FTKD)", "",
              *simple_table(rows, ["FLD on teacher queries"],
                            [([label], stage, PAPER.get({"ftkd_sparsebev": "fld_both"}.get(stage, stage), {}))
                             for label, stage in FLD_ROWS]),
              "", "The paper's rows used FLD alone.", ""]
    lines += ["## Learning rate and global batch (SparseBEV student, same epochs)", "",
              *simple_table(rows, ["Global batch", "lr rule"], [([batch, rule], stage, {})
                                                              for batch, rule, stage in LR_ROWS],
                            METRICS, paper_columns=False),
              "", "`train.lr` is given for `train.reference_batch` (8) and scaled by `train.lr_scaling` for other "
              "global batches; the row closer to the batch-8 result is the rule that keeps a schedule's meaning.", ""]
    lines += ["## StreamPETR from scratch: query denoising and learning rate", "",
              *simple_table(rows, ["StreamPETR student"], [(["with query denoising (recipe)"], "streampetr", {}),
                                                           (["without query denoising"], "streampetr_nodn", {}),
                                                           (["lr 4e-4 at batch 4 (not scaled)"], "streampetr_lr4e-4",
                                                            {})],
                            METRICS, paper_columns=False), ""]
    per_class = [(label, stage) for label, stage in (("Teacher", "teacher"), ("SparseBEV", "sparsebev"),
                                                      ("SparseBEV + FTKD", "ftkd_sparsebev"),
                                                      ("StreamPETR", "streampetr"),
                                                      ("StreamPETR + FTKD", "ftkd_streampetr")) if stage in rows]
    lines += ["## Per-class AP (%)", ""]
    if per_class:
        lines += _table(["Model", *CLASSES], [[label, *(fmt(f"AP_{c}", rows[stage].values(f"AP_{c}")) for c in CLASSES)]
                                             for label, stage in per_class])
    else:
        lines.append("No main rows yet.")
    lines += ["", "## Where the gain lands", "", *gain_section(rows, beyond_links.get("gain")), ""]
    lines += ["## Beyond the paper", "", *beyond_section(rows, beyond_links), ""]
    lines += ["", "## KD loss against detection loss", "", *balance_section(balance), ""]
    lines += ["## Inference and training speed (paper-size students)", "", *speed_section(speed), ""]
    lines += ["## Multi-GPU distillation throughput", "", *scaling_section(scaling), ""]
    lines += ["", "## Chart", "", f"![NDS, mAP and mAVE per row]({png_link})", "",
              "## Runs", "", *provenance(rows, datasets), "", "## Missing rows (not yet run)", ""]
    lines += missing_rows(rows) or ["None: every row has its seeds."]
    if warnings:
        lines += ["", "## Files skipped", "", *(f"- {w}" for w in warnings)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", default="docs/results/accuracy", help="folder of accuracy JSON files")
    parser.add_argument("--speed", default="docs/results/speed.json", help="benchmarks/speed.py output (FPS), if any")
    parser.add_argument("--scaling", default="docs/results/scaling.json", help="benchmarks/scaling.py output, if any")
    parser.add_argument("--loss-balance", default="docs/results/loss_balance.json",
                        help="benchmarks/loss_balance.py output, if any")
    parser.add_argument("--out", default="docs/results.md", help="markdown page to write")
    parser.add_argument("--png", default="docs/results/accuracy.png", help="bar chart to write")
    parser.add_argument("--profile", default="bench", help="which profile's JSON files to report")
    args = parser.parse_args(argv)
    rows, datasets, warnings = load_records(Path(args.results_dir), args.profile)
    speed_path = Path(args.speed)
    speed = json.loads(speed_path.read_text()) if speed_path.is_file() else None
    scaling_path, balance_path = Path(args.scaling), Path(args.loss_balance)
    scaling = json.loads(scaling_path.read_text()) if scaling_path.is_file() else None
    balance = json.loads(balance_path.read_text()) if balance_path.is_file() else None
    out, png = Path(args.out), Path(args.png)
    plot(rows, png)
    link = os.path.relpath(png, out.parent)
    beyond_links = {name: os.path.relpath(path, out.parent) for name, path in plot_beyond(rows, png.parent).items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_markdown(rows, datasets, speed, link, args.results_dir, args.profile, warnings, scaling,
                                  balance, beyond_links))
    print(f"wrote {out} and {png} ({sum(len(r.records) for r in rows.values())} stage runs, {len(rows)} stages)")
    for warning in warnings:
        print(f"warning: {warning}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
