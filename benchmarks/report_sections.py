"""Sections of the results page built from the other benchmarks' JSON files: inference/training speed
(benchmarks/speed.py), multi-GPU scaling (benchmarks/scaling.py), KD-vs-detection loss balance
(benchmarks/loss_balance.py) and the analysis in words ("What explains the differences"); the sections on noise
(reruns of a seed, the evaluation's own noise) are in report_noise.py."""

from __future__ import annotations

import math
import re
import statistics
from typing import Any

from report_core import Row, fps_of, markdown_table, paired, seeds_to_show, typical_paired_std
from report_noise import rerun_rows

SPEED_MODES = (("eager_fp32", "eager fp32"), ("eager_bf16", "eager bf16"), ("graph_bf16", "CUDA graph bf16"),
               ("decoder_eager_bf16", "decoder only (frames cached), eager bf16"),
               ("decoder_graph_bf16", "decoder only (frames cached), CUDA graph bf16"),
               ("backbone_only_fp32", "backbone only, fp32"), ("backbone_only_bf16", "backbone only, bf16"),
               ("train_step_bf16", "training step, bf16"),
               ("graph_bf16_weights", "CUDA graph, bf16 weights (no autocast)"),
               ("graph_compile_bf16", "CUDA graph, compiled decoder layer, bf16 autocast"),
               ("graph_compile_bf16_weights", "CUDA graph, compiled decoder layer, bf16 weights"),
               ("decoder_graph_compile_bf16_weights", "decoder only (frames cached), compiled, bf16 weights"))
# opt-in inference options of speed.py and their parity entries (largest logit difference vs eager fp32)
OPTION_PARITY = {"graph_bf16_weights": "parity_bf16_weights", "graph_compile_bf16": "parity_compile_bf16",
                 "graph_compile_bf16_weights": "parity_compile_bf16_weights"}
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
            if key not in entry:  # a section that benchmark does not have (the decoder alone: SparseBEV only)
                continue
            row = entry[key]
            if not isinstance(row, dict) or "median_ms" not in row:
                reason = row.get("error") or row.get("skipped") or "not run"
                lines.append([arch, label, "—", "—", "—", str(reason)])
                continue
            peak = f"{row['peak_gib']:.1f}" if "peak_gib" in row else "—"
            parity = entry.get(OPTION_PARITY.get(key, ""), {})
            note = (f"largest logit difference vs eager fp32 {parity['vs_eager_fp32_max_abs_logit']:.3f} (eager bf16 "
                    f"autocast: {parity['eager_bf16_vs_fp32_max_abs_logit']:.3f})"
                    if isinstance(parity, dict) and "vs_eager_fp32_max_abs_logit" in parity else "")
            if isinstance(row.get("warmup_s"), (int, float)) and key.startswith("graph_compile"):
                note = "; ".join(x for x in (note, f"warm-up with compile {row['warmup_s']:.0f} s") if x)
            lines.append([arch, label, f"{row['median_ms']:.2f}", f"{row['fps']:.1f}", peak, note])
        onnx = entry.get("onnx", {})
        if isinstance(onnx, dict) and "latency" in onnx:
            parity = entry.get("onnx_parity", {})
            note = (f"{onnx['provider']} (available: {', '.join(onnx['providers_available'])}); export "
                    f"{onnx['export_s']:.0f} s, {onnx['file_mb']:.0f} MB, opset {onnx['opset']}; parity vs PyTorch: "
                    f"score {parity.get('max_score_diff', float('nan')):.1e}, box "
                    f"{parity.get('max_box_diff', float('nan')):.1e}, within tolerance: "
                    f"{parity.get('within_tolerance')}")
            lines.append([arch, "ONNX Runtime", f"{onnx['latency']['median_ms']:.1f}", f"{onnx['latency']['fps']:.2f}",
                          "—", note])
    out = markdown_table(["Student", "Mode", "ms (median)", "FPS", "Peak GiB", "Note"], lines)
    verdicts = []
    for arch, target in FPS_TARGETS.items():
        fps, mode = fps_of(speed, arch)
        if fps is not None:
            verdicts.append(f"{arch}: {fps:.1f} FPS ({mode}) against the target of {target:.0f}: "
                            f"{'met' if fps >= target else 'not met'}")
    return out + ["", f"Device: {speed.get('device')}, commit {str(speed.get('commit'))[:8]}, torch "
                  f"{speed.get('torch')}. Protocol: {speed.get('protocol', '')}", "", *(f"- {v}" for v in verdicts),
                  *profile_lines(speed)]


