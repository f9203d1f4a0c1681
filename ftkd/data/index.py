"""A compact per-scene index of a nuScenes-format dataset, parsed once with the devkit and cached.

The devkit's `NuScenes` object keeps every table as lists of dicts (gigabytes for v1.0-trainval, slow to build,
costly to copy into loader workers). This module walks it once and keeps only what the temporal loader needs, as
numpy arrays: keyframes (samples) in scene order, each camera's sample_data chain (sweeps and keyframes, 12 Hz)
with ego poses and calibrations, and the detection annotations of every keyframe with the official GT velocity
(`nusc.box_velocity`, global frame), so our training targets match what the official metric scores.

The index is pickled under `cache_dir`, keyed by dataroot, version and the tables' sizes and mtimes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ftkd.constants import CAMERA_NAMES, CLASS_NAMES, LIDAR_NAME
from ftkd.data.geometry import pose_matrix

logger = logging.getLogger(__name__)

# The 13 tables `NuScenes()` reads; all are mandatory.
TABLE_NAMES: tuple[str, ...] = (
    "category",
    "attribute",
    "visibility",
    "instance",
    "sensor",
    "calibrated_sensor",
    "ego_pose",
    "log",
    "scene",
    "sample",
    "sample_data",
    "sample_annotation",
    "map",
)
VISIBILITY_LEVELS: tuple[str, ...] = ("v0-40", "v40-60", "v60-80", "v80-100")  # stored as 1..4 (0 = unknown)
INDEX_FORMAT = 2  # bump when the index layout changes: invalidates old caches


class DataError(ValueError):
    """A dataset that does not fit the nuScenes format (the message names the file/record and what was expected)."""


@dataclass
class CameraChain:
    """One camera's sample_data chain inside one scene (prev/next order, sweeps and keyframes), S entries."""

    timestamps: np.ndarray  # [S] int64 microseconds
    ego_poses: np.ndarray  # [S, 7] float64 ego -> global at that image's timestamp: translation xyz, quaternion wxyz
    calibration: np.ndarray  # [S] int32 index into camera_to_ego / intrinsics
    camera_to_ego: np.ndarray  # [U, 4, 4] float64 calibrated_sensor (sensor -> ego)
    intrinsics: np.ndarray  # [U, 3, 3] float64 camera matrix for the stored image size
    sizes: np.ndarray  # [S, 2] int32 stored image (width, height) in pixels
    filenames: np.ndarray  # [S] bytes, relative to the dataroot

    def __len__(self) -> int:
        return len(self.timestamps)


@dataclass
class SceneIndex:
    token: str
    name: str
    first_sample: int  # index of its first keyframe in DatasetIndex sample arrays
    num_samples: int
    cameras: list[CameraChain]  # in CAMERA_NAMES order


@dataclass
class DatasetIndex:
    """Keyframes (K) in scene order and their annotations (A, flat, sliced by `annotation_offsets`)."""

    dataroot: str
    version: str
    scenes: list[SceneIndex]
    sample_tokens: list[str]  # [K]
    sample_scene: np.ndarray  # [K] int32 index into scenes
    sample_timestamps: np.ndarray  # [K] int64 microseconds (the LIDAR_TOP keyframe's)
    sample_ego_poses: np.ndarray  # [K, 7] float64 ego -> global of the LIDAR_TOP keyframe sample_data
    sample_camera_positions: np.ndarray  # [K, N] int32 position of each camera's keyframe in its scene chain
    annotation_offsets: np.ndarray  # [K + 1] int64
    box_translations: np.ndarray  # [A, 3] float64 global gravity centre (metres)
    box_sizes: np.ndarray  # [A, 3] float64 w, l, h (metres)
    box_rotations: np.ndarray  # [A, 4] float64 global quaternion wxyz
    box_velocities: np.ndarray  # [A, 2] float64 global vx, vy (m/s) from nusc.box_velocity; NaN where undefined
    box_labels: np.ndarray  # [A] int64 index into CLASS_NAMES
    box_num_lidar_pts: np.ndarray  # [A] int32
    box_num_radar_pts: np.ndarray  # [A] int32
    box_visibility: np.ndarray  # [A] int8 1..4 = VISIBILITY_LEVELS, 0 = unknown
    box_instances: np.ndarray  # [A] bytes instance tokens (ASCII)

    def __len__(self) -> int:
        return len(self.sample_tokens)

    @property
    def scene_names(self) -> list[str]:
        return [scene.name for scene in self.scenes]

    def samples_of_scene(self, scene: int) -> range:
        record = self.scenes[scene]
        return range(record.first_sample, record.first_sample + record.num_samples)


