"""The results page's "Beyond the paper" section, three studies of where distillation helps: where the gain lands
(AP per class, mAP per distance band and visibility level, baseline vs distilled students), the future horizon, and
capacity vs future, with their tables, their text and their plots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from report_core import (BREAKDOWN_PREFIX, CLASSES, Row, difference_text, fmt, is_percent, markdown_table, mean_std,
                         metric_cells, paired, seed_count, told_apart, typical_paired_std, value_text, verdict)

# Beyond the paper (issue 10). Future horizon: (future frames, teacher stage, its FTKD student at PV-FFR weight 1e-5).
HORIZON_ROWS = [(0, "teacher_nofuture", "kd_nofuture_pvw_1e-5"), (1, "teacher_future1", "ftkd_future1_pvw_1e-5"),
                (3, "teacher", "ftkd_pvw_1e-5"), (7, "teacher_future7", "ftkd_future7_pvw_1e-5")]
# Capacity vs future: (label, teacher stage, student stage).
CAPACITY_ROWS = [("(a) large backbone, no future", "teacher_nofuture", "kd_nofuture_pvw_1e-5"),
                 ("(b) student-size backbone, future", "teacher_r18", "ftkd_teacher_r18_pvw_1e-5"),
                 ("(c) large backbone, future (the paper's teacher)", "teacher", "ftkd_pvw_1e-5")]
# The horizon's loss-balance check: the 7-future-frame teacher's student at the PV-FFR weight that puts its PV term
# where the 3-frame teacher's student has it at 1e-5 (stage, weight).
BALANCED_ROW = ("ftkd_future7_pvw_2e-6", "2e-6")
BEYOND_STAGES = {stage for rows in (HORIZON_ROWS, CAPACITY_ROWS) for _, *stages in rows for stage in stages} | {
    BALANCED_ROW[0]}
# Where the gain lands: subsets of the breakdown JSON (family, key, label) and (label, distilled, baseline) pairs.
BREAKDOWN_SUBSETS = [("distance", "0-20", "0-20 m"), ("distance", "20-40", "20-40 m"), ("distance", ">40", "> 40 m"),
                     ("visibility", "1", "visibility 0-40 %"), ("visibility", "2", "visibility 40-60 %"),
                     ("visibility", "3", "visibility 60-80 %"), ("visibility", "4", "visibility 80-100 %")]
GAIN_PAIRS = [("SparseBEV + FTKD", "ftkd_sparsebev", "sparsebev"),
              ("SparseBEV + FTKD, PV-FFR weight 1e-5", "ftkd_pvw_1e-5", "sparsebev"),
              ("StreamPETR + FTKD", "ftkd_streampetr", "streampetr")]


def paired_text(rows: dict[str, Row], stage_a: str, stage_b: str, metric: str) -> str:
    """'+1.20 ± 0.40 (n=3)' for the seed-paired difference a - b (percent for NDS/mAP); '—' without common seeds."""
    return difference_text(metric, paired(rows, stage_a, stage_b, metric))


def subset_gt(rows: dict[str, Row], family: str, key: str) -> str:
    """Ground-truth boxes of a breakdown subset (the same validation split for every run), from any record."""
    for row in rows.values():
        for record in row.records.values():
            subset = (record.get("breakdown") or {}).get(family, {}).get(key)
            if isinstance(subset, dict) and "num_gt" in subset:
                return str(subset["num_gt"])
    return "—"


def gain_subsets(rows: dict[str, Row]) -> list[tuple[str, str, str]]:
    """(label, metric, ground-truth boxes) of the gain tables: the AP of each class with ground truth in the
    validation split (from any record's breakdown), then the mAP of each distance band and visibility level."""
    per_class = next((counts for row in rows.values() for record in row.records.values()
                      if (counts := ((record.get("breakdown") or {}).get("all") or {}).get("num_gt_per_class"))), {})
    classes = [(f"AP {name}", f"AP_{name}", str(per_class[name])) for name in CLASSES if per_class.get(name)]
    return classes + [(label, f"{BREAKDOWN_PREFIX}{family}:{key}", subset_gt(rows, family, key))
                      for family, key, label in BREAKDOWN_SUBSETS]


def gain_section(rows: dict[str, Row], png_link: str | None) -> list[str]:
    """AP per class and mAP per distance band and visibility level, baseline vs distilled students, with seed-paired
    differences."""
    pairs = [(label, a, b) for label, a, b in GAIN_PAIRS
             if any(rows[s].values(f"{BREAKDOWN_PREFIX}distance:0-20") for s in (a, b) if s in rows)]
    if not pairs:
        return ["No breakdown in the JSON files yet: `benchmarks/accuracy.py` records one (`breakdown`, from "
                "`ftkd.engine.breakdown`) for every stage it finishes."]
    subsets, out = gain_subsets(rows), []
    for baseline in dict.fromkeys(b for _, _, b in pairs):
        students = [(label, a) for label, a, b in pairs if b == baseline]
        header = ["Class or subset", "GT boxes", f"{baseline} AP", *(x for label, _ in students for x in (
            f"{label} AP", "Δ (paired)"))]
        lines = []
        for label, metric, gt in subsets:
            cells = [label, gt, fmt(metric, rows[baseline].values(metric)) if baseline in rows else "—"]
            for _, stage in students:
                cells += [fmt(metric, rows[stage].values(metric)) if stage in rows else "—",
                          paired_text(rows, stage, baseline, metric)]
            lines.append(cells)
        out += [*markdown_table(header, lines), ""]
    out += ["AP (%) of each class with ground truth in the validation split, then mAP (%) over the classes with "
            "ground truth in each subset; mean ± std over seeds; Δ is the distilled "
            "student minus the baseline, paired by seed. Official matching (devkit `accumulate` on the metric's "
            "filtered boxes). Distance bands restrict ground truth and predictions to the band (a prediction by its "
            "own centre); a visibility level restricts the ground truth, and a prediction whose nearest same-class "
            "ground-truth box is of another level and within the matching threshold is ignored (see "
            "`ftkd/engine/breakdown.py`)."]
    if png_link:
        out += ["", f"![Paired mAP difference per distance band and visibility level]({png_link})"]
    gain_comparisons = [(f"{label}, {subset}", a, b, f"{BREAKDOWN_PREFIX}{family}:{key}")
                        for label, a, b in pairs for family, key, subset in BREAKDOWN_SUBSETS]
    class_comparisons = [(f"{label}, {subset}", a, b, metric) for label, a, b in pairs
                         for subset, metric, _ in subsets if metric.startswith("AP_")]
    hard = [(label, a, b) for label, a, b in pairs if paired(rows, a, b, f"{BREAKDOWN_PREFIX}distance:>40")]
    out += ["", "**In plain words.** The paper says FTKD detects distant and occluded objects earlier. "
            + "".join(f"For {label}, the paired mAP difference is "
                      f"{paired_text(rows, a, b, f'{BREAKDOWN_PREFIX}distance:>40')} beyond 40 m and "
                      f"{paired_text(rows, a, b, f'{BREAKDOWN_PREFIX}visibility:1')} at visibility 0-40 %. "
                      for label, a, b in hard)
            + in_plain_words(rows, gain_comparisons, "distillation moves the mAP of no distance band or "
                             "visibility level")
            + " Per class, " + lower_first(in_plain_words(rows, class_comparisons, "distillation moves the AP of "
                                                          "no class"))]
    return out


def mean_text(rows: dict[str, Row], stage: str, metric: str = "NDS") -> str:
    """'17.64', '19.25 (1 seed)' or '—': the metric's mean over the stage's seeds."""
    values = list(rows[stage].values(metric).values()) if stage in rows else []
    if not values:
        return "—"
    return value_text(metric, mean_std(values)[0]) + (" (1 seed)" if len(values) == 1 else "")


def means_text(rows: dict[str, Row], entries: list[tuple[str, str]]) -> str:
    """'0: 17.64, 1: 19.25 (1 seed), 3: —' for (label, stage) entries: `mean_text` of each."""
    return ", ".join(f"{label}: {mean_text(rows, stage)}" for label, stage in entries)


def lower_first(text: str) -> str:
    """The text with its first letter in lower case, to follow a lead-in such as "Per class, "."""
    return text[:1].lower() + text[1:]


def in_plain_words(rows: dict[str, Row], comparisons: list[tuple[str, str, str, str]], question: str) -> str:
    """What a study's seed-paired comparisons (label, a, b, metric) say: those that pass the reproduction test in
    either direction, how many the seeds cannot tell from noise, how many rest on one seed or have not run, and
    whether a compared row still has fewer than the protocol's 3 seeds."""
    typical = {metric: typical_paired_std(rows, metric) for metric in {metric for *_, metric in comparisons}}
    shown, noise, single, missing = [], 0, 0, 0
    for label, a, b, metric in comparisons:
        difference = paired(rows, a, b, metric)
        if difference is None:
            missing += 1
        elif difference[2] < 2:
            single += 1
        elif told_apart(difference, typical[metric]):
            shown.append(f"{label}: Δ{metric} {paired_text(rows, a, b, metric)}")
        else:
            noise += 1
    counts = [f"{count} {what}" for count, what in ((noise, "within seed noise"), (single, "on one seed"),
                                                    (missing, "without a shared seed")) if count]
    text = (f"Told apart from seed noise (the test above): {'; '.join(shown)}." if shown else
            f"So far {question} by more than this benchmark's noise: none of its {len(comparisons)} paired "
            "comparisons passes the test above.")
    if counts:
        text += f" Of the {len(comparisons)} comparisons, {', '.join(counts)}."
    few_seeds = any(stage not in rows or len(rows[stage].values(metric)) < 3
                    for _, a, b, metric in comparisons for stage in (a, b))
    if few_seeds:
        text += " The rows with fewer than 3 seeds can still change this."
    return text


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
    lines = [[label, f"`{teacher}` ({facts(rows, teacher)})", seed_count(rows, teacher),
              *metric_cells(rows, teacher, metrics), f"`{student}`", seed_count(rows, student),
              *metric_cells(rows, student, metrics),
              paired_text(rows, student, "sparsebev", "NDS"),
              "—" if student == reference else paired_text(rows, student, reference, "NDS")]
             for label, teacher, student in entries]
    return markdown_table(header, lines)


def kd_balance(balance: dict[str, Any] | None, student: str) -> tuple[float, float, int, float | None] | None:
    """(KD terms over the detection loss, weighted PV-FFR term, runs, PV-FFR weight) at the end of training, averaged
    over the stage's finished runs in the loss-balance files; None without such runs."""
    runs = [run for run in (balance or {}).get("runs", []) if run["stage"] == student and run["finished"]
            and run["last"].get("kd_over_detection") is not None]
    if not runs:
        return None
    return (sum(run["last"]["kd_over_detection"] for run in runs) / len(runs),
            sum(run["last"]["kd_weighted"].get("loss_pv", 0.0) for run in runs) / len(runs), len(runs),
            runs[0].get("kd_weights", {}).get("loss_pv"))


def balance_text(balance: dict[str, Any] | None, students: list[str]) -> str:
    """The students' KD terms over their detection loss at the end of training (`kd_balance`), and how far the PV
    term of the same weight moves between teachers; a student at another PV-FFR weight than the first has it named
    and stays out of that comparison. '' without such runs."""
    parts, pv, reference = [], {}, None
    for student in students:
        if (found := kd_balance(balance, student)) is None:
            continue
        ratio, pv_term, runs, weight = found
        reference = weight if not parts else reference
        at = "" if weight == reference else f" at PV-FFR weight {weight:.0e}".replace("e-0", "e-")
        parts.append(f"`{student}` {ratio:.2f} (PV {pv_term:.1f}{at}, {runs} run{'s' if runs > 1 else ''})")
        if not at:
            pv[student] = pv_term
    if not parts:
        return ""
    text = ("KD terms over the detection loss at the end of training (the weighted PV-FFR term in brackets; "
            f"\"KD loss against detection loss\" below): {', '.join(parts)}.")
    if len(pv) > 1 and min(pv.values()) > 0:
        high, low = max(pv, key=pv.get), min(pv, key=pv.get)
        text += (f" At the same PV-FFR weight the PV term of `{high}` is {pv[high] / pv[low]:.0f}x that of `{low}`: "
                 "the weight was chosen with the 3-future-frame teacher, and the size of the PV term (how far the "
                 "student's reconstruction is from the teacher's features) differs between teachers.")
    return text


def study_conclusion(rows: dict[str, Row], entries: list[tuple[str, str, str]], by: str,
                     comparisons: list[tuple[str, str, str, str]], question: str,
                     balance: dict[str, Any] | None, more_students: tuple[str, ...] = ()) -> list[str]:
    """A study's closing lines: teacher and student NDS per entry (label, teacher, student), what the comparisons
    say (`in_plain_words`) and the KD balance of the entries' students and of `more_students`."""
    out = ["", f"**In plain words.** Teacher NDS{by}: "
               f"{means_text(rows, [(label, teacher) for label, teacher, _ in entries])}; student NDS: "
               f"{means_text(rows, [(label, student) for label, _, student in entries])} (baseline student "
               f"{mean_text(rows, 'sparsebev')}). " + in_plain_words(rows, comparisons, question)]
    if text := balance_text(balance, [*(student for _, _, student in entries), *more_students]):
        out += ["", text]
    return out


def beyond_section(rows: dict[str, Row], links: dict[str, str], balance: dict[str, Any] | None = None) -> list[str]:
    """The three studies the paper does not make (issue 10): where the gain lands, the future horizon, and capacity
    against future; tables, plots and what the seeds say."""
    return ["Three questions the paper leaves open. Differences are paired by seed.",
            "", "### Where the gain lands", "", *gain_section(rows, links.get("gain")),
            "", "### How much future", "",
            "This study and the next distil the same SparseBEV student with the full FTKD at PV-FFR weight 1e-5 (at "
            "the paper's 1e-3 the PV term is ~20x the detection loss for models trained from scratch, see above); the "
            "student with the 3-future-frame `teacher` is the `ftkd_pvw_1e-5` row.",
            "", *horizon_study(rows, links, balance),
            "", "### Is it the future or the teacher's size?", "", *capacity_study(rows, links, balance)]


def horizon_study(rows: dict[str, Row], links: dict[str, str], balance: dict[str, Any] | None) -> list[str]:
    """Teachers with 0, 1, 3 and 7 future frames and their students: table, plot, steps, conclusion, KD balance."""
    horizon = [(f"{frames} future frame{'s' if frames != 1 else ''}", teacher, student)
               for frames, teacher, student in HORIZON_ROWS]
    out = [*beyond_table(rows, horizon, "ftkd_pvw_1e-5"), ""]
    if "horizon" in links:
        out += [f"![Teacher and student NDS, mAP and mAVE against the future horizon]({links['horizon']})", ""]
    typical = typical_paired_std(rows, "NDS")
    steps = list(zip(HORIZON_ROWS, HORIZON_ROWS[1:]))
    comparisons = []
    for who, index in (("Teacher", 1), ("Student", 2)):  # the teacher's own gain first: what the student could get
        for shorter, longer in steps:
            label, a, b = f"{longer[0]} vs {shorter[0]} future frames", longer[index], shorter[index]
            out.append(f"- {who}, {label}: ΔNDS {paired_text(rows, a, b, 'NDS')}, ΔmAVE "
                       f"{paired_text(rows, a, b, 'mAVE')} ({verdict(paired(rows, a, b, 'NDS'), True, typical)})")
            comparisons.append((f"{who.lower()}, {label}", a, b, "NDS"))
    comparisons += [(f"student of the {frames}-future-frame teacher vs baseline", student, "sparsebev", metric)
                    for frames, _, student in HORIZON_ROWS for metric in ("NDS", "mAVE")]
    balanced, weight = BALANCED_ROW
    (*_, three_frames), (*_, seven_frames) = HORIZON_ROWS[2], HORIZON_ROWS[3]
    checks = ((f"vs at PV-FFR weight 1e-5 (`{seven_frames}`)", seven_frames),
              (f"vs the 3-future-frame teacher's student (`{three_frames}`)", three_frames))
    out.append(f"- Loss balance: the 7-future-frame teacher's student at PV-FFR weight {weight} (`{balanced}`, a "
               f"weight chosen to bring its PV term near that of `{three_frames}`) "
               + "; ".join(f"{label}: ΔNDS {paired_text(rows, balanced, b, 'NDS')}, ΔmAVE "
                           f"{paired_text(rows, balanced, b, 'mAVE')} "
                           f"({verdict(paired(rows, balanced, b, 'NDS'), True, typical)})" for label, b in checks))
    comparisons += [(f"student of the 7-future-frame teacher at PV-FFR weight {weight} {label}", balanced, b, "NDS")
                    for label, b in checks]
    entries = [(str(frames), teacher, student) for frames, teacher, student in HORIZON_ROWS]
    return out + study_conclusion(rows, entries, " by future frames", comparisons, "the horizon changes neither the "
                                  "teacher nor what its student learns", balance, (balanced,))


def capacity_study(rows: dict[str, Row], links: dict[str, str], balance: dict[str, Any] | None) -> list[str]:
    """Teachers (a) large without future, (b) student-size with future, (c) large with future and their students."""
    out = [*beyond_table(rows, CAPACITY_ROWS, "ftkd_pvw_1e-5"), ""]
    if "capacity" in links:
        out += [f"![Teacher and student NDS, mAP and mAVE per teacher]({links['capacity']})", ""]
    typical = typical_paired_std(rows, "NDS")
    (_, past_teacher, large_past), (_, small_teacher, small_future), (_, large_teacher, large_future) = CAPACITY_ROWS
    studied = (  # (what is compared, students a and b, their teachers a and b)
        ("future frames with a student-size teacher vs a large teacher without future", "b − a", small_future,
         large_past, small_teacher, past_teacher),
        ("a large teacher vs a student-size one, both with future", "c − b", large_future, small_future,
         large_teacher, small_teacher),
        ("future frames for the large teacher", "c − a", large_future, large_past, large_teacher, past_teacher),
    )
    comparisons = []
    for label, short, a, b, teacher_a, teacher_b in studied:
        verdict_text = verdict(paired(rows, a, b, "NDS"), True, typical)
        out.append(f"- Student, {label} ({short}): ΔNDS {paired_text(rows, a, b, 'NDS')} ({verdict_text})")
        comparisons += [(f"teacher, {short}", teacher_a, teacher_b, "NDS"), (f"student, {short}", a, b, "NDS")]
    letters = [(label.split()[0], teacher, student) for label, teacher, student in CAPACITY_ROWS]
    comparisons += [(f"student of teacher {letter} vs baseline", student, "sparsebev", "NDS")
                    for letter, _, student in letters]
    return out + study_conclusion(rows, letters, "", comparisons, "neither the future frames nor the teacher's size "
                                  "changes what the student learns", balance)


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
        if BALANCED_ROW[0] in rows:  # the loss-balance check beside the 7-frame student
            mean, error = points(BALANCED_ROW[0], metric)
            axis.errorbar([frames[-1] + 0.15], [mean], yerr=[error], fmt="D", capsize=3, color="tab:green",
                          label=f"student, PV-FFR weight {BALANCED_ROW[1]}")
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
