"""A tiny hand-built nuScenes-format dataset for the data-layer tests (seconds to write, fully controlled).

Three scenes of 4, 3 and 2 keyframes at 2 Hz; each camera has 5 sweeps between keyframes plus 2 sweeps before the
first and after the last keyframe (as in nuScenes); the ego drives and turns; cameras fire 5-30 ms after the lidar.
Annotations cover the cases the loader must handle: moving and static objects, an instance seen once (NaN
velocity), a zero-point box, a non-detection category and a box far outside the point cloud range.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ftkd.data.synth.rig import NUSCENES_CAMERAS, NUSCENES_LIDAR

VERSION = "v1.0-fake"
STORED_SIZE = (128, 72)  # (width, height) of the stored JPEGs
SCENE_LENGTHS = (4, 3, 2)
SPLITS = {"fake_train": ["scene-a", "scene-b"], "fake_val": ["scene-c"], "fake_all": ["scene-a", "scene-b", "scene-c"]}
# The real nuScenes rig (log n015): channel -> (translation, rotation wxyz, (f, cx, cy) at 1600x900), and LIDAR_TOP.
CAMERAS = NUSCENES_CAMERAS
LIDAR = NUSCENES_LIDAR
CATEGORIES = ["vehicle.car", "human.pedestrian.adult", "movable_object.barrier", "animal", "vehicle.truck"]
SWEEP_US = 83_333  # 12 Hz camera sweeps
KEYFRAME_US = 6 * SWEEP_US  # 2 Hz keyframes (5 sweeps between)


def _yaw_quaternion(yaw: float) -> list[float]:
    return [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]


def _ego_pose(t: float, scene: int) -> tuple[list[float], list[float]]:
    """Ego drives at 6 m/s while turning at 0.15 rad/s (t in seconds from the scene start)."""
    yaw = 0.3 * scene + 0.15 * t
    return [300.0 + 100 * scene + 6.0 * t, 600.0 + 6.0 * t * np.sin(0.15 * t), 0.0], _yaw_quaternion(yaw)


def write_fake_nuscenes(root: Path) -> Path:
    """Write the dataset under `root` and return it."""
    rng = np.random.default_rng(0)
    tables: dict[str, list] = {name: [] for name in (
        "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
        "scene", "sample", "sample_data", "sample_annotation", "map")}
    for name in CATEGORIES:
        tables["category"].append({"token": f"cat-{name}", "name": name, "description": ""})
    tables["attribute"].append({"token": "attr-moving", "name": "vehicle.moving", "description": ""})
    for i, level in enumerate(("v0-40", "v40-60", "v60-80", "v80-100")):
        tables["visibility"].append({"token": str(i + 1), "level": level, "description": ""})
    width, height = STORED_SIZE
    for channel, (translation, rotation, (f, cx, cy)) in CAMERAS.items():
        s = width / 1600
        tables["sensor"].append({"token": f"sensor-{channel}", "channel": channel, "modality": "camera"})
        tables["calibrated_sensor"].append({
            "token": f"calib-{channel}", "sensor_token": f"sensor-{channel}", "translation": list(translation),
            "rotation": list(rotation), "camera_intrinsic": [[f * s, 0, cx * s], [0, f * s, cy * s], [0, 0, 1]]})
    tables["sensor"].append({"token": "sensor-LIDAR_TOP", "channel": "LIDAR_TOP", "modality": "lidar"})
    tables["calibrated_sensor"].append({"token": "calib-LIDAR_TOP", "sensor_token": "sensor-LIDAR_TOP",
                                        "translation": list(LIDAR[0]), "rotation": list(LIDAR[1]),
                                        "camera_intrinsic": []})
    tables["log"].append({"token": "log-0", "logfile": "fake", "vehicle": "fake", "date_captured": "2026-01-01",
                          "location": "singapore-onenorth"})
    tables["map"].append({"token": "map-0", "log_tokens": ["log-0"], "category": "semantic_prior",
                          "filename": "maps/fake.png"})
    (root / "maps").mkdir(parents=True)
    Image.new("L", (4, 4)).save(root / "maps" / "fake.png")

    def add_sd(token, sample_token, channel, timestamp, key, scene, prev, filename, size):
        translation, rotation = _ego_pose((timestamp - scene_start_us) * 1e-6, scene)
        tables["ego_pose"].append({"token": f"ego-{token}", "translation": translation, "rotation": rotation,
                                   "timestamp": timestamp})
        tables["sample_data"].append({
            "token": token, "sample_token": sample_token, "ego_pose_token": f"ego-{token}",
            "calibrated_sensor_token": f"calib-{channel}", "filename": filename,
            "fileformat": "jpg" if channel != "LIDAR_TOP" else "pcd", "width": size[0], "height": size[1],
            "timestamp": timestamp, "is_key_frame": key, "prev": prev, "next": ""})
        if prev:
            next(r for r in reversed(tables["sample_data"]) if r["token"] == prev)["next"] = token

    for scene, num_samples in enumerate(SCENE_LENGTHS):
        scene_start_us = 1_600_000_000_000_000 + scene * 100_000_000
        sample_tokens = [f"s{scene}-{k}" for k in range(num_samples)]
        tables["scene"].append({"token": f"scene-{scene}", "name": f"scene-{'abc'[scene]}", "description": "",
                                "log_token": "log-0", "nbr_samples": num_samples,
                                "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1]})
        for k, token in enumerate(sample_tokens):
            tables["sample"].append({"token": token, "timestamp": scene_start_us + k * KEYFRAME_US,
                                     "scene_token": f"scene-{scene}", "prev": sample_tokens[k - 1] if k else "",
                                     "next": sample_tokens[k + 1] if k + 1 < num_samples else ""})
            lidar_ts = scene_start_us + k * KEYFRAME_US
            add_sd(f"sd-{token}-LIDAR_TOP", token, "LIDAR_TOP", lidar_ts, True, scene,
                   f"sd-{sample_tokens[k - 1]}-LIDAR_TOP" if k else "", f"samples/LIDAR_TOP/{token}.pcd.bin", (0, 0))
        for n, channel in enumerate(CAMERAS):
            prev = ""
            trigger = 5_000 + 5_000 * n
            steps = range(-2, 6 * (num_samples - 1) + 3)  # 2 sweeps before the first and after the last keyframe
            for step in steps:
                key = step % 6 == 0 and 0 <= step // 6 < num_samples
                k = min(max((step + 5) // 6, 0), num_samples - 1)  # sweeps belong to the next keyframe's sample
                timestamp = scene_start_us + step * SWEEP_US + trigger
                folder = "samples" if key else "sweeps"
                filename = f"{folder}/{channel}/fake__{channel}__{timestamp}.jpg"
                pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
                (root / folder / channel).mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(root / filename, quality=90)
                token = f"sd-{sample_tokens[k]}-{channel}" if key else f"sd-{scene}-{channel}-{step}"
                add_sd(token, sample_tokens[k], channel, timestamp, key, scene, prev, filename, STORED_SIZE)
                prev = token

        # instances: (category, per-keyframe global centre function, size, lidar points, keyframes)
        ego0 = np.array(_ego_pose(0.0, scene)[0])
        instances = [
            ("vehicle.car", lambda t: ego0 + [12 + 8 * t, 2.0, 0.8], [1.9, 4.5, 1.6], 20, range(num_samples)),
            ("human.pedestrian.adult", lambda t: ego0 + [-6, -4 + 1.2 * t, 0.9], [0.6, 0.7, 1.8], 5, range(num_samples)),
            ("movable_object.barrier", lambda t: ego0 + [3.0, 7.0, 0.5], [2.0, 0.5, 1.0], 3, range(num_samples)),
            ("vehicle.truck", lambda t: ego0 + [20.0, -10.0, 1.5], [2.5, 8.0, 3.0], 9, range(1)),  # seen once
            ("vehicle.car", lambda t: ego0 + [-15.0, 9.0, 0.8], [1.8, 4.2, 1.5], 0, range(num_samples)),  # 0 points
            ("animal", lambda t: ego0 + [5.0, -3.0, 0.3], [0.3, 0.8, 0.5], 4, range(num_samples)),  # not a class
            ("vehicle.car", lambda t: ego0 + [80.0, 0.0, 0.8], [1.9, 4.5, 1.6], 7, range(num_samples)),  # out of range
        ]
        for i, (category, centre, size, points, keyframes) in enumerate(instances):
            ann_tokens = [f"ann-{scene}-{i}-{k}" for k in keyframes]
            tables["instance"].append({"token": f"inst-{scene}-{i}", "category_token": f"cat-{category}",
                                       "nbr_annotations": len(ann_tokens), "first_annotation_token": ann_tokens[0],
                                       "last_annotation_token": ann_tokens[-1]})
            for j, k in enumerate(keyframes):
                t = k * KEYFRAME_US * 1e-6
                tables["sample_annotation"].append({
                    "token": ann_tokens[j], "sample_token": sample_tokens[k], "instance_token": f"inst-{scene}-{i}",
                    "visibility_token": str(1 + (i + k) % 4), "attribute_tokens": [],
                    "translation": [float(v) for v in centre(t)], "size": size,
                    "rotation": _yaw_quaternion(0.4 * i + 0.1 * k), "num_lidar_pts": points, "num_radar_pts": 0,
                    "prev": ann_tokens[j - 1] if j else "",
                    "next": ann_tokens[j + 1] if j + 1 < len(ann_tokens) else ""})
    (root / VERSION).mkdir(parents=True)
    for name, records in tables.items():
        (root / VERSION / f"{name}.json").write_text(json.dumps(records))
    (root / VERSION / "splits.json").write_text(json.dumps(SPLITS))
    return root
