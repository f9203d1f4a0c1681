"""Throughput of the synthetic world generator (images/s incl. sweeps, keyframes/s) and of the data loader on its
output (samples/s for an 8-frame student batch and a 15-frame teacher batch).

    python benchmarks/synth_speed.py                      # tiny preset, 1 worker and all cores
    python benchmarks/synth_speed.py --preset bench --scenes 16 --workers 16 --tag bench

Writes docs/results/synth_speed_<machine>.json with the device (CPU model and core count) and the git commit.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import re
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from ftkd.data.synth import TRAIN_SPLIT, VERSION, SynthConfig, generate


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def generation_speed(config: SynthConfig, workers: int, work_dir: Path) -> tuple[dict, Path]:
    config = dataclasses.replace(config, workers=workers)
    out = work_dir / f"gen_{workers}"
    load_before = os.getloadavg()[0]
    cpu_before = _cpu_seconds()
    start = time.perf_counter()
    root = generate(config, out)
    seconds = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu_before
    stats = json.loads((root / "synth_stats.json").read_text())
    images, keyframes = stats["generation"]["images"], stats["keyframes"]
    return {"workers": workers, "scenes": config.scenes, "samples_per_scene": config.samples_per_scene,
            "image_size": [config.image_width, config.image_height], "seconds": round(seconds, 2),
            "images": images, "images_per_second": round(images / seconds, 1),
            "keyframes_per_second": round(keyframes / seconds, 2),
            # CPU time (all processes) per camera image, lidar and tables included: what the machine's other
            # load cannot inflate as much as wall time
            "cpu_ms_per_image": round(1000 * cpu / images, 1),
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}, root


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def loader_speed(root: Path, batches: int, batch_size: int, num_workers: int) -> dict:
    """samples/s of the training loader: student (current + 7 past frames) and teacher (+ 7 future frames)."""
    from ftkd.data.config import DataConfig
    from ftkd.data.loader import build_dataloader

    results = {}
    for name, future in (("student_8_frames", 0), ("teacher_15_frames", 7)):
        config = DataConfig(dataroot=str(root), version=VERSION, train_split=TRAIN_SPLIT, num_past_frames=7,
                            num_future_frames=future, batch_size=batch_size, num_workers=num_workers,
                            cache_dir=str(root / ".ftkd_cache"))
        loader = build_dataloader(config, TRAIN_SPLIT, train=True, seed=0)
        iterator = iter(loader)
        next(iterator)  # warm up: workers start, index is built
        start, samples = time.perf_counter(), 0
        for _ in range(batches):
            try:
                batch = next(iterator)
            except StopIteration:
                iterator = iter(loader)
                batch = next(iterator)
            samples += batch.images.shape[0]
        seconds = time.perf_counter() - start
        results[name] = {"samples_per_second": round(samples / seconds, 2), "batch_size": batch_size,
                         "num_workers": num_workers, "batches": batches,
                         "image_size": list(batch.images.shape[-2:])}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=["tiny", "bench"])
    parser.add_argument("--scenes", type=int, help="override the preset's scene count")
    parser.add_argument("--samples-per-scene", type=int)
    parser.add_argument("--workers", type=int, nargs="+", help="worker counts to time (default: 1 and all cores)")
    parser.add_argument("--loader-batches", type=int, default=10, help="batches timed per loader (0: skip)")
    parser.add_argument("--loader-batch-size", type=int, default=2)
    parser.add_argument("--loader-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out-dir", default=str(Path(__file__).resolve().parent.parent / "docs" / "results"))
    parser.add_argument("--tag", default="", help="suffix of the result file name (e.g. the preset)")
    args = parser.parse_args()

    config = SynthConfig.preset(args.preset)
    if args.scenes:
        config = dataclasses.replace(config, scenes=args.scenes, val_scenes=min(config.val_scenes, args.scenes // 4))
    if args.samples_per_scene:
        config = dataclasses.replace(config, samples_per_scene=args.samples_per_scene)
    cores = os.cpu_count() or 1
    workers = args.workers or sorted({1, cores})
    device = f"{cpu_name()} ({cores} cores)"
    report = {"device": device, "commit": git_commit(), "preset": args.preset, "generation": []}
    with tempfile.TemporaryDirectory(prefix="synth_speed_") as tmp:
        root = None
        for count in workers:
            result, root = generation_speed(config, count, Path(tmp))
            report["generation"].append(result)
            width, height = result["image_size"]
            print(f"generation, {count} workers: {result['images_per_second']} images/s ({width}x{height}), "
                  f"{result['keyframes_per_second']} keyframes/s, {result['cpu_ms_per_image']} ms CPU per image")
        if args.loader_batches > 0 and importlib.util.find_spec("ftkd.data.loader") is not None:
            report["loader"] = loader_speed(root, args.loader_batches, args.loader_batch_size, args.loader_workers)
            for name, result in report["loader"].items():
                print(f"loader {name}: {result['samples_per_second']} samples/s")
    machine = re.sub(r"[^a-z0-9]+", "-", f"{cpu_name()}-{cores}c".lower()).strip("-")
    out = Path(args.out_dir) / f"synth_speed_{machine}{'_' + args.tag if args.tag else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
