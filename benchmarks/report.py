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
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_core import (  # noqa: E402  (sibling modules of this script; tests also reach them as report.<name>)
    CLASSES, LOWER_IS_BETTER, METRICS, PERCENT, Row, difference_text, fmt, fps_of, load_records, markdown_table,
    mean_std, metric_cells, paired, seed_count, train_processes, typical_paired_std, typical_text, verdict,
)
from report_noise import eval_noise_section, rerun_section  # noqa: E402
from report_sections import (  # noqa: E402
    analysis, attention_section, balance_section, merge_balances, parity_section, scaling_section, speed_section,
    velocity_note,
)
from report_studies import BEYOND_STAGES, beyond_section, plot_beyond  # noqa: E402

MAIN_STAGES = ("teacher", "sparsebev", "ftkd_sparsebev", "streampetr", "ftkd_streampetr")
MAIN_SEEDS = 3  # the main rows need at least this many seeds

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
    "fld_foreground": {"NDS": 55.4, "mAP": 44.9},
    "fld_background": {"NDS": 55.5, "mAP": 45.1},
    "fld_both": {"NDS": 55.9, "mAP": 45.3},
}
PAPER_ONLY_ROWS = {"sparsebev": [("+FD3D (not implemented here)", {"NDS": 55.0, "mAP": 44.6, "FPS": 20.2}),
                                 ("+STXD (not implemented here)", {"NDS": 55.6, "mAP": 45.0, "FPS": 20.2})],
                   "streampetr": [("+STXD (not implemented here)", {"NDS": 55.6, "mAP": 45.5, "FPS": 33.9})]}

# (label, stage) rows of each table
MAIN_ROWS = {
    "sparsebev": [("SparseBEV (baseline)", "sparsebev"), ("+FitNet", "kd_fitnet"), ("+MGD", "kd_mgd"),
                  ("+MGD, weight 1e-3", "kd_mgd_w1e-3"), ("+logit KD", "kd_logit"),
                  ("+FTKD, past-only teacher", "kd_nofuture"),
                  ("+FTKD, past-only teacher, PV-FFR weight 1e-5", "kd_nofuture_pvw_1e-5"),
                  ("+FTKD", "ftkd_sparsebev"),
                  ("+FTKD, PV-FFR weight 1e-5", "ftkd_pvw_1e-5"),
                  ("+FTKD, PV-FFR weight 1e-5, 12-epoch teacher", "ftkd_long_pvw_1e-5")],
    "streampetr": [("StreamPETR (baseline)", "streampetr"), ("+FTKD", "ftkd_streampetr"),
                   ("+FTKD, PV-FFR weight 1e-5", "ftkd_streampetr_pvw_1e-5")],
}
TEACHER_ROWS = [("Offline teacher (past + current + future)", "teacher"),
                ("Offline teacher, 12 epochs", "teacher_long"),
                ("Teacher without future frames", "teacher_nofuture")]
ABLATION_ROWS = [("", "", "", "sparsebev"), ("", "x", "", "abl_query"), ("", "x", "x", "abl_query_fld"),
                 ("x", "x", "x", "ftkd_sparsebev"), ("x (1e-5)", "x", "x", "ftkd_pvw_1e-5")]  # PV-FFR, query-FFR, FLD
# the sweeps run at PV-FFR weight 1e-5 (at the paper's 1e-3 the PV term takes over training here): ratio 0.5 and FLD on
# foreground + background queries is the `ftkd_pvw_1e-5` row
MASK_ROWS = [("0.4", "mask_0.4_pvw_1e-5"), ("0.5", "ftkd_pvw_1e-5"), ("0.75", "mask_0.75_pvw_1e-5"),
             ("0.9", "mask_0.9_pvw_1e-5")]
FLD_ROWS = [("foreground", "fld_fg_pvw_1e-5", "fld_foreground"), ("background", "fld_bg_pvw_1e-5", "fld_background"),
            ("foreground + background", "ftkd_pvw_1e-5", "fld_both")]  # label, stage, key of PAPER
LR_ROWS = [("8", "recipe (2e-4)", "sparsebev"), ("32", "linear (x4)", "lr_bs32_linear"),
           ("32", "square root (x2)", "lr_bs32_sqrt")]  # global batch, lr rule, stage
