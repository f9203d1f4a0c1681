"""Sections of the results page about noise: the same seed trained in two sessions (`rerun_rows`,
`rerun_section`) and the evaluation's own noise estimated from the stage records' split halves
(`eval_noise_section`)."""

from __future__ import annotations

import math
import statistics
from typing import Any

from report_core import Row, markdown_table, paired, train_processes, value_text


def rerun_rows(rows: dict[str, Row], earlier: list[dict[str, Row]]
               ) -> list[tuple[str, int, dict[str, Any], dict[str, float]]]:
    """(stage, seed, earlier record, {metric: now - earlier}) for every stage and seed run in two sessions (same
    code for that stage, a fresh GPU machine), one entry per earlier run (`earlier`: one set of rows per folder of
    superseded runs): how far GPU training of one seed wanders from run to run."""
    out = []
    for earlier_rows in earlier:
        for stage, row in sorted(earlier_rows.items()):
            if stage not in rows:
                continue
            for seed in row.seeds:
                if seed in rows[stage].records:
                    before = row.records[seed]
                    now = rows[stage].records[seed]["metrics"]
                    diff = {m: now[m] - before["metrics"][m] for m in ("NDS", "mAP", "mAVE")}
                    out.append((stage, seed, before, diff))
    return sorted(out, key=lambda r: (r[0], r[1], r[2]["environment"].get("commit") or ""))


def rerun_section(rows: dict[str, Row], earlier: list[dict[str, Row]]) -> list[str]:
    """The same stage and seed trained in two GPU sessions: both results and their difference."""
    reruns = rerun_rows(rows, earlier)
    if not reruns:
        return ["No stage was run twice with the same seed."]
    lines = []
    for stage, seed, before, diff in reruns:
        now = rows[stage].records[seed]
        lines.append([stage, str(seed), run_label(before), run_label(now),
                      f"{before['metrics']['NDS'] * 100:.2f} → {now['metrics']['NDS'] * 100:.2f}",
                      f"{before['metrics']['mAP'] * 100:.2f} → {now['metrics']['mAP'] * 100:.2f}",
                      f"{before['metrics']['mAVE']:.3f} → {now['metrics']['mAVE']:.3f}",
                      f"{diff['NDS'] * 100:+.2f}"])
    return markdown_table(["Stage", "Seed", "Earlier commit", "Now commit", "NDS", "mAP", "mAVE", "ΔNDS"], lines) + [
        "", "The earlier runs are kept in `docs/results/accuracy/earlier/` (a run superseded twice: in a subfolder "
        "named after its session); the tables above use the newest run. "
        "Neither commit changed the code these stages run (only distillation code and the reports changed in "
        "between), so the differences come from GPU non-determinism (e.g. atomic adds in `grid_sample`'s backward, cuDNN "
        "algorithm choice) amplified by training; a run marked with its processes trained under torchrun (DDP, the "
        "same global batch; BatchNorm statistics per process), a further difference."]


def run_label(record: dict) -> str:
    """A run's commit (8 characters), with its number of training processes where it trained under torchrun."""
    commit = (record["environment"].get("commit") or "")[:8]
    processes = train_processes(record)
    return f"{commit} ({processes} processes)" if processes > 1 else commit


NOISE_METRICS = ("NDS", "mAP", "mAVE")
MIN_SPLIT_HALF_RUNS = 3
MIN_NOISE_DOF = 2  # repeated seeds needed (runs minus stages) before the within-stage spread means anything
MIN_SEEDS = 3  # rows with this many seeds give the seed std


def split_half_differences(rows: dict[str, Row]) -> list[tuple[str, int, dict[str, float]]]:
    """(stage, seed, {metric: half 1 - half 2}) for every run whose record holds a two-half `split_half` block
    (benchmarks/accuracy.py); a metric that is not a finite number in both halves is left out."""
    out = []
    for stage, row in sorted(rows.items()):
        for seed in row.seeds:
            block = row.records[seed].get("split_half")
            halves = block.get("halves") if isinstance(block, dict) else None
            if not isinstance(halves, list) or len(halves) != 2:
                continue
            diff = {}
            for metric in NOISE_METRICS:
                a, b = halves[0].get(metric), halves[1].get(metric)
                if all(isinstance(v, (int, float)) and math.isfinite(v) for v in (a, b)):
                    diff[metric] = float(a) - float(b)
            if diff:
                out.append((stage, seed, diff))
    return out


def pooled_seed_std(rows: dict[str, Row], metric: str) -> tuple[float | None, int]:
    """Root mean square of the seed standard deviations of the rows with >= 3 seeds, and how many rows that is."""
    variances = [statistics.variance(values) for row in rows.values()
                 if len(values := list(row.values(metric).values())) >= MIN_SEEDS]
    return (math.sqrt(statistics.fmean(variances)) if variances else None), len(variances)


