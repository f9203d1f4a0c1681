"""Inference and training speed of the online students (SPEC section 6), and their ONNX Runtime latency.

For SparseBEV-R50 (8 frames, 900 queries) and StreamPETR-R50 (644 + 256 queries), 6 x 256 x 704, batch 1, one
section per measurement (`<model>.<section>` in the JSON):
- eager_fp32, eager_bf16, graph_bf16: end-to-end online FPS on a stream where each step brings one new frame
  (6 images through the backbone, past-frame features from the cache for SparseBEV, the memory queue for
  StreamPETR), normalisation on the device included; graph_bf16 replays CUDA graphs (CUDA only);
- parity: the largest logit differences graph vs eager bf16 and eager bf16 vs fp32 on a stream from a fresh state;
- decoder_eager_bf16, decoder_graph_bf16 (SparseBEV): the same sample repeated, every frame cached, so only the
  decoder runs (the head's share of an end-to-end step);
- profile_bf16 (SparseBEV): `torch.profiler` over 5 eager bf16 steps: the 25 kernels with the most self time per
  step, the sum over all kernels and their count per step (CPU: operators);
- backbone_only_fp32, backbone_only_bf16: the backbone on the same 6 images (the ceiling of any end-to-end number);
- train_step_bf16: training step time (and peak memory on CUDA) at batch 1, bf16 autocast, AdamW, grad clip 35;
- onnx: export with `ftkd.deploy.export.export_model` (wall time, file size, opset), then the per-frame latency of
  the graph in ONNX Runtime (CUDAExecutionProvider if this onnxruntime has it, else CPUExecutionProvider), state
  carried frame to frame as `ftkd.deploy.runtime.OnnxStep` does;
- onnx_parity: ONNX Runtime vs the same export wrapper in PyTorch (`TorchStep`, fp32, TF32 off) on the torch device
  over 3 frames with carried state (largest score and box differences, `compare_detections`);
- after all of those, SparseBEV's opt-in inference options (`OnlineSparseBEV(weights_dtype=..., compile=...)`):
  graph_bf16_weights, graph_compile_bf16, graph_compile_bf16_weights, decoder_graph_compile_bf16_weights (each with
  `warmup_s`, the untimed warm-up that holds the compile) and parity_bf16_weights, parity_compile_bf16,
  parity_compile_bf16_weights (largest logit difference vs eager fp32); on the CPU they run without CUDA graphs.

Each section runs in its own try/except (a failure is recorded as {"error": "<type>: <message>"} and the next
section runs) and the JSON is rewritten atomically after every section, so a crash or a kill keeps what was
measured; a section still marked "running" is the one that was cut. Sections not started within --max-seconds are
recorded as skipped. The torch sections of every model run before the ONNX sections (the ONNX export is the slowest
and least important part). Weights are random (speed does not depend on them).

    python benchmarks/speed.py [--models sparsebev,streampetr] [--steps 200] [--out docs/results/speed.json]
    python benchmarks/speed.py --device cpu --steps 2 --sparsebev-config configs/sparsebev_tiny.yaml \\
        --streampetr-config configs/streampetr_tiny.yaml --out /tmp/speed.json      # CPU rehearsal
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
# compare_frame and NEEDS_CUDA are unused here: tests reach them as attributes of this script (speed.NEEDS_CUDA)
from speed_onnx import OnnxBench, compare_frame  # noqa: E402, F401
from speed_torch import NEEDS_CUDA, SparseBEVBench, StreamPETRBench, release_memory  # noqa: E402, F401


def git_commit() -> str:
    """HEAD's hash (+uncommitted if tracked files changed), or "unknown" outside a git checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return sha + ("+uncommitted" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model and its logical core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical cores)"
    except OSError:
        pass
    return f"{platform.machine()} CPU ({os.cpu_count()} logical cores)"


# -------------------------------------------------------------------------------------------- recording


class Recorder:
    """The results, rewritten atomically to `path` after every section; sections not started before `deadline`
    (time.monotonic seconds) are recorded as skipped."""

    def __init__(self, path: Path, results: dict, started: float, deadline: float, device: torch.device) -> None:
        self.path, self.results, self.started, self.deadline, self.device = path, results, started, deadline, device

    def write(self) -> None:
        self.results["elapsed_s"] = round(time.monotonic() - self.started, 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.results, indent=2))
        os.replace(tmp, self.path)

    def record(self, model: str, name: str, value: dict) -> None:
        self.results.setdefault(model, {})[name] = value
        self.write()

    def section(self, model: str, name: str, function: Callable[[], dict] | dict) -> None:
        """Run one section (or record a ready-made entry such as NEEDS_CUDA) and write the JSON."""
        if isinstance(function, dict):
            self.record(model, name, dict(function))
            return
        if time.monotonic() > self.deadline:
            self.record(model, name, {"skipped": f"time guard: --max-seconds reached before {name} started"})
            return
        self.record(model, name, {"running": "started; killed or crashed before it finished"})
        print(f"[{time.monotonic() - self.started:6.1f} s] {model}.{name} ...", flush=True)
        start = time.perf_counter()
        try:
            value = function()
        except Exception as error:  # one failing section (OOM, a capture error, an export error) must not stop the rest
            traceback.print_exc()
            value = {"error": f"{type(error).__name__}: {error}"[:2000]}
        value["section_s"] = round(time.perf_counter() - start, 2)
        self.record(model, name, value)
        release_memory(self.device)
        print(f"{'':10} {model}.{name}: {summary_text(value)}", flush=True)


