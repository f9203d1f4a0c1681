"""Writing the nuScenes v1.0 tables: tokens, the fixed tables, the map PNG, splits.json and the atomic move.

Tokens are 32 hex digits derived from (seed, table, key) with MD5, so they are stable across runs and worker
counts. Table files are JSON lists as nuScenes ships them (`<dataroot>/<version>/<table>.json`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from ftkd.data.synth.city import City
from ftkd.data.synth.rig import Sensor
from ftkd.data.synth.shapes import CATEGORY

TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
          "scene", "sample", "sample_data", "sample_annotation", "map")
ATTRIBUTES = {
    "vehicle.moving": "Vehicle is moving.",
    "vehicle.stopped": "Vehicle, with a driver/rider in/on it, is currently stationary but has an intent to move.",
    "vehicle.parked": "Vehicle is stationary (usually for longer duration) with no immediate intent to move.",
    "cycle.with_rider": "There is a rider on the bicycle or motorcycle.",
    "cycle.without_rider": "There is NO rider on the bicycle or motorcycle.",
    "pedestrian.sitting_lying_down": "The human is sitting or lying down.",
    "pedestrian.standing": "The human is standing.",
    "pedestrian.moving": "The human is moving.",
}
VISIBILITY_LEVELS = {"1": "v0-40", "2": "v40-60", "3": "v60-80", "4": "v80-100"}


def token(seed: int, table: str, *key: object) -> str:
    """A stable 32-hex-digit token for a record of `table` identified by `key`."""
    text = "/".join(str(part) for part in (seed, table, *key))
    return hashlib.md5(text.encode()).hexdigest()


def visibility_token(fraction: float) -> str:
    """nuScenes visibility bin ('1'..'4') of the visible fraction of an object's pixels over all cameras."""
    return "1" if fraction < 0.4 else "2" if fraction < 0.6 else "3" if fraction < 0.8 else "4"


def fixed_tables(seed: int, rig: dict[str, Sensor]) -> dict[str, list[dict]]:
    """category, attribute, visibility, sensor and calibrated_sensor (one rig shared by every log)."""
    category = [
        {"token": token(seed, "category", name), "name": name, "description": f"nuScenes category {name} ({cls})"}
        for cls, name in CATEGORY.items()
    ]
    attribute = [{"token": token(seed, "attribute", name), "name": name, "description": text}
                 for name, text in ATTRIBUTES.items()]
    visibility = [{"token": tok, "level": level, "description": f"visibility of whole object is {level[1:]} %"}
                  for tok, level in VISIBILITY_LEVELS.items()]
    sensor, calibrated = [], []
    for channel, item in rig.items():
        sensor.append({"token": token(seed, "sensor", channel), "channel": channel, "modality": item.modality})
        calibrated.append({
            "token": token(seed, "calibrated_sensor", channel),
            "sensor_token": token(seed, "sensor", channel),
            "translation": list(item.translation),
            "rotation": list(item.rotation),
            "camera_intrinsic": item.intrinsic.tolist() if item.intrinsic is not None else [],
        })
    return {"category": category, "attribute": attribute, "visibility": visibility, "sensor": sensor,
            "calibrated_sensor": calibrated}


def write_map(root: Path, seed: int, city: City, log_tokens: list[str]) -> dict:
    """Write the city's semantic prior (0.1 m/px, as nuScenes' MapMask expects) and return the map record."""
    map_token = token(seed, "map", "city")
    filename = f"maps/{map_token}.png"
    (root / "maps").mkdir(parents=True, exist_ok=True)
    Image.fromarray(city.map_mask(0.1)).save(root / filename, compress_level=1)
    return {"token": map_token, "log_tokens": log_tokens, "category": "semantic_prior", "filename": filename}


def write_tables(root: Path, version: str, tables: dict[str, list[dict]], splits: dict[str, list[str]]) -> None:
    """Write the 13 JSON tables and splits.json under `<root>/<version>/`."""
    missing = [t for t in TABLES if t not in tables]
    if missing:
        raise ValueError(f"cannot write {root / version}: tables {missing} are missing")
    folder = root / version
    folder.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        with open(folder / f"{name}.json", "w") as f:
            json.dump(tables[name], f, indent=0, separators=(",", ":"))
    with open(folder / "splits.json", "w") as f:
        json.dump(splits, f, indent=1)


def save_jpeg(path: Path, image: np.ndarray, quality: int) -> None:
    Image.fromarray(image).save(path, quality=quality)


def temporary_dir(out: Path) -> Path:
    """`<out>.tmp-<pid>`: a sibling folder the dataset is written to before it is moved into place."""
    return out.parent / f"{out.name}.tmp-{os.getpid()}"


def publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Move the finished dataset from `tmp` to `out` (replacing an existing `out` only if `overwrite`)."""
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
        old = out.parent / f"{out.name}.old-{os.getpid()}"
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)