# every stage of the protocol but `data`, in the page's order (a test checks it against accuracy_stages.STAGES)
ALL_STAGES = ("teacher", "teacher_nofuture", "sparsebev", "ftkd_sparsebev", "streampetr", "ftkd_streampetr",
              "kd_fitnet", "kd_mgd", "kd_logit", "kd_nofuture", "abl_query", "abl_query_fld", "mask_0.4_pvw_1e-5",
              "mask_0.75_pvw_1e-5", "mask_0.9_pvw_1e-5", "fld_fg_pvw_1e-5", "fld_bg_pvw_1e-5", "tsa_learned_pvw_1e-5",
              "ftkd_pvw_1e-5", "kd_mgd_w1e-3", "lr_bs32_linear", "lr_bs32_sqrt",
              "streampetr_nodn", "teacher_future1", "teacher_future7", "teacher_r18", "kd_nofuture_pvw_1e-5",
              "ftkd_future1_pvw_1e-5", "ftkd_future7_pvw_1e-5", "ftkd_teacher_r18_pvw_1e-5", "ftkd_future7_pvw_2e-6",
              "teacher_long",
              "ftkd_long_pvw_1e-5", "streampetr_lr4e-4", "streampetr_raybias", "streampetr_heatmap",
              "streampetr_raybias_heatmap", "ftkd_streampetr_pvw_1e-5", "streampetr_sparsebev_init",
              "streampetr_bs16_e48", "streampetr_bs16_e96")
CHART_ROWS = [("teacher", "teacher"), ("teacher 12 ep", "teacher_long"), ("SparseBEV", "sparsebev"),
              ("+FitNet", "kd_fitnet"), ("+MGD", "kd_mgd"), ("+MGD w 1e-3", "kd_mgd_w1e-3"), ("+logit KD", "kd_logit"),
              ("+FTKD past-only", "kd_nofuture"), ("+FTKD", "ftkd_sparsebev"), ("+FTKD pv 1e-5", "ftkd_pvw_1e-5"),
              ("+FTKD pv 1e-5, 12-ep t.", "ftkd_long_pvw_1e-5"), ("StreamPETR", "streampetr"),
              ("+FTKD ", "ftkd_streampetr"), ("+FTKD pv 1e-5 ", "ftkd_streampetr_pvw_1e-5")]


def paper_value(metric: str, value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}" if metric in PERCENT or metric == "FPS" else f"{value:.3f}"


# below this mean mAP a model detects almost nothing: its NDS is made of TP errors averaged over a handful of matches
FLOOR_MAP = 0.01


def below_floor(rows: dict[str, Row], stage: str) -> bool:
    """True when the stage's mean mAP over its seeds is under FLOOR_MAP."""
    values = list(rows[stage].values("mAP").values()) if stage in rows else []
    return bool(values) and mean_std(values)[0] < FLOOR_MAP