# --------------------------------------------------------------------------------------------- printing

TABLE_MODES = ("eager_fp32", "eager_bf16", "graph_bf16", "decoder_eager_bf16", "decoder_graph_bf16",
               "backbone_only_fp32", "backbone_only_bf16", "train_step_bf16")

# SparseBEV's opt-in inference options (sections run after all the others)
OPTION_MODES = ("graph_bf16_weights", "graph_compile_bf16", "graph_compile_bf16_weights",
                "decoder_graph_compile_bf16_weights")  # fmt: skip
OPTION_PARITY = ("parity_bf16_weights", "parity_compile_bf16", "parity_compile_bf16_weights")


def row_text(entry: Any) -> str:
    """One table cell group for a section entry: numbers, or why there are none."""
    if not isinstance(entry, dict):
        return "not run"
    if isinstance(entry.get("median_ms"), (int, float)):
        extra = f"  peak {entry['peak_gib']:.1f} GiB" if isinstance(entry.get("peak_gib"), (int, float)) else ""
        return f"{entry['median_ms']:8.2f} {entry['fps']:8.1f}{extra}"
    for key in ("error", "skipped", "running"):
        if key in entry:
            return f"{key}: {str(entry[key])[:100]}"
    return "no numbers"


def summary_text(entry: dict) -> str:
    """One line on a finished section, for the progress log."""
    if isinstance(entry.get("latency"), dict):
        latency = row_text(entry["latency"])
        return f"{latency} ms/FPS with {entry.get('provider')}, export {entry.get('export_s', 0):.0f} s"
    text = row_text(entry)
    return text if text != "no numbers" else json.dumps(entry)[:300]


def print_table(results: dict, models: list[str]) -> None:
    print(f"device: {results.get('device')}  commit: {results.get('commit')}")
    print(f"{'model':<11} {'mode':<20} {'ms':>8} {'FPS':>8}")
    for name in models:
        entry = results.get(name, {})
        for mode in TABLE_MODES:
            print(f"{name:<11} {mode:<20} {row_text(entry.get(mode))}")
        parity = entry.get("parity", {})
        if "bf16_vs_fp32_max_abs_logit" in parity:
            graph = parity["graph_vs_eager_bf16_max_abs_logit"]
            graph = f"{graph:.3g}" if isinstance(graph, float) else graph
            print(f"{name:<11} {'parity':<20} |bf16-fp32| {parity['bf16_vs_fp32_max_abs_logit']:.3g}, "
                  f"|graph-eager| {graph} (max |logit| {parity['max_abs_logit_fp32']:.3g})")  # fmt: skip
        elif "parity" in entry:
            print(f"{name:<11} {'parity':<20} {row_text(parity)}")
        onnx = entry.get("onnx")
        if isinstance(onnx, dict) and "latency" in onnx:
            print(f"{name:<11} {'onnx':<20} {row_text(onnx['latency'])}  {onnx['provider']}, export "
                  f"{onnx['export_s']:.0f} s, {onnx['file_mb']:.0f} MB, opset {onnx['opset']}")  # fmt: skip
        elif onnx is not None:
            print(f"{name:<11} {'onnx':<20} {row_text(onnx)}")
        check = entry.get("onnx_parity")
        if isinstance(check, dict) and "max_score_diff" in check:
            box = "n/a" if check["max_box_diff"] is None else f"{check['max_box_diff']:.2g}"
            print(f"{name:<11} {'onnx_parity':<20} score {check['max_score_diff']:.2g}, box {box} "
                  f"({check['provider']} vs torch {check['torch_device']}, "
                  f"within tolerance: {check['within_tolerance']})")  # fmt: skip
        elif check is not None:
            print(f"{name:<11} {'onnx_parity':<20} {row_text(check)}")
        for mode in OPTION_MODES:
            if mode in entry:
                warmup = entry[mode].get("warmup_s")
                warmup_text = f"  warm-up {warmup:.1f} s" if isinstance(warmup, (int, float)) else ""
                print(f"{name:<11} {mode:<35} {row_text(entry[mode])}{warmup_text}")
        for mode in OPTION_PARITY:
            parity = entry.get(mode)
            if isinstance(parity, dict) and "vs_eager_fp32_max_abs_logit" in parity:
                print(f"{name:<11} {mode:<35} |option-fp32| {parity['vs_eager_fp32_max_abs_logit']:.3g}, |bf16-fp32| "
                      f"{parity['eager_bf16_vs_fp32_max_abs_logit']:.3g}")  # fmt: skip
            elif parity is not None:
                print(f"{name:<11} {mode:<35} {row_text(parity)}")