def eval_noise_section(rows: dict[str, Row]) -> list[str]:
    """How much of the seed-to-seed spread is the finite validation split: the evaluation-sampling std of a full-val
    value estimated from the split-half evaluations, against the pooled seed std of the rows with >= 3 seeds."""
    runs = split_half_differences(rows)
    if len(runs) < MIN_SPLIT_HALF_RUNS:
        return [f"Needs the split-half evaluation of at least {MIN_SPLIT_HALF_RUNS} runs ({len(runs)} so far). Stage "
                "records written from now on carry it (`split_half` in the stage JSON, benchmarks/accuracy.py); "
                "running benchmarks/accuracy.py again on a finished run folder adds it to that run's record."]

    lines, estimates = [], {}
    for metric in NOISE_METRICS:
        by_stage: dict[str, list[float]] = {}
        for stage, _, diff in runs:
            if metric in diff:
                by_stage.setdefault(stage, []).append(diff[metric])
        count = sum(len(d) for d in by_stage.values())
        dof = count - len(by_stage)  # one mean per stage is spent
        if dof < MIN_NOISE_DOF:
            continue
        # pooled within-stage spread: a stage's mean h1 - h2 is its model family's systematic taste for one half,
        # which is the same for every seed of the row and so no part of its seed spread
        within = math.sqrt(sum((d - statistics.fmean(ds)) ** 2 for ds in by_stage.values() for d in ds) / dof)
        evaluation = within / 2.0
        seed, num_rows = pooled_seed_std(rows, metric)
        share = evaluation ** 2 / seed ** 2 if seed else None
        estimates[metric] = (evaluation, seed, dof)
        means = [statistics.fmean(ds) for ds in by_stage.values()]
        lines.append([metric, f"{count} ({len(by_stage)} stages)", f"{value_text(metric, min(means), signed=True)} to "
                      f"{value_text(metric, max(means), signed=True)}", value_text(metric, within), str(dof),
                      value_text(metric, evaluation), f"{value_text(metric, seed)} ({num_rows} rows)",
                      "—" if share is None else f"{share * 100:.0f} %"])
    if not estimates:
        return [f"Needs at least {MIN_NOISE_DOF} degrees of freedom in the split-half differences, i.e. repeated seeds "
                f"of the same stages ({len(runs)} runs so far)."]
    first = next(r for s in sorted(rows) for r in rows[s].records.values()
                 if isinstance(r.get("split_half"), dict) and len(r["split_half"].get("halves", [])) == 2)
    halves = first["split_half"]
    sizes = " and ".join(f"{len(scenes)} scenes with {half.get('num_gt', '?')} GT boxes"
                         for scenes, half in zip(halves["scenes"], halves["halves"]))
    dof = estimates.get("NDS", next(iter(estimates.values())))[2]
    out = [f"Each run's final predictions are also scored, with the official metric, on the first and the second half "
           f"of the val scenes in the split's order ({sizes}; halves of whole scenes, since the keyframes of a scene "
           f"are correlated). For one model, if the halves are independent samples of equal size, var(h1 − h2) = "
           "2 var(half) and a full-val value has var(half) / 2, so the evaluation's std is std(h1 − h2) / 2. Each "
           "stage (model family and recipe) has its own systematic half difference, the same for all its seeds (the "
           "range of the stage means is shown): so the spread is taken around each stage's mean and pooled over the "
           f"stages, with {dof} degrees of freedom (runs minus stages) for NDS, which leaves this std uncertain by "
           f"about ±{100 / math.sqrt(2 * dof):.0f} %. What it measures is the part of a score that depends on which "
           "scenes this particular run happens to meet, the part a larger val split would average away; NDS is not "
           "exactly the mean of its halves' NDS (TP errors are means over matches), so it is an approximation.", "",
           *markdown_table(["Metric", "Runs", "Stage means of h1 − h2", "Within-stage std of h1 − h2",
                            "Degrees of freedom", "Evaluation std (full val)", "Seed std (pooled, rows with ≥ 3 seeds)",
                            "Evaluation share of seed variance"], lines),
           "", "NDS and mAP in percentage points, mAVE in m/s. Seed std: root mean square of the per-row seed stds."]
    if "NDS" not in estimates or estimates["NDS"][1] is None:
        return out + ["", "No row has 3 seeds yet: nothing to compare the evaluation noise with."]
    evaluation, seed, _ = estimates["NDS"]
    share = evaluation ** 2 / seed ** 2
    left = math.sqrt(max(0.0, seed ** 2 - evaluation ** 2))
    if share >= 1.0:
        text = (f"**The finite validation set explains all of the seed-to-seed NDS spread** (evaluation std "
                f"{evaluation * 100:.2f} against a seed std of {seed * 100:.2f} NDS): a larger val split is the fix.")
    elif share >= 0.5:
        text = (f"**Evaluation sampling dominates**: the finite validation set accounts for about {share * 100:.0f} % "
                f"of the seed-to-seed NDS variance (evaluation std {evaluation * 100:.2f}, seed std "
                f"{seed * 100:.2f}); a noise-free evaluation would leave a seed std of about {left * 100:.2f} NDS, so "
                "a larger val split is worth its cost.")
    else:
        text = (f"**Model-to-model variation dominates**: the finite validation set accounts for only about "
                f"{share * 100:.0f} % of the seed-to-seed NDS variance (evaluation std {evaluation * 100:.2f}, seed "
                f"std {seed * 100:.2f}); a noise-free evaluation would still leave a seed std of about "
                f"{left * 100:.2f} NDS, so more seeds, not a larger val split, are what narrows the comparisons.")
    gap = paired(rows, "ftkd_pvw_1e-5", "sparsebev", "NDS")
    if gap is not None and gap[1] is not None:
        noise = math.sqrt(2) * evaluation  # two independent evaluations in a paired difference
        text += (f" For the paired FTKD (PV weight 1e-5) − baseline NDS difference (std {gap[1] * 100:.2f}, "
                 f"n={gap[2]}) the two evaluations add at most about {noise * 100:.2f} (if their errors are "
                 "independent); ")
        if noise >= gap[1]:
            text += "that alone could explain all of its spread."
        else:
            text += f"without them its std would be about {math.sqrt(gap[1] ** 2 - noise ** 2) * 100:.2f}."
    return out + ["", text]