def claims(rows: dict[str, Row]) -> list[tuple[str, str, str, str]]:
    """(claim, comparison, difference text, verdict) for every claim of the paper we test; a verdict between two
    models that both detect almost nothing says so."""
    checks = [
        ("The offline teacher beats the SparseBEV student", "teacher", "sparsebev", ("NDS", "mAP")),
        ("The offline teacher beats the StreamPETR student", "teacher", "streampetr", ("NDS", "mAP")),
        ("FTKD improves SparseBEV", "ftkd_sparsebev", "sparsebev", ("NDS", "mAP", "mAVE")),
        ("FTKD, PV-FFR weight 1e-5, improves SparseBEV", "ftkd_pvw_1e-5", "sparsebev", ("NDS", "mAP", "mAVE")),
        ("FTKD from the 12-epoch teacher improves SparseBEV", "ftkd_long_pvw_1e-5", "sparsebev",
         ("NDS", "mAP", "mAVE")),
        ("FTKD improves StreamPETR", "ftkd_streampetr", "streampetr", ("NDS", "mAP", "mAVE")),
        ("FTKD, PV-FFR weight 1e-5, improves StreamPETR", "ftkd_streampetr_pvw_1e-5", "streampetr",
         ("NDS", "mAP", "mAVE")),
        ("FTKD beats FitNet feature imitation", "ftkd_sparsebev", "kd_fitnet", ("NDS",)),
        ("FTKD beats MGD", "ftkd_sparsebev", "kd_mgd", ("NDS",)),
        ("FTKD beats logit KD", "ftkd_sparsebev", "kd_logit", ("NDS",)),
        ("Future frames matter (FTKD vs past-only teacher)", "ftkd_sparsebev", "kd_nofuture", ("NDS", "mAVE")),
        ("Future frames matter (PV-FFR weight 1e-5)", "ftkd_pvw_1e-5", "kd_nofuture_pvw_1e-5", ("NDS", "mAVE")),
        ("FTKD (PV-FFR weight 1e-5) beats FitNet", "ftkd_pvw_1e-5", "kd_fitnet", ("NDS",)),
        ("FTKD (PV-FFR weight 1e-5) beats MGD (weight 1e-3)", "ftkd_pvw_1e-5", "kd_mgd_w1e-3", ("NDS",)),
        ("FTKD (PV-FFR weight 1e-5) beats logit KD", "ftkd_pvw_1e-5", "kd_logit", ("NDS",)),
        ("Query-FFR alone helps", "abl_query", "sparsebev", ("NDS",)),
        ("+FLD helps on top of query-FFR", "abl_query_fld", "abl_query", ("NDS",)),
        ("+PV-FFR helps on top of query-FFR + FLD", "ftkd_sparsebev", "abl_query_fld", ("NDS",)),
        ("+PV-FFR (weight 1e-5) helps on top of query-FFR + FLD", "ftkd_pvw_1e-5", "abl_query_fld", ("NDS",)),
        ("Mask ratio 0.5 beats 0.4 (PV-FFR weight 1e-5)", "ftkd_pvw_1e-5", "mask_0.4_pvw_1e-5", ("NDS",)),
        ("Mask ratio 0.5 beats 0.75 (PV-FFR weight 1e-5)", "ftkd_pvw_1e-5", "mask_0.75_pvw_1e-5", ("NDS",)),
        ("Mask ratio 0.5 beats 0.9 (PV-FFR weight 1e-5)", "ftkd_pvw_1e-5", "mask_0.9_pvw_1e-5", ("NDS",)),
        ("FLD on fg + bg beats fg only (PV-FFR weight 1e-5)", "ftkd_pvw_1e-5", "fld_fg_pvw_1e-5", ("NDS",)),
        ("FLD on fg + bg beats bg only (PV-FFR weight 1e-5)", "ftkd_pvw_1e-5", "fld_bg_pvw_1e-5", ("NDS",)),
    ]
    out = []
    typical = {metric: typical_paired_std(rows, metric) for metric in {m for *_, metrics in checks for m in metrics}}
    for claim, a, b, metrics in checks:
        for metric in metrics:
            difference = paired(rows, a, b, metric)
            higher = metric not in LOWER_IS_BETTER
            direction = "higher" if higher else "lower"
            judged = verdict(difference, higher, typical[metric])
            if difference is not None and below_floor(rows, a) and below_floor(rows, b):
                judged += f" (both below {FLOOR_MAP:.0%} mAP: not evidence)"
            out.append((f"{claim}: {metric} {direction}", f"{a} − {b}", difference_text(metric, difference), judged))
    return out


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
        lines.append([label, seed_count(rows, stage), *metric_cells(rows, stage), *deltas, fps_cell,
                      *(paper_value(m, paper.get(m)) for m in ("NDS", "mAP", "mAVE", "FPS"))])
    for label, paper in PAPER_ONLY_ROWS[student]:
        lines.append([label, "—", *["—"] * len(METRICS), "—", "—", "—",
                      *(paper_value(m, paper.get(m)) for m in ("NDS", "mAP", "mAVE", "FPS"))])
    note = (f"FPS: end-to-end online inference of the paper-scale {student} (ResNet-50, 256x704) from speed.json "
            f"({mode}, {speed.get('device', '?')}); the same number for every row whose checkpoint holds exactly the "
            "baseline's tensors (the distilled students run the baseline's graph)." if fps is not None
            else "FPS: no docs/results/speed.json entry for this architecture yet.")
    return markdown_table(header, lines) + ["", note]