# ------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="sparsebev,streampetr", help="comma-separated: sparsebev, streampetr")
    parser.add_argument("--sparsebev-config", default="configs/sparsebev_r50.yaml")
    parser.add_argument("--streampetr-config", default="configs/streampetr_r50.yaml")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: a rehearsal of every path "
                        "except the CUDA-graph ones (use the tiny configs)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=200, help="timed calls per inference section")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls before each inference section")
    parser.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=None,
                        help="ONNX export, ONNX Runtime latency and parity (default: on if onnxruntime imports)")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend of the compiled "
                        "SparseBEV sections (aot_eager: a CPU rehearsal without a C++ compiler)")  # fmt: skip
    parser.add_argument("--max-seconds", type=float, default=420.0, help="sections not started by then are skipped")
    parser.add_argument("--out", default="docs/results/speed.json")
    parser.add_argument("--commit", default=None, help="commit to record where the tree has no .git (default: git)")
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - {"sparsebev", "streampetr"})
    if unknown:
        parser.error(f"--models: unknown {unknown}; expected sparsebev and/or streampetr")
    if args.steps < 1 or args.warmup < 1:
        parser.error(f"--steps and --warmup must be >= 1, got {args.steps} and {args.warmup}")
    return args


def onnxruntime_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmarks/speed.py: --device cuda but no CUDA device is available (use --device cpu)")
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    ort_version = onnxruntime_version()
    onnx = ort_version is not None if args.onnx is None else args.onnx
    results = {
        "device": device_name(device),
        "device_type": device.type,
        "commit": args.commit or git_commit(),
        "torch": torch.__version__,
        "onnxruntime": ort_version,
        "argv": sys.argv[1:] if argv is None else list(argv),
        "protocol": "batch 1, 6 cameras, one new frame per step (backbone on 6 images, normalisation on the device "
        "included), median of per-step wall times synchronised with the device, after warm-up; random weights; "
        "fp32 sections with TF32 allowed on CUDA",
        "steps": args.steps,
        "warmup": args.warmup,
        "max_seconds": args.max_seconds,
        "finished": False,
    }
    recorder = Recorder(Path(args.out), results, started, started + args.max_seconds, device)
    recorder.write()
    configs = {"sparsebev": args.sparsebev_config, "streampetr": args.streampetr_config}
    benches = {"sparsebev": SparseBEVBench, "streampetr": StreamPETRBench}
    for name in args.models:
        try:
            bench = benches[name](configs[name], device, args.steps, args.warmup)
        except Exception as error:  # e.g. a config that does not load: record it and go on with the next model
            traceback.print_exc()
            recorder.record(name, "setup", {"error": f"{type(error).__name__}: {error}"[:2000]})
            continue
        results.setdefault(name, {}).update(bench.info())
        for section, function in bench.sections():
            recorder.section(name, section, function)
        bench.release()
    with tempfile.TemporaryDirectory(prefix="ftkd_speed_") as workdir:
        for name in args.models:
            if not onnx:
                recorder.record(name, "onnx", {"skipped": "--no-onnx or onnxruntime does not import"})
                continue
            try:
                bench = OnnxBench(configs[name], device, args.steps, args.warmup, Path(workdir))
            except Exception as error:
                traceback.print_exc()
                recorder.record(name, "onnx", {"error": f"{type(error).__name__}: {error}"[:2000]})
                continue
            recorder.section(name, "onnx", bench.export)
            recorder.section(name, "onnx_parity", bench.parity)
            bench.release()
    for name in args.models:  # opt-in inference options last: a slow compile must not starve the sections above
        try:
            bench = benches[name](configs[name], device, args.steps, args.warmup)
        except Exception as error:
            traceback.print_exc()
            recorder.record(name, "options_setup", {"error": f"{type(error).__name__}: {error}"[:2000]})
            continue
        for section, function in bench.option_sections(args.compile_backend):
            recorder.section(name, section, function)
        bench.release()
    results["finished"] = True
    recorder.write()
    print_table(results, args.models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
