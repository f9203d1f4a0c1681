"""Generate a whole synthetic dataset: scene parts (one per camera, then the lidar) in parallel processes, tables,
map, splits, stats, atomic move."""

from __future__ import annotations

import json
import logging
import multiprocessing
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from ftkd.constants import CAMERA_NAMES, LIDAR_NAME
from ftkd.data.synth.city import City, build_city
from ftkd.data.synth.config import TRAIN_SPLIT, VAL_SPLIT, VERSION, SynthConfig
from ftkd.data.synth.rig import Sensor, build_rig
from ftkd.data.synth.sequence import SCENE_PARTS, SceneSetup, ScenePart, finish_scene, prepare_scene, record_part
from ftkd.data.synth.stats import dataset_stats
from ftkd.data.synth.writer import fixed_tables, publish, temporary_dir, write_map, write_tables
from ftkd.utils.configuration import to_dict

logger = logging.getLogger(__name__)

CITY_EXTENT = 1000.0  # metres

_worker_state: dict = {}


def _init_worker(config: SynthConfig, root: Path) -> None:
    _worker_state["city"] = build_city(config.seed, CITY_EXTENT, config.occlusion)
    _worker_state["rig"] = build_rig(config.image_width, config.image_height)
    _worker_state["config"], _worker_state["root"] = config, root
    _worker_state["setup"] = None


def _scene_setup(index: int) -> SceneSetup:
    """Scene `index`'s setup, kept for the worker's next task: that often is another part of the same scene."""
    state = _worker_state
    if state["setup"] is None or state["setup"].index != index:
        state["setup"] = prepare_scene(state["city"], state["config"], index)
    return state["setup"]


def _run_part(task: tuple[int, str]) -> ScenePart:
    index, part = task
    return record_part(_scene_setup(index), part, _worker_state["rig"], _worker_state["root"])


def _finish_scenes(parts: Iterator[ScenePart], scenes: int, start: float) -> list[dict[str, list]]:
    """Each scene's table rows, assembled as soon as its parts (SCENE_PARTS, scene after scene) are in."""
    results = []
    for index in range(scenes):
        results.append(finish_scene([next(parts) for _ in SCENE_PARTS]))
        logger.info("scene %d/%d done (%.1f s)", index + 1, scenes, time.perf_counter() - start)
    return results


def generate(config: SynthConfig, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write the dataset described by `config` to `out_dir` and return that dataroot.

    The dataset is written to `<out_dir>.tmp-<pid>` and moved into place only when complete, so an interrupted
    run never leaves a half dataset at `out_dir`. An existing `out_dir` is replaced only if `overwrite`.
    """
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    tmp = temporary_dir(out)
    if tmp.exists():
        shutil.rmtree(tmp)
    start = time.perf_counter()
    try:
        tmp.mkdir(parents=True)
        for channel in (*CAMERA_NAMES, LIDAR_NAME):
            (tmp / "samples" / channel).mkdir(parents=True)
        for channel in CAMERA_NAMES:
            (tmp / "sweeps" / channel).mkdir(parents=True)
        # Parts of a scene are independent tasks, so the work of few scenes spreads over many workers.
        tasks = [(index, part) for index in range(config.scenes) for part in SCENE_PARTS]
        if config.workers > 1:
            context = multiprocessing.get_context("fork")  # workers inherit the imported modules (Linux)
            with context.Pool(config.workers, initializer=_init_worker, initargs=(config, tmp)) as pool:
                results = _finish_scenes(pool.imap(_run_part, tasks), config.scenes, start)
        else:
            _init_worker(config, tmp)
            results = _finish_scenes(map(_run_part, tasks), config.scenes, start)
        city: City = build_city(config.seed, CITY_EXTENT, config.occlusion)
        rig: dict[str, Sensor] = build_rig(config.image_width, config.image_height)
        tables = fixed_tables(config.seed, rig)
        for name in ("log", "scene", "sample", "sample_data", "ego_pose", "instance", "sample_annotation"):
            tables[name] = [row for result in results for row in result[name]]
        tables["map"] = [write_map(tmp, config.seed, city, [log["token"] for log in tables["log"]])]
        names = [scene["name"] for scene in tables["scene"]]
        num_train = config.scenes - config.val_scenes
        splits = {TRAIN_SPLIT: names[:num_train], VAL_SPLIT: names[num_train:]}
        write_tables(tmp, VERSION, tables, splits)
        seconds = time.perf_counter() - start
        scene_info = [info for result in results for info in result["_scene_info"]]
        stats = dataset_stats(tables, scene_info, splits)
        stats["generation"] = {"seconds": round(seconds, 2), "workers": config.workers,
                               "images": sum(info["images"] for info in scene_info),
                               "keyframes": len(tables["sample"]),
                               "image_size": [config.image_width, config.image_height]}
        stats["generation"]["images_per_second"] = round(stats["generation"]["images"] / seconds, 1)
        (tmp / "synth_config.json").write_text(json.dumps(to_dict(config), indent=2))
        (tmp / "synth_stats.json").write_text(json.dumps(stats, indent=2))
        publish(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