def simple_table(rows: dict[str, Row], first: list[str], entries: list[tuple[list[str], str, dict[str, float]]],
                 metrics: tuple[str, ...] = ("NDS", "mAP", "mAVE"), paper_columns: bool = True) -> list[str]:
    paper_metrics = metrics if paper_columns else ()
    header = [*first, "Seeds", *metrics, *(f"Paper {m}" for m in paper_metrics)]
    lines = [[*cells, seed_count(rows, stage), *metric_cells(rows, stage, metrics),
              *(paper_value(m, paper.get(m)) for m in paper_metrics)] for cells, stage, paper in entries]
    return markdown_table(header, lines)


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

        devices = sorted({r["environment"]["device"] + (f" x{train_processes(r)} processes (DDP)"
                                                        if train_processes(r) > 1 else "")
                          for r in records})
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
    out = markdown_table(header, lines) if lines else ["No runs yet."]
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
    figure, axes = plt.subplots(1, 3, figsize=(16, 5.2))
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
            colours.append("tab:gray" if stage.startswith("teacher") else "tab:orange" if stage.startswith("ftkd") else
                           "tab:blue" if stage in ("sparsebev", "streampetr") else "tab:green")
        positions = list(range(len(present)))
        bars = axis.bar(positions, means, yerr=errors, color=colours, capsize=3)
        axis.bar_label(bars, [f"{m:.1f}" if metric in PERCENT else f"{m:.3f}" for m in means], fontsize=7)
        labels = [f"{label} (n={len(rows[stage].seeds)})" for label, stage in present]
        axis.set_xticks(positions, labels, rotation=45, ha="right", fontsize=8)
        axis.set_ylim(bottom=0)
        axis.set_title(f"{metric} ({'%, higher is better' if metric in PERCENT else 'm/s, lower is better'})")
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle("Synthetic benchmark: mean ± std over seeds")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def build_markdown(rows: dict[str, Row], datasets: list[dict[str, Any]], speed: dict[str, Any] | None,
                   png_link: str, source: str, profile: str, warnings: list[str],
                   scaling: list[dict[str, Any]] | None = None, balance: dict[str, Any] | None = None,
                   beyond_links: dict[str, str] | None = None, earlier: list[dict[str, Row]] | None = None,
                   parities: list[tuple[str, dict[str, Any]]] | None = None,
                   attentions: list[tuple[str, dict[str, Any]]] | None = None,
                   attention_notes: list[str] | None = None) -> str:
    """The whole results page; `beyond_links` holds the relative links of plot_beyond's pictures (none if None);
    `earlier` holds the rows of runs superseded by a rerun of the same stage and seed, one set per folder;
    `attentions` the (label, report) of benchmarks/streampetr_attention.py files (the stage records' own are added)
    and `attention_notes` those files' notes;
    `parities` the (source, report) of benchmarks/online_parity.py files (the stage records' own are added)."""
    beyond_links = beyond_links or {}
    earlier = earlier or []
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
        "A claim is *reproduced* when the difference, paired by seed, has the paper's sign and a paired t-test at 5 % "
        "(two-sided) tells it from zero: |mean| > t(n − 1) · s / sqrt(n), with t = 12.71 for 2 seeds, 4.30 for 3, "
        "2.78 for 5, and s the larger of the difference's own std over seeds and the typical paired std of this "
        f"benchmark ({typical_text(rows)}): with 3 seeds one comparison's own std can come out far too small by luck, "
        "and among this report's dozens of comparisons some will. *Same direction* when the sign matches but the "
        "seeds cannot tell it from noise. "
        f"A comparison of two models that both stay below {FLOOR_MAP:.0%} mAP is marked *not evidence*: such a model "
        "detects almost nothing, and its NDS is made of TP errors averaged over a handful of matches.",
        "",
        *markdown_table(["Claim", "Comparison", "Difference (mean ± std over seeds)", "Verdict"],
                [list(c) for c in claims(rows)]),
        "",
    ]
    explained = analysis(rows, balance, earlier)
    if explained:
        lines += ["## What explains the differences", "", *explained, ""]
    distilled = [r for s in ALL_STAGES if s in rows for r in rows[s].records.values() if r.get("kind") == "distill"]
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
    lines += ["## Mask ratio (full FTKD at PV-FFR weight 1e-5, one ratio for PV and query FFR)", "",
              *simple_table(rows, ["Mask ratio"], [([ratio], stage, PAPER.get(f"mask_{ratio}", {}))
                                                   for ratio, stage in MASK_ROWS]),
              "", "The paper's sweep used query FFR alone.", ""]
    lines += ["## FLD query selection (full FTKD at PV-FFR weight 1e-5)", "",
              *simple_table(rows, ["FLD on teacher queries"],
                            [([label], stage, PAPER.get(paper_key, {})) for label, stage, paper_key in FLD_ROWS]),
              "", "The paper's rows used FLD alone.", ""]
    lines += ["## PV-FFR target: parameter-free or learned TSA (full FTKD at PV-FFR weight 1e-5)", "",
              *simple_table(rows, ["TSA"], [(["parameter-free (default)"], "ftkd_pvw_1e-5", {}),
                                            (["learned query/key projections"], "tsa_learned_pvw_1e-5", {})],
                            METRICS, paper_columns=False),
              "", "The paper does not say how its TSA is trained; docs/method.md explains the default.", ""]
    lines += ["## Learning rate and global batch (SparseBEV student, same epochs)", "",
              *simple_table(rows, ["Global batch", "lr rule"], [([batch, rule], stage, {})
                                                              for batch, rule, stage in LR_ROWS],
                            METRICS, paper_columns=False),
              "", "`train.lr` is given for `train.reference_batch` (8) and scaled by `train.lr_scaling` for other "
              "global batches (batch 32 = 4 accumulated micro-batches of 8, the same epochs, so 4x fewer optimiser "
              "steps); the row closer to the batch-8 result is the rule that better keeps a schedule's meaning, and "
              "a row far from it under both rules means the step count, not the lr, limits training.", ""]
    lines += ["## StreamPETR from scratch: query denoising, learning rate, image supervision, initialisation", "",
              *simple_table(rows, ["StreamPETR student"], [(["with query denoising (recipe)"], "streampetr", {}),
                                                           (["without query denoising"], "streampetr_nodn", {}),
                                                           (["lr 4e-4 at batch 4 (not scaled)"], "streampetr_lr4e-4",
                                                            {}),
                                                           (["ray-distance attention bias, sigma 2 m (not official)"],
                                                            "streampetr_raybias", {}),
                                                           (["centre-heatmap loss on the image tokens, weight 1"],
                                                            "streampetr_heatmap", {}),
                                                           (["ray-distance bias + centre-heatmap loss"],
                                                            "streampetr_raybias_heatmap", {}),
                                                           (["backbone from the SparseBEV student (same seed)"],
                                                            "streampetr_sparsebev_init", {}),
                                                           (["global batch 16 (lr 4e-4), 48 epochs"],
                                                            "streampetr_bs16_e48", {}),
                                                           (["global batch 16 (lr 4e-4), 96 epochs"],
                                                            "streampetr_bs16_e96", {})],
                            METRICS, paper_columns=False), ""]
    recorded_attention = [(f"{stage} seed {seed} ({profile})", report) for stage, row in rows.items()
                          for seed, report in row.analyses("attention_geometry", "attention_lift").items()]
    lines += ["### Does StreamPETR look where the objects are?", "",
              *attention_section(recorded_attention + (attentions or [])), "", *(attention_notes or []), ""]
    per_class = [(label, stage) for label, stage in (("Teacher", "teacher"), ("SparseBEV", "sparsebev"),
                                                      ("SparseBEV + FTKD", "ftkd_sparsebev"),
                                                      ("StreamPETR", "streampetr"),
                                                      ("StreamPETR + FTKD", "ftkd_streampetr")) if stage in rows]
    lines += ["## Per-class AP (%)", ""]
    if per_class:
        lines += markdown_table(["Model", *CLASSES],
                                [[label, *(fmt(f"AP_{c}", rows[stage].values(f"AP_{c}")) for c in CLASSES)]
                                 for label, stage in per_class])
    else:
        lines.append("No main rows yet.")
    lines += ["", "## Beyond the paper", "", *beyond_section(rows, beyond_links, balance), ""]
    lines += ["## How noisy is one evaluation", "", *eval_noise_section(rows), ""]
    lines += ["## The same seed in two sessions", "", *rerun_section(rows, earlier), ""]
    lines += ["", "## KD loss against detection loss", "", *balance_section(balance), ""]
    lines += ["## Inference and training speed (paper-size students)", "", *speed_section(speed), ""]
    baseline = rows["sparsebev"].analyses("online_parity", "modes") if "sparsebev" in rows else {}
    recorded = [(f"sparsebev seed {seed} ({profile})", report) for seed, report in baseline.items()]
    lines += ["## Online inference options on a trained student", "", *parity_section(recorded + (parities or [])),
              ""]
    lines += ["## Multi-GPU throughput", "", *scaling_section(scaling or []), ""]
    lines += ["", "## Chart", "", f"![NDS, mAP and mAVE per row]({png_link})", "",
              "## Runs", "", *provenance(rows, datasets), "", "## Missing rows (not yet run)", ""]
    lines += missing_rows(rows) or ["None: every row has its seeds."]
    if warnings:
        lines += ["", "## Files skipped", "", *(f"- {w}" for w in warnings)]
    return "\n".join(lines) + "\n"