def check_tables(dataroot: str | Path, version: str) -> Path:
    """Raise `DataError` naming the missing folder or table file; returns the table folder."""
    root = Path(dataroot)
    if not root.is_dir():
        raise DataError(f"dataroot {root} does not exist (expected a nuScenes-format root with a {version}/ folder)")
    table_root = root / version
    if not table_root.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("v1.0"))
        raise DataError(
            f"dataroot {root} has no version folder {version}/ (expected {table_root} with the nuScenes tables; "
            f"version folders found: {found or 'none'})"
        )
    missing = [f"{name}.json" for name in TABLE_NAMES if not (table_root / f"{name}.json").is_file()]
    if missing:
        raise DataError(f"{table_root}: missing table file(s) {missing}; nuScenes needs all of {list(TABLE_NAMES)}")
    return table_root


def _cache_path(dataroot: Path, version: str, cache_dir: str) -> Path:
    table_root = dataroot / version
    key = [str(INDEX_FORMAT), str(dataroot.resolve()), version]
    for name in TABLE_NAMES:
        stat = (table_root / f"{name}.json").stat()
        key.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
    digest = hashlib.sha1("|".join(key).encode()).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir else dataroot / ".ftkd_cache"
    return folder / f"index_{version}_{digest}.pkl"


def load_index(dataroot: str | Path, version: str, cache_dir: str = "") -> DatasetIndex:
    """The dataset index, from the cache if the tables did not change, else parsed with the devkit and cached.

    Args:
        dataroot: nuScenes-format root (holds `<version>/`, `samples/`, `sweeps/`).
        version: version folder, e.g. "v1.0-trainval", "v1.0-mini", "v1.0-synth".
        cache_dir: where to cache the index ("" = `<dataroot>/.ftkd_cache`); an unwritable folder only logs a warning.
    """
    root = Path(dataroot)
    check_tables(root, version)
    path = _cache_path(root, version, cache_dir)
    if path.is_file():
        with open(path, "rb") as f:
            index = pickle.load(f)
        index.dataroot = str(root)
        return index
    index = build_index(root, version)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            pickle.dump(index, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except OSError as err:
        logger.warning("could not cache the dataset index at %s (%s); it will be parsed again next time", path, err)
    return index


def _pose7(record: dict) -> list[float]:
    return list(record["translation"]) + list(record["rotation"])


def _camera_chain(nusc, scene_token: str, first_sd_token: str, channel: str) -> tuple[CameraChain, dict[str, int]]:
    """Walk one camera's prev/next chain inside a scene; returns it and {sample_data token: position}."""

    def in_scene(sd: dict) -> bool:
        return nusc.get("sample", sd["sample_token"])["scene_token"] == scene_token

    sd = nusc.get("sample_data", first_sd_token)
    while sd["prev"] and in_scene(nusc.get("sample_data", sd["prev"])):
        sd = nusc.get("sample_data", sd["prev"])
    records = [sd]
    while sd["next"]:
        sd = nusc.get("sample_data", sd["next"])
        if not in_scene(sd):
            break
        records.append(sd)
    calibration_tokens: dict[str, int] = {}
    calibration = np.zeros(len(records), dtype=np.int32)
    for i, record in enumerate(records):
        calibration[i] = calibration_tokens.setdefault(record["calibrated_sensor_token"], len(calibration_tokens))
    camera_to_ego, intrinsics = [], []
    for token in calibration_tokens:
        calib = nusc.get("calibrated_sensor", token)
        camera_matrix = np.asarray(calib["camera_intrinsic"], dtype=np.float64)
        if camera_matrix.shape != (3, 3):
            raise DataError(
                f"calibrated_sensor {token} ({channel}): expected a 3x3 camera_intrinsic, "
                f"got {calib['camera_intrinsic']!r}"
            )
        camera_to_ego.append(pose_matrix(calib["translation"], calib["rotation"]))
        intrinsics.append(camera_matrix)
    chain = CameraChain(
        timestamps=np.array([r["timestamp"] for r in records], dtype=np.int64),
        ego_poses=np.array([_pose7(nusc.get("ego_pose", r["ego_pose_token"])) for r in records], dtype=np.float64),
        calibration=calibration,
        camera_to_ego=np.stack(camera_to_ego),
        intrinsics=np.stack(intrinsics),
        sizes=np.array([[r["width"], r["height"]] for r in records], dtype=np.int32),
        filenames=np.array([r["filename"].encode() for r in records]),
    )
    return chain, {r["token"]: i for i, r in enumerate(records)}


def build_index(dataroot: str | Path, version: str) -> DatasetIndex:
    """Parse the devkit tables into a `DatasetIndex` (slow for v1.0-trainval: minutes; use `load_index`)."""
    from nuscenes.eval.detection.utils import category_to_detection_name
    from nuscenes.nuscenes import NuScenes

    table_root = check_tables(dataroot, version)
    try:
        nusc = NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    except Exception as err:  # the devkit raises bare KeyError/AssertionError/JSONDecodeError: add where
        message = f"nuscenes-devkit could not load the tables in {table_root}: {type(err).__name__}: {err}"
        raise DataError(message) from err
    class_index = {name: i for i, name in enumerate(CLASS_NAMES)}
    visibility_level = {r["token"]: r["level"] for r in nusc.visibility}

    scenes: list[SceneIndex] = []
    sample_tokens: list[str] = []
    sample_scene, sample_timestamps, sample_ego_poses, sample_camera_positions = [], [], [], []
    annotation_offsets = [0]
    boxes: dict[str, list] = {k: [] for k in ("t", "s", "r", "v", "label", "lidar", "radar", "vis", "inst")}
    for scene_id, scene in enumerate(nusc.scene):
        first = nusc.get("sample", scene["first_sample_token"])
        chains, positions = [], []
        for channel in CAMERA_NAMES:
            if channel not in first["data"]:
                raise DataError(
                    f"{table_root}/sample_data.json: sample {first['token']} of scene {scene['name']} has no "
                    f"{channel} keyframe (expected all of {list(CAMERA_NAMES)})"
                )
            chain, position = _camera_chain(nusc, scene["token"], first["data"][channel], channel)
            chains.append(chain)
            positions.append(position)
        record = SceneIndex(scene["token"], scene["name"], len(sample_tokens), 0, chains)
        token = scene["first_sample_token"]
        while token:
            sample = nusc.get("sample", token)
            missing = [c for c in (*CAMERA_NAMES, LIDAR_NAME) if c not in sample["data"]]
            if missing:
                raise DataError(f"{table_root}/sample_data.json: sample {token} has no keyframe for {missing}")
            lidar = nusc.get("sample_data", sample["data"][LIDAR_NAME])
            sample_tokens.append(token)
            sample_scene.append(scene_id)
            sample_timestamps.append(sample["timestamp"])
            sample_ego_poses.append(_pose7(nusc.get("ego_pose", lidar["ego_pose_token"])))
            sample_camera_positions.append([positions[n][sample["data"][c]] for n, c in enumerate(CAMERA_NAMES)])
            for ann_token in sample["anns"]:
                ann = nusc.get("sample_annotation", ann_token)
                name = category_to_detection_name(ann["category_name"])
                if name is None:
                    continue
                level = visibility_level.get(ann["visibility_token"], "")
                boxes["t"].append(ann["translation"])
                boxes["s"].append(ann["size"])
                boxes["r"].append(ann["rotation"])
                boxes["v"].append(nusc.box_velocity(ann_token)[:2])
                boxes["label"].append(class_index[name])
                boxes["lidar"].append(ann["num_lidar_pts"])
                boxes["radar"].append(ann["num_radar_pts"])
                boxes["vis"].append(VISIBILITY_LEVELS.index(level) + 1 if level in VISIBILITY_LEVELS else 0)
                boxes["inst"].append(ann["instance_token"])
            annotation_offsets.append(len(boxes["t"]))
            record.num_samples += 1
            token = sample["next"]
        scenes.append(record)

    def array(key: str, dtype, width: int | None = None) -> np.ndarray:
        if not boxes[key] and width is not None:
            return np.zeros((0, width), dtype=dtype)
        return np.asarray(boxes[key], dtype=dtype)

    return DatasetIndex(
        dataroot=str(dataroot),
        version=version,
        scenes=scenes,
        sample_tokens=sample_tokens,
        sample_scene=np.asarray(sample_scene, dtype=np.int32),
        sample_timestamps=np.asarray(sample_timestamps, dtype=np.int64),
        sample_ego_poses=np.asarray(sample_ego_poses, dtype=np.float64).reshape(-1, 7),
        sample_camera_positions=np.asarray(sample_camera_positions, dtype=np.int32).reshape(-1, len(CAMERA_NAMES)),
        annotation_offsets=np.asarray(annotation_offsets, dtype=np.int64),
        box_translations=array("t", np.float64, 3),
        box_sizes=array("s", np.float64, 3),
        box_rotations=array("r", np.float64, 4),
        box_velocities=array("v", np.float64, 2),
        box_labels=array("label", np.int64),
        box_num_lidar_pts=array("lidar", np.int32),
        box_num_radar_pts=array("radar", np.int32),
        box_visibility=array("vis", np.int8),
        box_instances=np.asarray([token.encode() for token in boxes["inst"]], dtype=bytes),
    )