def parity_section(reports: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """The official metric of trained SparseBEV students through each online inference mode
    (benchmarks/online_parity.py): from the `sparsebev` stage's records on a GPU and from docs/results/online_parity*.json."""
    if not reports:
        return ["No online parity measurement yet (benchmarks/online_parity.py; on a GPU the `sparsebev` stage "
                "records one)."]
    lines = []
    for source, report in reports:
        for mode, entry in report["modes"].items():
            diff = entry.get("max_abs_logit_diff")
            lines.append([source, mode, f"{100 * entry['NDS']:.2f}", f"{100 * entry['mAP']:.2f}",
                          f"{entry['mAVE']:.3f}", "reference" if diff is None else
                          f"{diff:.3f} (median {entry['median_max_abs_logit_diff']:.3f})",
                          f"{entry['seconds']:.1f}"])
    sources = [f"- {source}: {report['device']}, split {report['split']} ({report['num_samples']} samples), "
               f"largest fp32 |logit| {report['max_abs_logit']:.2f}" + (f". {report['note']}" if report.get("note") else "")
               for source, report in reports]
    return [*markdown_table(["Model", "Mode", "NDS", "mAP", "mAVE", "Largest logit difference vs fp32 (per sample)",
                             "Seconds"], lines),
            "", "Streamed at batch 1, one new frame per sample (as deployed); the logit difference is the largest "
                "over a sample's queries and classes, its maximum and median over the samples; seconds are the mode's "
                "own time over the split (model, decoding and copies; data loading excluded, compile included).",
            "", *sources]


def attention_section(reports: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Where trained StreamPETR students' cross-attention looks, and how much their outputs depend on the images
    (benchmarks/streampetr_attention.py): from the StreamPETR stages' records and docs/results/streampetr_attention*.json."""
    if not reports:
        return ["No attention measurement yet (benchmarks/streampetr_attention.py; every StreamPETR stage records one)."]
    rows = [[label, f"{r['split']} ({r['frames']} frames)", f"{r['attention_lift']:.2f}",
             f"{r['attention_mass_near']:.3f} / {r['token_fraction_near']:.3f}", f"{r['image_dependence']:.2f}",
             r.get("note", "")] for label, r in reports]
    radii = sorted({r["radius_m"] for _, r in reports})
    radius = f"{radii[0]:g} m" if len(radii) == 1 else "the row's radius (" + ", ".join(f"{x:g}" for x in radii) + " m)"
    return [*markdown_table(["Model", "Split", "Attention lift", "Mass near / token share", "Image dependence", "Note"],
                            rows),
            "", "A query is placed at the centre of every ground-truth box (a noise-free denoising query, eval mode, "
                "memory streamed as in `ftkd predict`); *attention lift* is the last decoder layer's attention mass "
                f"(mean over heads) on the tokens whose viewing ray passes within {radius} of that centre, divided by "
                "those tokens' share of all tokens: 1 means no better than uniform. *Image dependence* is the mean "
                "change of the matching queries' logits when the frame's images are replaced by grey ones (same memory), "
                "divided by the logits' spread over queries (near 0: the outputs ignore the images)."]


def kernel_label(name: str) -> str:
    """A readable short name of a CUDA kernel: namespaces and template noise dropped, the functor kept."""
    name = re.sub(r"\(anonymous namespace\)::|at::native::|void |c10::|at::cuda::detail::", "", name)
    return name[:70]


def profile_lines(speed: dict[str, Any]) -> list[str]:
    """Where a SparseBEV step's GPU time goes (speed.py's profile_bf16 section), if it was measured on CUDA."""
    profile = speed.get("sparsebev", {}).get("profile_bf16")
    if not isinstance(profile, dict) or profile.get("kind") != "cuda kernels":
        return []
    top = "; ".join(f"`{kernel_label(r['name'])}` {r['ms_per_step']:.2f} ms ({r['calls_per_step']:.0f} calls)"
                    for r in profile["top"][:6])
    return ["", f"SparseBEV kernel profile (eager bf16, {profile['steps']} steps): {profile['total_ms_per_step']:.1f} ms "
            f"of GPU kernels per step in {profile['count_per_step']:.0f} launches. The largest: {top}."]


def scaling_section(scalings: list[dict[str, Any]]) -> list[str]:
    """Multi-GPU throughput from benchmarks/scaling.py's JSON files (one per mode: distillation, plain training)."""
    if not scalings:
        return ["No docs/results/scaling*.json yet."]
    out: list[str] = []
    for scaling in scalings:
        mode = scaling.get("mode", "distill")
        title = ("Distillation (student + teacher)" if mode == "distill" else "Training (student alone, no teacher)")
        lines = [[str(r["processes"]), str(r["global_batch"]), f"{r['median_ms_per_step']:.1f}",
                  f"{r['samples_per_s']:.2f}", f"{r.get('efficiency', float('nan')):.3f}",
                  f"{r.get('peak_memory_mib_rank0', float('nan')):.0f}"]
                 for r in scaling.get("rows", []) if r.get("ok") and r.get("grad_accum", 1) == 1]
        source = (f"`{scaling.get('config')}` distilled from a random-weight teacher" if mode == "distill"
                  else f"`{scaling.get('config')}` trained alone")
        out += [f"### {title}", "",
                *markdown_table(["GPUs", "Global batch", "ms/step", "samples/s", "Efficiency", "Peak MiB (rank 0)"],
                                lines),
                "", f"Device: {scaling.get('device_name')} x {scaling.get('gpus_available')}, commit "
                f"{str(scaling.get('commit'))[:8]}; {source}, {scaling.get('steps')} steps per run, overrides "
                f"{scaling.get('overrides')}. {scaling.get('timing', '')}."]
        agreement = scaling.get("agreement") or {}
        if agreement:
            out += ["", f"Loss curves, {agreement.get('processes')} processes vs 1 process with accumulation at the "
                    f"same global batch: mean |relative difference| {agreement.get('mean_abs_rel_diff', float('nan')):.1e}, "
                    f"noise {agreement.get('noise_rel', float('nan')):.3f}, within noise: "
                    f"{agreement.get('within_noise')}."]
            if mode == "distill":
                out[-1] += (" With a random teacher the total loss (~1e12) is the PV-FFR term against huge random "
                            "features, which both runs compute on the same samples: this check shows the two paths "
                            "see the same data and weights, not that the detection losses agree.")
        out.append("")
    return out[:-1]


def merge_balances(balances: list[dict[str, Any]]) -> dict[str, Any]:
    """Several benchmarks/loss_balance.py files (one per GPU session) as one: every run keeps its file's commit and
    device, so runs of one stage and seed from two sessions stay apart."""
    runs = [{**run, "commit": str(b.get("commit", "")), "device": b.get("device", "")}
            for b in balances for run in b.get("runs", [])]
    return {"runs": runs, "devices": sorted({b.get("device", "") for b in balances})}


def balance_section(balance: dict[str, Any] | None) -> list[str]:
    """KD terms against the detection loss at the end of each run, from benchmarks/loss_balance.py's JSON files."""
    if not balance or not balance.get("runs"):
        return ["No docs/results/loss_balance*.json yet."]
    lines = []
    for run in sorted(balance["runs"], key=lambda r: (r["stage"], r["seed"], r.get("commit", ""))):
        last = run["last"]
        terms = ", ".join(f"{k.removeprefix('loss_')} {v:.1f}" for k, v in last["kd_weighted"].items()) or "—"
        ratio = last["kd_over_detection"]
        lines.append([run["stage"], str(run["seed"]), run.get("commit", "")[:8], str(last["step"]),
                      "yes" if run["finished"] else "no", f"{last['detection']:.1f}", terms,
                      "—" if ratio is None else f"{ratio:.2f}", f"{last['grad_norm']:.0f}", str(run["grad_clip"])])
    return markdown_table(["Stage", "Seed", "Commit", "Step", "Finished", "Detection loss", "Weighted KD terms",
                           "KD / detection", "Grad norm", "Clip"], lines) + [
        "", f"Last logged training window of every run folder of each session ({', '.join(balance['devices'])}); the "
        "KD terms are weighted as the objective weighs them. Gradient norms are before clipping at the recipe's 35. "
        "An unfinished run was cut by a session's deadline."]


def _spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else float("nan")


def velocity_note(long: Row, short: Row) -> str:
    """Why the longer-trained teacher's mAVE differs, class by class: the devkit scores a class that never reaches
    10 % recall at error 1, so a class that crosses it with badly matched boxes can move mAVE by itself."""
    def per_class(row: Row) -> dict[str, list[float]]:
        """{class: velocity error of each seed} (classes the metric scores on velocity)."""
        errors: dict[str, list[float]] = {}
        for record in row.records.values():
            for name, tp in record["metrics"].get("per_class_TP", {}).items():
                if isinstance(tp.get("vel_err"), (int, float)):
                    errors.setdefault(name, []).append(float(tp["vel_err"]))
        return errors

    long_errors, short_errors = per_class(long), per_class(short)
    if not long_errors or not short_errors:
        return ""
    long_mave, short_mave = (statistics.fmean(row.values("mAVE").values()) for row in (long, short))
    newly = [c for c in long_errors if all(v == 1.0 for v in short_errors.get(c, [1.0]))
             and statistics.fmean(long_errors[c]) > 1.0]
    if long_mave <= short_mave or not newly:
        return ""
    # the other classes measured (above the recall floor somewhere) in both teachers
    rest = [c for c in long_errors if c not in newly and c in short_errors
            and any(v != 1.0 for v in long_errors[c]) and any(v != 1.0 for v in short_errors[c])]
    ap = {c: statistics.fmean(r["metrics"]["per_class_AP"].get(c, 0.0) for r in long.records.values()) * 100
          for c in newly}
    crossed = ", ".join(f"{c} (AP {ap[c]:.2f} %, velocity error {statistics.fmean(long_errors[c]):.2f} m/s)"
                        for c in newly)
    return (f" Its mAVE is higher ({long_mave:.3f} against {short_mave:.3f}), but that is the metric, not worse "
            f"velocities: {crossed} now reaches the 10 % recall at which the devkit starts measuring TP errors, where the 6-epoch teacher did "
            f"not and so scored the capped error of 1; over the other classes the two teachers' velocity errors are "
            f"{statistics.fmean(statistics.fmean(long_errors[c]) for c in rest):.3f} and "
            f"{statistics.fmean(statistics.fmean(short_errors[c]) for c in rest):.3f} m/s (mean of class means).")


def analysis(rows: dict[str, Row], balance: dict[str, Any] | None, earlier: list[dict[str, Row]] | None = None
             ) -> list[str]:
    """What the numbers say, in words; every number is computed from the JSON files."""
    out = []
    base = rows.get("sparsebev")
    if base is not None and len(base.values("NDS")) > 1:
        nds = list(base.values("NDS").values())
        mAP = list(base.values("mAP").values())
        reruns = rerun_rows(rows, earlier or [])
        gap = paired(rows, "ftkd_pvw_1e-5", "sparsebev", "NDS")
        text = (f"- **Seed noise is larger than the effect we look for.** The baseline SparseBEV student's NDS "
                f"varies by {_spread(nds) * 100:.2f} (std over {len(nds)} seeds) while its mAP varies by only "
                f"{_spread(mAP) * 100:.2f}: at ~{statistics.fmean(mAP) * 100:.0f} % mAP the five TP errors in NDS are "
                "averaged over few true positives and swing from run to run")
        errors = sorted(((_spread(list(base.values(m).values())), m) for m in ("mATE", "mASE", "mAOE", "mAVE", "mAAE")
                         if len(base.values(m)) > 1), reverse=True)
        text += (f" (largest: {errors[0][1]} std {errors[0][0]:.3f}, {errors[1][1]} std {errors[1][0]:.3f}; each "
                 "enters NDS divided by 10)." if len(errors) > 1 else ".")
        if reruns:
            worst = max(reruns, key=lambda r: abs(r[3]["NDS"]))
            text += (f" The same seed trained twice (two sessions, {len(reruns)} pairs of runs) moved NDS by up to "
                     f"{abs(worst[3]['NDS']) * 100:.2f} ({worst[0]} seed {worst[1]}): GPU training is not "
                     "bit-reproducible, so pairing by seed removes less noise than it would on a deterministic run.")
        if gap is not None:
            kd = rows["ftkd_pvw_1e-5"]
            crossed = [seed for seed in kd.seeds if seed in base.records
                       and kd.records[seed]["environment"].get("commit") != base.records[seed]["environment"].get("commit")]
            if crossed:
                text += (f" Of the {gap[2]} seed pairs of FTKD (PV weight 1e-5) and baseline, {len(crossed)} (seeds "
                         f"{', '.join(map(str, crossed))}) pair runs of two different sessions.")
        if gap is not None and gap[1] is not None:
            spread = max(gap[1], typical_paired_std(rows, "NDS") or 0.0)
            text += (f" With the paired std of FTKD − baseline measured here ({gap[1] * 100:.2f} NDS; the test above "
                     f"uses {spread * 100:.2f}, the larger of it and the typical paired std), showing the paper's "
                     f"+1.0 NDS would take about {seeds_to_show(0.01, spread)} seeds per row.")
        out.append(text)
    gap = paired(rows, "teacher", "sparsebev", "NDS")
    if gap is not None:
        teacher = next(iter(rows["teacher"].records.values()))
        mAP = {stage: statistics.fmean(rows[stage].values("mAP").values()) * 100 for stage in ("teacher", "sparsebev")}
        text = (f"- **The 6-epoch teacher is no stronger than the student; the 12-epoch one is.** The offline teacher "
                f"(ResNet-{teacher['config']['model']['backbone']['depth']}, "
                f"{teacher['config']['data']['num_future_frames']} future frames, "
                f"{teacher['config']['train']['epochs']:g} epochs from scratch) differs from the SparseBEV student by "
                f"{gap[0] * 100:+.2f} NDS (paired over {gap[2]} seeds) at {mAP['teacher']:.1f} % vs "
                f"{mAP['sparsebev']:.1f} % mAP: a deeper network trained from scratch learns more slowly, and a "
                "teacher that knows no more than its student has nothing to pass on.")
        if "teacher_long" in rows:
            long_mAP = statistics.fmean(rows["teacher_long"].values("mAP").values()) * 100
            long_nds = statistics.fmean(rows["teacher_long"].values("NDS").values()) * 100
            text += (f" Trained twice as long it reaches {long_nds:.1f} NDS and {long_mAP:.1f} % mAP, "
                     f"{long_mAP / mAP['sparsebev']:.1f}x the student's mAP: a teacher worth distilling from.")
            text += velocity_note(rows["teacher_long"], rows["teacher"])
        out.append(text)
    if balance and balance.get("runs"):
        last = {(r["commit"], r["stage"], r["seed"]): r["last"] for r in balance["runs"]}

        def ratios(stage: str) -> list[float]:
            return [v["kd_over_detection"] for (_, s, _), v in last.items()
                    if s == stage and v["kd_over_detection"] is not None]

        def grad_ratios(stage: str) -> list[float]:
            return [v["grad_norm"] / last[(commit, "sparsebev", seed)]["grad_norm"]
                    for (commit, s, seed), v in last.items() if s == stage and (commit, "sparsebev", seed) in last]

        ftkd, mgd, rescaled = ratios("ftkd_sparsebev"), ratios("kd_mgd"), ratios("ftkd_pvw_1e-5")
        pv_share = [v["kd_weighted"].get("loss_pv", 0.0) / sum(v["kd_weighted"].values())
                    for (_, stage, _), v in last.items() if stage == "ftkd_sparsebev" and v["kd_weighted"]]
        if ftkd and pv_share and grad_ratios("ftkd_sparsebev"):
            grads = grad_ratios("ftkd_sparsebev")
            text = (f"- **At the paper's loss weights the KD terms swamp detection.** At the end of training the "
                    f"weighted KD terms of FTKD are {min(ftkd):.0f}-{max(ftkd):.0f}x the detection loss, "
                    f"{min(pv_share) * 100:.0f}-{max(pv_share) * 100:.0f} % of it PV-FFR (weight 1e-3 on a sum of "
                    "squared errors of un-normalised FPN features, which are far larger in networks trained from "
                    "scratch than in ImageNet-pretrained ones)"
                    + (f"; MGD's term is {statistics.fmean(mgd):.0f}x" if mgd else "")
                    + f". The gradient norm before clipping is then {min(grads):.0f}-{max(grads):.0f}x the "
                    "baseline's (same seed), and clipping at 35 shrinks the detection gradient by that factor, which "
                    "explains the paper-weight rows' lower mAP.")
            if rescaled:
                fixed = paired(rows, "ftkd_pvw_1e-5", "sparsebev", "mAP")
                fixed_paper_weight = paired(rows, "ftkd_sparsebev", "sparsebev", "mAP")
                text += (f" At PV-FFR weight 1e-5 the KD terms are {min(rescaled):.2f}-{max(rescaled):.2f}x the "
                         "detection loss and the gradient norms "
                         + (f"{min(grad_ratios('ftkd_pvw_1e-5')):.2f}-{max(grad_ratios('ftkd_pvw_1e-5')):.2f}x "
                            "the baseline's" if grad_ratios("ftkd_pvw_1e-5") else "close to the baseline's")
                         + (f"; the student's mAP is back within noise of the baseline's ({fixed[0] * 100:+.2f} "
                            f"paired, n={fixed[2]}, against {fixed_paper_weight[0] * 100:+.2f} at weight 1e-3)"
                            if fixed and fixed_paper_weight else "") + ".")
            out.append(text)
    kd_rows = [(label, stage) for label, stage in (
        ("FTKD at PV weight 1e-5", "ftkd_pvw_1e-5"), ("FTKD from the 12-epoch teacher", "ftkd_long_pvw_1e-5"),
        ("FitNet", "kd_fitnet"), ("MGD at weight 1e-3", "kd_mgd_w1e-3"), ("logit KD", "kd_logit"),
        ("query-FFR alone", "abl_query"), ("query-FFR + FLD", "abl_query_fld"),
        ("FTKD with learned TSA projections", "tsa_learned_pvw_1e-5"),
        ("FTKD from the past-only teacher", "kd_nofuture_pvw_1e-5")) if stage in rows]
    if kd_rows and base is not None:
        parts = []
        for label, stage in kd_rows:
            nds, mAP = paired(rows, stage, "sparsebev", "NDS"), paired(rows, stage, "sparsebev", "mAP")
            if nds and mAP:
                parts.append(f"{label} {nds[0] * 100:+.2f} NDS / {mAP[0] * 100:+.2f} mAP (n={nds[2]})")
        out.append("- **With balanced weights no KD method moves the student beyond that noise.** Paired with the "
                   "baseline of the same seed: " + "; ".join(parts) + ". Even the 12-epoch teacher leaves a 6-epoch student where it was: at this scale the student is limited "
                   "by its own training (6 epochs from scratch, a ResNet-18 at 128x352), not by the quality of its "
                   "targets. What we would try next: students trained longer (or from pretrained weights, as in the "
                   "paper) so that the teacher's extra knowledge is what they lack, and more seeds per row (\"How "
                   "noisy is one evaluation\" below measures how much of the seed spread a larger validation split "
                   "would remove).")
        spread = seed0_spread(rows)
        if spread:
            out.append(spread)
    if "streampetr" in rows:
        mAP = statistics.fmean(rows["streampetr"].values("mAP").values()) * 100
        epochs = next(iter(rows["streampetr"].records.values()))["config"]["train"]["epochs"]
        text = (f"- **StreamPETR does not learn from scratch at this scale** ({mAP:.2f} % mAP after {epochs:g} "
                "epochs; its detection loss does fall), so its FTKD rows cannot say anything yet.")
        variants = [(label, stage) for label, stage in (
            ("without query denoising", "streampetr_nodn"), ("at 4x the lr", "streampetr_lr4e-4"),
            ("with the ray-distance attention bias", "streampetr_raybias"),
            ("with the centre-heatmap loss on its image tokens", "streampetr_heatmap"),
            ("with both", "streampetr_raybias_heatmap"),
            ("with FTKD (PV-FFR weight 1e-5)", "ftkd_streampetr_pvw_1e-5"),
            ("with its backbone initialised from the SparseBEV student", "streampetr_sparsebev_init"),
            ("at the recipe's global batch 16 for 48 epochs (4x the samples)", "streampetr_bs16_e48"),
            ("for 96 epochs (8x the samples)", "streampetr_bs16_e96")) if stage in rows]
        if variants:
            found = {stage: statistics.fmean(rows[stage].values("mAP").values()) * 100 for _, stage in variants}
            listed = "; ".join(f"{label} {found[stage]:.2f} %" for label, stage in variants)
            sparse = (statistics.fmean(rows["sparsebev"].values("mAP").values()) * 100
                      if "sparsebev" in rows else float("nan"))
            learned = [label for label, stage in variants if found[stage] >= 0.5 * sparse]
            text += (f" Variants (mAP): {listed}. "
                     + (f"Only {', '.join(learned)} reaches at least half of SparseBEV's {sparse:.1f} % mAP."
                        if learned else f"None reaches half of SparseBEV's {sparse:.1f} % mAP."))
        lifts = {stage: [a["attention_lift"] for a in rows[stage].analyses("attention_geometry", "attention_lift")
                         .values()] for stage in ("streampetr", "streampetr_bs16_e48") if stage in rows}
        if all(lifts.get(stage) for stage in ("streampetr", "streampetr_bs16_e48")):
            text += (f" With 4x the samples its cross-attention starts to find the objects (attention lift "
                     f"{statistics.fmean(lifts['streampetr_bs16_e48']):.2f} against "
                     f"{statistics.fmean(lifts['streampetr']):.2f}; 1 is uniform, \"Does StreamPETR look where the "
                     "objects are?\" below), as for a model short of training signal: the official recipe starts "
                     "from pretrained weights and sees nuScenes' 28,130 training samples per epoch.")
        out.append(text)
    return out


# SparseBEV students at balanced KD weights that share seed 0: the spread between them against one model's over seeds
BALANCED_VARIANTS = ("ftkd_pvw_1e-5", "ftkd_long_pvw_1e-5", "kd_fitnet", "kd_mgd_w1e-3", "kd_logit", "abl_query",
                     "abl_query_fld", "tsa_learned_pvw_1e-5", "kd_nofuture_pvw_1e-5", "mask_0.4_pvw_1e-5",
                     "mask_0.75_pvw_1e-5", "mask_0.9_pvw_1e-5", "fld_fg_pvw_1e-5", "fld_bg_pvw_1e-5")


def seed0_spread(rows: dict[str, Row]) -> str | None:
    """A bullet comparing the NDS spread between the seed-0 balanced-weight KD variants with the baseline's spread over
    its seeds, and where the baseline's seed 0 (which every one-seed row is paired with) lies among its seeds."""
    if "sparsebev" not in rows:
        return None
    seeds = rows["sparsebev"].values("NDS")
    variants = [nds[0] for nds in (rows[stage].values("NDS") for stage in BALANCED_VARIANTS if stage in rows)
                if 0 in nds]
    if len(variants) < 3 or len(seeds) < 3 or 0 not in seeds:
        return None
    base_mean, base_std = statistics.fmean(seeds.values()), statistics.stdev(seeds.values())
    rank = sorted(seeds.values()).index(seeds[0])
    place = ("the lowest" if rank == 0 else "the highest" if rank == len(seeds) - 1
             else f"number {rank + 1} from the bottom")
    return (f"- **At one seed the KD variants are indistinguishable.** The {len(variants)} SparseBEV students distilled "
            f"at balanced weights with seed 0 (every KD method, ablation and sweep above) reach "
            f"{min(variants) * 100:.2f}-{max(variants) * 100:.2f} NDS, mean {statistics.fmean(variants) * 100:.2f}, "
            f"std {statistics.stdev(variants) * 100:.2f} between variants; the baseline alone spans "
            f"{min(seeds.values()) * 100:.2f}-{max(seeds.values()) * 100:.2f} over its {len(seeds)} seeds (std "
            f"{base_std * 100:.2f}, mean {base_mean * 100:.2f}). Its seed 0, which every one-seed row is paired with, "
            f"is {place} of its {len(seeds)} ({seeds[0] * 100:.2f}): one-seed differences from it carry that seed's "
            f"luck; against the baseline's mean the variants differ by "
            f"{(statistics.fmean(variants) - base_mean) * 100:+.2f} NDS on average, while the standard error of that "
            f"mean alone is {base_std / math.sqrt(len(seeds)) * 100:.2f}.")