def result_files(given: list[str] | None, pattern: str) -> list[tuple[Path, dict[str, Any]]]:
    """(path, parsed JSON) of the files named on the command line, else of docs/results/`pattern`; missing ones
    skipped."""
    paths = [Path(p) for p in given] if given is not None else sorted(Path("docs/results").glob(pattern))
    return [(path, json.loads(path.read_text())) for path in paths if path.is_file()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", default="docs/results/accuracy", help="folder of accuracy JSON files")
    parser.add_argument("--speed", default="docs/results/speed.json", help="benchmarks/speed.py output (FPS), if any")
    parser.add_argument("--scaling", nargs="*", default=None,
                        help="benchmarks/scaling.py outputs (default: docs/results/scaling*.json)")
    parser.add_argument("--loss-balance", nargs="*", default=None,
                        help="benchmarks/loss_balance.py outputs (default: docs/results/loss_balance*.json)")
    parser.add_argument("--parity", nargs="*", default=None,
                        help="benchmarks/online_parity.py outputs (default: docs/results/online_parity*.json)")
    parser.add_argument("--attention", nargs="*", default=None, help="benchmarks/streampetr_attention.py outputs, one "
                        "report or {note, models: {label: report}} per file (default: "
                        "docs/results/streampetr_attention*.json)")
    parser.add_argument("--out", default="docs/results.md", help="markdown page to write")
    parser.add_argument("--png", default="docs/results/accuracy.png", help="bar chart to write")
    parser.add_argument("--profile", default="bench", help="which profile's JSON files to report")
    args = parser.parse_args(argv)
    rows, datasets, warnings = load_records(Path(args.results_dir), args.profile)
    earlier_dir = Path(args.results_dir) / "earlier"  # superseded runs; a run superseded twice in a subfolder
    earlier = []
    for folder in [earlier_dir, *sorted(p for p in earlier_dir.glob("*") if p.is_dir())]:
        earlier_rows, _, earlier_warnings = load_records(folder, args.profile)
        earlier.append(earlier_rows)
        warnings += [f"{folder.relative_to(args.results_dir)}/{w}" for w in earlier_warnings]
    speed_path = Path(args.speed)
    speed = json.loads(speed_path.read_text()) if speed_path.is_file() else None
    scaling = [content for _, content in result_files(args.scaling, "scaling*.json")]
    balance = merge_balances([content for _, content in result_files(args.loss_balance, "loss_balance*.json")])
    parities = [(path.stem, content) for path, content in result_files(args.parity, "online_parity*.json")]
    attentions, attention_notes = [], []
    for path, content in result_files(args.attention, "streampetr_attention*.json"):
        reports = content.get("models", {path.stem: content})  # a collection, or one report as the script writes it
        attentions += [(f"{path.stem}: {label}", report) for label, report in reports.items()]
        if "models" in content and content.get("note"):
            attention_notes.append(f"- {path.stem}: {content['note']}")
    out, png = Path(args.out), Path(args.png)
    plot(rows, png)
    link = os.path.relpath(png, out.parent)
    beyond_links = {name: os.path.relpath(path, out.parent) for name, path in plot_beyond(rows, png.parent).items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_markdown(rows, datasets, speed, link, args.results_dir, args.profile, warnings, scaling,
                                  balance, beyond_links, earlier, parities, attentions, attention_notes))
    print(f"wrote {out} and {png} ({sum(len(r.records) for r in rows.values())} stage runs, {len(rows)} stages)")
    for warning in warnings:
        print(f"warning: {warning}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
