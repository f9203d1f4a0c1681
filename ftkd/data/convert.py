"""`ftkd convert`: custom driving logs (one JSON/YAML file per log) -> a nuScenes v1.0 dataset.

A log file describes one drive (see docs/custom_data.md): cameras (intrinsics, camera -> ego extrinsics), frames
of timestamped images (keyframes become samples, the other frames camera sweeps), timestamped ego -> global poses
(interpolated to every image's timestamp) and optional 3D box tracks (global or ego frame, interpolated to every
keyframe). Every log becomes one nuScenes log + scene, written with the synthetic world's table writer, so all
other commands read it unchanged. Timestamps are microseconds unless the file says `time_unit: s` (or `ms`).

Validation collects every problem of a file before anything is written; each message names the file, the record
(`frames[12].images.CAM_FRONT`, `tracks[3].boxes[0]`) and the field, and says what was expected.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from scipy.spatial.transform import Rotation, Slerp

from ftkd.constants import CAMERA_NAMES, CLASS_NAMES, LIDAR_NAME
from ftkd.data.synth.shapes import CATEGORY
from ftkd.data.synth.writer import (ATTRIBUTES, fixed_tables, publish, temporary_dir, token, visibility_token,
                                    write_tables)

logger = logging.getLogger(__name__)

TOKEN_SEED = 0  # tokens are MD5 digests of (seed, table, log name, key): stable across runs
TIME_UNITS = {"us": 1, "ms": 1_000, "s": 1_000_000}  # microseconds per unit
TIME_TOLERANCE = 10_000  # us: a keyframe this close to a track's first/last box still gets its box
MAX_BOX_GAP = 1_000_000  # us: boxes further apart than this are not interpolated between (the object was lost)
DEFAULT_LIDAR_POINTS = 1  # no lidar: every annotated box counts for the metric (see docs/custom_data.md)
MAX_ERRORS = 30  # problems listed per file
IMAGE_FORMATS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png"}
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # log names become file names and scene names
# The 23 nuScenes object categories a track's `class` may name; a detection class name (`car`, `bus`, ...) is
# stored as the category the synthetic world uses for it (`CATEGORY`: vehicle.car, vehicle.bus.rigid, ...).
NUSCENES_CATEGORIES: tuple[str, ...] = (
    "animal", "human.pedestrian.adult", "human.pedestrian.child", "human.pedestrian.construction_worker",
    "human.pedestrian.personal_mobility", "human.pedestrian.police_officer", "human.pedestrian.stroller",
    "human.pedestrian.wheelchair", "movable_object.barrier", "movable_object.debris",
    "movable_object.pushable_pullable", "movable_object.trafficcone", "static_object.bicycle_rack", "vehicle.bicycle",
    "vehicle.bus.bendy", "vehicle.bus.rigid", "vehicle.car", "vehicle.construction", "vehicle.emergency.ambulance",
    "vehicle.emergency.police", "vehicle.motorcycle", "vehicle.trailer", "vehicle.truck",
)
# Attribute families a detection class may carry (nuScenes annotation rules); barrier and cone carry none.
ATTRIBUTE_FAMILY = {**{c: "vehicle." for c in ("car", "truck", "construction_vehicle", "bus", "trailer")},
                    "motorcycle": "cycle.", "bicycle": "cycle.", "pedestrian": "pedestrian."}
KEYS = {
    "log": {"log", "location", "vehicle", "split", "time_unit", "cameras", "lidar_to_ego", "frames", "ego_poses",
            "tracks", "box_frame"},
    "camera": {"intrinsic", "width", "height", "sensor_to_ego"},
    "frame": {"timestamp", "keyframe", "images"},
    "image": {"file", "timestamp"},
    "ego_pose": {"timestamp", "translation", "rotation", "matrix"},
    "track": {"id", "class", "attribute", "boxes"},
    "box": {"timestamp", "center", "size", "yaw", "rotation", "attribute", "visibility", "num_lidar_pts"},
}


class ConvertError(ValueError):
    """Invalid custom log files; the message lists every problem found (file: record.field: what was expected)."""


@dataclass
class Camera:
    intrinsic: np.ndarray  # [3, 3] pixels, for the stored image size
    width: int
    height: int
    sensor_to_ego: np.ndarray  # [4, 4] camera (x right, y down, z forward) -> ego


@dataclass
class Frame:
    timestamp: int  # us; for a keyframe also the sample's and the LIDAR_TOP keyframe's timestamp
    keyframe: bool
    images: dict[str, tuple[Path, int]]  # channel -> (absolute source path, timestamp us)


@dataclass
class TrackBox:
    timestamp: int  # us
    center: np.ndarray  # [3] global gravity centre, metres
    size: np.ndarray  # [3] w, l, h metres
    rotation: np.ndarray  # [4] global [w, x, y, z]
    attribute: str
    visibility: float | None  # visible fraction 0..1, None = unknown
    num_lidar_pts: int


@dataclass
class Track:
    id: str
    category: str  # nuScenes category name
    boxes: list[TrackBox]


@dataclass
class LogSpec:
    """One validated log file."""

    path: Path
    name: str
    location: str
    vehicle: str
    split: str
    cameras: dict[str, Camera]
    lidar_to_ego: np.ndarray  # [4, 4]
    frames: list[Frame]
    pose_times: np.ndarray  # [P] int64 us, increasing
    pose_matrices: np.ndarray  # [P, 4, 4] ego -> global
    tracks: list[Track] = field(default_factory=list)

    def ego_pose(self, timestamp: int) -> np.ndarray:
        """[4, 4] ego -> global at `timestamp` (us)."""
        return interpolate_pose(self.pose_times, self.pose_matrices, timestamp)


def interpolate_pose(times: np.ndarray, poses: np.ndarray, t: int) -> np.ndarray:
    """[4, 4] rigid transform at time t from poses [P, 4, 4] at increasing times [P]: translation linear, rotation
    slerp between the two poses around t (the first/last pose outside their span)."""
    i = int(np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 1))
    j = min(i + 1, len(times) - 1)
    a, b, ta, tb = poses[i], poses[j], times[i], times[j]
    if tb == ta or t <= ta:
        return a.copy()
    if t >= tb:
        return b.copy()
    w = (t - ta) / (tb - ta)
    pose = np.eye(4)
    pose[:3, :3] = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([a[:3, :3], b[:3, :3]])))(w).as_matrix()
    pose[:3, 3] = (1 - w) * a[:3, 3] + w * b[:3, 3]
    return pose


def _quaternion(matrix: np.ndarray) -> list[float]:
    """[3, 3] rotation -> [w, x, y, z] with w >= 0."""
    x, y, z, w = Rotation.from_matrix(matrix).as_quat()
    sign = -1.0 if w < 0 else 1.0
    return [float(sign * w), float(sign * x), float(sign * y), float(sign * z)]


def _pose_record(pose: np.ndarray) -> dict:
    return {"translation": [float(v) for v in pose[:3, 3]], "rotation": _quaternion(pose[:3, :3])}


class _Reader:
    """Reads one log file's values, collecting problems as 'file: record.field: message'."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.errors: list[str] = []

    def error(self, where: str, message: str) -> None:
        self.errors.append(f"{self.path}: {where}: {message}")

    def mapping(self, value: object, where: str, kind: str) -> dict | None:
        if not isinstance(value, dict):
            self.error(where, f"expected a mapping with keys {sorted(KEYS[kind])}, got {type(value).__name__}")
            return None
        unknown = sorted(set(value) - KEYS[kind])
        if unknown:
            self.error(where, f"unknown key(s) {unknown}; expected some of {sorted(KEYS[kind])}")
        return value

    def numbers(self, value: object, shape: tuple[int, ...], where: str) -> np.ndarray | None:
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            array = None
        if array is None or array.shape != shape or not np.isfinite(array).all():
            self.error(where, f"expected finite numbers of shape {list(shape)}, got {value!r}")
            return None
        return array

    def timestamp(self, value: object, unit: int, where: str) -> int | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
            self.error(where, f"expected a timestamp (a non-negative number in the file's time_unit), got {value!r}")
            return None
        return int(round(value * unit))

    def rotation(self, value: object, where: str) -> np.ndarray | None:
        """A unit [w, x, y, z] quaternion -> [3, 3]."""
        q = self.numbers(value, (4,), where)
        if q is None:
            return None
        if abs(np.linalg.norm(q) - 1.0) > 1e-3:
            self.error(where, f"quaternion {q.tolist()} has norm {np.linalg.norm(q):.4f}; expected a unit "
                              f"quaternion [w, x, y, z]")
            return None
        return Rotation.from_quat(q[[1, 2, 3, 0]]).as_matrix()

    def pose(self, value: object, where: str) -> np.ndarray | None:
        """{translation, rotation [w, x, y, z]} or a 4x4 matrix -> [4, 4] rigid transform."""
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"translation", "rotation"})
            if unknown or not {"translation", "rotation"} <= set(value):
                self.error(where, f"expected {{translation: [x, y, z], rotation: [w, x, y, z]}} or a 4x4 matrix, "
                                  f"got keys {sorted(value)}")
                return None
            translation = self.numbers(value["translation"], (3,), f"{where}.translation")
            rotation = self.rotation(value["rotation"], f"{where}.rotation")
            if translation is None or rotation is None:
                return None
            matrix = np.eye(4)
            matrix[:3, :3], matrix[:3, 3] = rotation, translation
            return matrix
        matrix = self.numbers(value, (4, 4), where)
        if matrix is None:
            return None
        rotation = matrix[:3, :3]
        if (not np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-3) or np.linalg.det(rotation) < 0
                or not np.allclose(matrix[3], [0, 0, 0, 1])):
            self.error(where, "expected a rigid 4x4 transform (orthonormal rotation with det +1, last row 0 0 0 1)")
            return None
        matrix[:3, :3] = Rotation.from_matrix(rotation).as_matrix()  # the nearest rotation (rounded input)
        return matrix


def _read_file(path: Path) -> object:
    text = path.read_text()
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ConvertError(f"{path}: not valid JSON: {err}") from err
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConvertError(f"{path}: not valid YAML: {err}") from err
    raise ConvertError(f"{path}: expected a .json, .yaml or .yml log file")


def _category(name: object) -> str | None:
    """The nuScenes category of a track's `class` (None if unknown)."""
    if not isinstance(name, str):
        return None
    if name in CATEGORY:
        return CATEGORY[name]
    return name if name in NUSCENES_CATEGORIES else None


def _detection_class(category: str) -> str | None:
    """The detection class of a nuScenes category (None: not part of the detection benchmark)."""
    for cls, name in CATEGORY.items():
        if name == category:
            return cls
    from nuscenes.eval.detection.utils import category_to_detection_name

    return category_to_detection_name(category)


def _read_cameras(r: _Reader, value: object) -> dict[str, Camera]:
    """Valid calibrations by camera name (a declared camera with an invalid calibration is reported and left out)."""
    cameras: dict[str, Camera] = {}
    if not isinstance(value, dict) or not value:
        r.error("cameras", f"expected a mapping camera name -> calibration with names from {list(CAMERA_NAMES)}")
        return cameras
    for channel, spec in value.items():
        where = f"cameras.{channel}"
        if channel not in CAMERA_NAMES:
            r.error(where, f"unknown camera name {channel!r}; expected one of {list(CAMERA_NAMES)}")
            continue
        spec = r.mapping(spec, where, "camera")
        if spec is None:
            continue
        missing = sorted({"intrinsic", "width", "height", "sensor_to_ego"} - set(spec))
        if missing:
            r.error(where, f"missing key(s) {missing}")
            continue
        intrinsic = r.numbers(spec["intrinsic"], (3, 3), f"{where}.intrinsic")
        if intrinsic is not None and (intrinsic[0, 0] <= 0 or intrinsic[1, 1] <= 0
                                      or not np.allclose(intrinsic[2], [0, 0, 1])):
            r.error(f"{where}.intrinsic", f"expected [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0, got "
                                          f"{intrinsic.tolist()}")
            intrinsic = None
        size_ok = True
        for key in ("width", "height"):
            if isinstance(spec[key], bool) or not isinstance(spec[key], int) or spec[key] <= 0:
                r.error(f"{where}.{key}", f"expected a positive integer (pixels), got {spec[key]!r}")
                size_ok = False
        pose = r.pose(spec["sensor_to_ego"], f"{where}.sensor_to_ego")
        if intrinsic is not None and size_ok and pose is not None:
            cameras[channel] = Camera(intrinsic, spec["width"], spec["height"], pose)
            axis, down = pose[:3, 2], pose[:3, 1]  # optical axis and image-down axis in the ego frame
            if abs(axis[2]) > 0.5 or down[2] > -0.5:
                logger.warning("%s: %s.sensor_to_ego: optical axis %s, image-down axis %s in the ego frame; expected "
                               "a roughly horizontal view (is it camera -> ego, camera x right, y down, z forward?)",
                               r.path, where, np.round(axis, 2).tolist(), np.round(down, 2).tolist())
    return cameras


def _read_frames(r: _Reader, value: object, unit: int, cameras: dict[str, Camera], declared: set[str]
                 ) -> list[Frame]:
    frames: list[Frame] = []
    if not isinstance(value, list) or not value:
        r.error("frames", "expected a non-empty list of {timestamp, keyframe, images}")
        return frames
    last_frame, last_image = -1, {channel: -1 for channel in cameras}
    for i, spec in enumerate(value):
        where = f"frames[{i}]"
        spec = r.mapping(spec, where, "frame")
        if spec is None:
            continue
        if "timestamp" not in spec or "images" not in spec:
            r.error(where, "missing key(s) timestamp and/or images")
            continue
        timestamp = r.timestamp(spec["timestamp"], unit, f"{where}.timestamp")
        keyframe = spec.get("keyframe", False)
        if not isinstance(keyframe, bool):
            r.error(f"{where}.keyframe", f"expected true or false, got {keyframe!r}")
        if timestamp is None:
            continue
        if timestamp <= last_frame:
            r.error(f"{where}.timestamp", f"timestamps must increase from frame to frame: {timestamp} us follows "
                                          f"{last_frame} us")
        last_frame = timestamp
        images: dict[str, tuple[Path, int]] = {}
        if not isinstance(spec["images"], dict):
            r.error(f"{where}.images", "expected a mapping camera name -> image path or {file, timestamp}")
            continue
        for channel, image in spec["images"].items():
            at = f"{where}.images.{channel}"
            if channel not in cameras:
                if channel not in declared:  # a declared camera with a bad calibration is reported already
                    r.error(at, f"camera {channel!r} is not among the cameras {sorted(declared)}")
                continue
            stamp = timestamp
            if isinstance(image, dict):
                image = r.mapping(image, at, "image")
                if image is None or "file" not in image:
                    r.error(at, "expected {file: path, timestamp: t}")
                    continue
                if "timestamp" in image:
                    stamp = r.timestamp(image["timestamp"], unit, f"{at}.timestamp")
                image = image["file"]
            if not isinstance(image, str) or stamp is None:
                r.error(at, f"expected an image path (relative to {r.path.parent}), got {image!r}")
                continue
            path = (r.path.parent / image).resolve()
            if path.suffix.lower() not in IMAGE_FORMATS:
                r.error(at, f"{image}: expected one of the image formats {sorted(IMAGE_FORMATS)}")
            elif not path.is_file():
                r.error(at, f"image file {path} does not exist")
            else:
                with Image.open(path) as opened:
                    size = opened.size
                camera = cameras[channel]
                if size != (camera.width, camera.height):
                    r.error(at, f"{path} is {size[0]}x{size[1]}, cameras.{channel} says {camera.width}x"
                                f"{camera.height}")
            if stamp <= last_image[channel]:
                r.error(f"{at}.timestamp" if isinstance(spec["images"][channel], dict) else f"{where}.timestamp",
                        f"{channel} image timestamps must increase: {stamp} us follows {last_image[channel]} us")
            last_image[channel] = stamp
            images[channel] = (path, stamp)
        if keyframe is True:
            missing = [channel for channel in cameras if channel not in spec["images"]]
            if missing:
                r.error(f"{where}.images", f"a keyframe needs an image of every camera; missing {missing}")
        frames.append(Frame(timestamp, keyframe is True, images))
    if frames and not any(frame.keyframe for frame in frames):
        r.error("frames", "no frame has keyframe: true (keyframes, ~2 Hz, become the annotated samples)")
    return frames


def _read_ego_poses(r: _Reader, value: object, unit: int) -> tuple[np.ndarray, np.ndarray]:
    times, matrices = [], []
    if not isinstance(value, list) or not value:
        r.error("ego_poses", "expected a non-empty list of {timestamp, translation, rotation} (ego -> global)")
        return np.zeros(0, dtype=np.int64), np.zeros((0, 4, 4))
    for i, spec in enumerate(value):
        where = f"ego_poses[{i}]"
        spec = r.mapping(spec, where, "ego_pose")
        if spec is None:
            continue
        timestamp = r.timestamp(spec.get("timestamp"), unit, f"{where}.timestamp")
        if "matrix" in spec and ("translation" in spec or "rotation" in spec):
            r.error(where, "expected either matrix or translation + rotation, not both")
            continue
        if "matrix" in spec:
            pose = r.pose(spec["matrix"], f"{where}.matrix")
        else:
            pose = r.pose({k: spec.get(k) for k in ("translation", "rotation")}, where)
        if timestamp is None or pose is None:
            continue
        if times and timestamp <= times[-1]:
            r.error(f"{where}.timestamp", f"timestamps must increase: {timestamp} us follows {times[-1]} us")
            continue
        times.append(timestamp)
        matrices.append(pose)
    return np.asarray(times, dtype=np.int64), np.asarray(matrices, dtype=np.float64).reshape(-1, 4, 4)


def _check_attribute(r: _Reader, attribute: object, category: str, name: object, where: str) -> None:
    """An attribute must be a nuScenes attribute of the class's family (none for barrier and traffic cone)."""
    if not attribute:
        return
    detection_class = _detection_class(category)
    if detection_class is None:
        allowed = list(ATTRIBUTES)  # categories outside the benchmark: any attribute
    else:
        family = ATTRIBUTE_FAMILY.get(detection_class)
        allowed = [a for a in ATTRIBUTES if family is not None and a.startswith(family)]
    if attribute not in allowed:
        expected = f"one of {allowed} or none" if allowed else "none (the class carries no attribute)"
        r.error(where, f"attribute {attribute!r} does not fit class {name!r}; expected {expected}")


def _read_tracks(r: _Reader, value: object, unit: int) -> list[Track]:
    tracks: list[Track] = []
    if value is None:
        return tracks
    if not isinstance(value, list):
        r.error("tracks", "expected a list of {id, class, boxes}")
        return tracks
    seen: set[str] = set()
    for i, spec in enumerate(value):
        where = f"tracks[{i}]"
        spec = r.mapping(spec, where, "track")
        if spec is None:
            continue
        track_id = "" if spec.get("id") is None else str(spec["id"])
        if not track_id or track_id in seen:
            r.error(f"{where}.id", f"expected a unique, non-empty track id, got {spec.get('id')!r}")
        seen.add(track_id)
        category = _category(spec.get("class"))
        if category is None:
            r.error(f"{where}.class", f"unknown class name {spec.get('class')!r}; expected a detection class "
                                      f"{list(CLASS_NAMES)} or a nuScenes category such as 'vehicle.bus.bendy'")
            continue
        track_attribute = spec.get("attribute", "")
        _check_attribute(r, track_attribute, category, spec.get("class"), f"{where}.attribute")
        boxes = []
        box_specs = spec.get("boxes")
        if not isinstance(box_specs, list) or not box_specs:
            r.error(f"{where}.boxes", "expected a non-empty list of {timestamp, center, size, yaw or rotation}")
            continue
        for j, box in enumerate(box_specs):
            at = f"{where}.boxes[{j}]"
            box = r.mapping(box, at, "box")
            if box is None:
                continue
            timestamp = r.timestamp(box.get("timestamp"), unit, f"{at}.timestamp")
            center = r.numbers(box.get("center"), (3,), f"{at}.center")
            size = r.numbers(box.get("size"), (3,), f"{at}.size")
            if size is not None and not (size > 0).all():
                r.error(f"{at}.size", f"expected a positive size [w, l, h] in metres, got {size.tolist()}")
                size = None
            if ("yaw" in box) == ("rotation" in box):
                r.error(at, "expected exactly one of yaw (radians about +z) or rotation ([w, x, y, z])")
                continue
            if "yaw" in box:
                yaw = r.numbers(box["yaw"], (), f"{at}.yaw")
                rotation = None if yaw is None else Rotation.from_euler("z", float(yaw)).as_matrix()
            else:
                rotation = r.rotation(box["rotation"], f"{at}.rotation")
            attribute = box.get("attribute", track_attribute)
            if "attribute" in box:
                _check_attribute(r, attribute, category, spec.get("class"), f"{at}.attribute")
            visibility = box.get("visibility")
            if visibility is not None and (isinstance(visibility, bool) or not isinstance(visibility, (int, float))
                                           or not 0 <= visibility <= 1):
                r.error(f"{at}.visibility", f"expected the visible fraction 0..1, got {visibility!r}")
            points = box.get("num_lidar_pts", DEFAULT_LIDAR_POINTS)
            if isinstance(points, bool) or not isinstance(points, int) or points < 0:
                r.error(f"{at}.num_lidar_pts", f"expected a non-negative integer, got {points!r}")
            if timestamp is None or center is None or size is None or rotation is None:
                continue
            if boxes and timestamp <= boxes[-1].timestamp:
                r.error(f"{at}.timestamp", f"box timestamps must increase: {timestamp} us follows "
                                           f"{boxes[-1].timestamp} us")
                continue
            boxes.append(TrackBox(timestamp, center, size, np.asarray(_quaternion(rotation)), attribute or "",
                                  visibility, points if isinstance(points, int) else DEFAULT_LIDAR_POINTS))
        tracks.append(Track(track_id, category, boxes))
    return tracks


def _boxes_to_global(r: _Reader, tracks: list[Track], pose_times: np.ndarray, pose_matrices: np.ndarray) -> None:
    """Move boxes given in the ego frame at their own timestamp (box_frame: ego) into the global frame, in place."""
    for i, track in enumerate(tracks):
        for j, box in enumerate(track.boxes):
            if not pose_times[0] <= box.timestamp <= pose_times[-1]:
                r.error(f"tracks[{i}].boxes[{j}].timestamp", f"{box.timestamp} us lies outside the ego poses' "
                                                            f"{pose_times[0]}..{pose_times[-1]} us (box_frame: ego)")
                continue
            pose = interpolate_pose(pose_times, pose_matrices, box.timestamp)
            box.center = pose[:3, :3] @ box.center + pose[:3, 3]
            box.rotation = np.asarray(_quaternion(pose[:3, :3] @ Rotation.from_quat(box.rotation[[1, 2, 3, 0]])
                                                  .as_matrix()))


def load_log(path: str | Path, default_split: str | None = None) -> LogSpec:
    """Parse and validate one log file (JSON or YAML); raise ConvertError listing every problem found.

    Args:
        path: the log file; image paths in it are relative to its folder.
        default_split: split of a log whose file names none (`ftkd convert --split`).
    """
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: log file does not exist")
    data = _read_file(path)
    r = _Reader(path)
    data = r.mapping(data, "(top level)", "log")
    if data is None:
        raise ConvertError("\n".join(r.errors))
    missing = sorted({"log", "cameras", "frames", "ego_poses"} - set(data))
    if missing:
        r.error("(top level)", f"missing key(s) {missing}")
        raise ConvertError("\n".join(r.errors))
    name = data["log"]
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        r.error("log", f"expected a name of letters, digits, '_', '.', '-' (it names files), got {name!r}")
    split = data.get("split", default_split)
    if split is None:
        r.error("split", "no split given: add `split: train` (or val) to the file, or pass --split")
    elif not isinstance(split, str) or not re.match(r"^[a-z][a-z0-9]*$", split):
        r.error("split", f"expected a lower-case word such as train or val, got {split!r}")
    unit = TIME_UNITS.get(data.get("time_unit", "us"))
    if unit is None:
        r.error("time_unit", f"expected one of {sorted(TIME_UNITS)}, got {data.get('time_unit')!r}")
        unit = 1
    cameras = _read_cameras(r, data["cameras"])
    lidar_to_ego = np.eye(4)
    if data.get("lidar_to_ego") is not None:
        lidar_to_ego = r.pose(data["lidar_to_ego"], "lidar_to_ego")
    declared = set(data["cameras"]) if isinstance(data["cameras"], dict) else set()
    frames = _read_frames(r, data["frames"], unit, cameras, declared)
    pose_times, pose_matrices = _read_ego_poses(r, data["ego_poses"], unit)
    tracks = _read_tracks(r, data.get("tracks"), unit)
    if len(pose_times):
        first, last = pose_times[0], pose_times[-1]
        for i, frame in enumerate(frames):
            stamps = [frame.timestamp] + [stamp for _, stamp in frame.images.values()]
            if min(stamps) < first or max(stamps) > last:
                r.error(f"frames[{i}].timestamp", f"images at {min(stamps)}..{max(stamps)} us lie outside the ego "
                                                  f"poses' {first}..{last} us (poses are interpolated, never "
                                                  f"extrapolated)")
    box_frame = data.get("box_frame", "global")
    if box_frame not in ("global", "ego"):
        r.error("box_frame", f"expected 'global' or 'ego', got {box_frame!r}")
    elif box_frame == "ego" and not r.errors:
        _boxes_to_global(r, tracks, pose_times, pose_matrices)
    if r.errors:
        shown = r.errors[:MAX_ERRORS] + [f"{path}: ... and {len(r.errors) - MAX_ERRORS} more problem(s)"] * (
            len(r.errors) > MAX_ERRORS)
        raise ConvertError("\n".join(shown))
    missing_cameras = [c for c in CAMERA_NAMES if c not in cameras]
    if missing_cameras:
        logger.warning("%s: no %s: a valid nuScenes dataset, but the detectors need all six cameras", path,
                       missing_cameras)
    keyframe_times = np.array([f.timestamp for f in frames if f.keyframe])
    if len(keyframe_times) > 1 and not 0.2e6 <= np.median(np.diff(keyframe_times)) <= 1.0e6:
        logger.warning("%s: keyframes are %.3f s apart (median); nuScenes keyframes are 0.5 s apart (time_unit?)",
                       path, np.median(np.diff(keyframe_times)) / 1e6)
    return LogSpec(path, name, str(data.get("location", "unknown")), str(data.get("vehicle", "custom-ego")),
                   split, cameras, lidar_to_ego, frames, pose_times, pose_matrices, tracks)


# ---------------------------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------------------------


def split_names(version: str, splits: Sequence[str]) -> dict[str, str]:
    """Split word (train, val, ...) -> its splits.json name `<suffix>_<word>` for version `v1.0-<suffix>`.

    Raises ConvertError if a name would be one of the devkit's predefined splits (those always select the real
    nuScenes scenes).
    """
    from nuscenes.utils.splits import create_splits_scenes

    match = re.match(r"^v1\.0-([A-Za-z0-9]+)$", version)
    if match is None:
        raise ConvertError(f"--version {version!r}: expected v1.0-<letters/digits>, e.g. v1.0-custom")
    names = {split: f"{match.group(1)}_{split}" for split in splits}
    taken = sorted(name for name in names.values() if name in create_splits_scenes())
    if taken:
        raise ConvertError(f"--version {version!r} makes the split name(s) {taken}, which the devkit reserves for "
                           f"the real nuScenes scenes; choose another version suffix, e.g. v1.0-custom")
    return names


def box_at(boxes: Sequence[TrackBox], timestamp: int) -> TrackBox | None:
    """The track's box at `timestamp` (us): linear in centre and size, slerp in rotation; attribute, visibility
    and point count from the nearer box. None outside the track's time span (TIME_TOLERANCE) or inside a gap of
    more than MAX_BOX_GAP between two boxes."""
    times = np.array([box.timestamp for box in boxes])
    if timestamp < times[0] - TIME_TOLERANCE or timestamp > times[-1] + TIME_TOLERANCE:
        return None
    t = int(np.clip(timestamp, times[0], times[-1]))
    i = int(np.searchsorted(times, t, side="right")) - 1
    if times[i] == t:
        return boxes[i]
    a, b = boxes[i], boxes[i + 1]
    if b.timestamp - a.timestamp > MAX_BOX_GAP:
        return None
    w = (t - a.timestamp) / (b.timestamp - a.timestamp)
    rotations = Rotation.from_quat(np.stack([a.rotation, b.rotation])[:, [1, 2, 3, 0]])  # [w,x,y,z] -> [x,y,z,w]
    rotation = _quaternion(Slerp([0.0, 1.0], rotations)(w).as_matrix())
    near = a if w <= 0.5 else b
    return TrackBox(t, (1 - w) * a.center + w * b.center, (1 - w) * a.size + w * b.size, np.asarray(rotation),
                    near.attribute, near.visibility, near.num_lidar_pts)


def _place(source: Path, target: Path, images: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if images == "link":
        os.symlink(source, target)
    else:
        shutil.copyfile(source, target)


def log_tables(log: LogSpec, root: Path, images: str = "copy") -> dict[str, list[dict]]:
    """One log's rows of log, scene, sample, sample_data, ego_pose, calibrated_sensor, instance and
    sample_annotation; its images are copied (or symlinked, images="link") under `root`."""
    name = log.name

    def tok(table: str, *key: object) -> str:
        return token(TOKEN_SEED, table, name, *key)

    tables: dict[str, list[dict]] = {k: [] for k in ("log", "scene", "sample", "sample_data", "ego_pose",
                                                     "calibrated_sensor", "instance", "sample_annotation")}
    keyframes = [i for i, frame in enumerate(log.frames) if frame.keyframe]  # frame index of each sample
    sample_tokens = [tok("sample", k) for k in range(len(keyframes))]
    for channel in (*[c for c in CAMERA_NAMES if c in log.cameras], LIDAR_NAME):
        camera = log.cameras.get(channel)
        tables["calibrated_sensor"].append({
            "token": tok("calibrated_sensor", channel), "sensor_token": token(TOKEN_SEED, "sensor", channel),
            **_pose_record(camera.sensor_to_ego if camera else log.lidar_to_ego),
            "camera_intrinsic": camera.intrinsic.tolist() if camera else [],
        })

    def add_sample_data(channel: str, key: tuple, timestamp: int, sample: int, filename: str, keyframe: bool,
                        fileformat: str, size: tuple[int, int]) -> dict:
        record = {"token": tok("sample_data", channel, *key), "sample_token": sample_tokens[sample],
                  "ego_pose_token": tok("ego_pose", channel, *key),
                  "calibrated_sensor_token": tok("calibrated_sensor", channel), "timestamp": timestamp,
                  "fileformat": fileformat, "is_key_frame": keyframe, "width": size[0], "height": size[1],
                  "filename": filename, "prev": "", "next": ""}
        tables["ego_pose"].append({"token": record["ego_pose_token"], "timestamp": timestamp,
                                   **_pose_record(log.ego_pose(timestamp))})
        tables["sample_data"].append(record)
        return record

    # a sweep belongs to the keyframe at or after it (frames after the last keyframe: to the last one)
    owner = np.minimum(np.searchsorted(keyframes, np.arange(len(log.frames))), len(keyframes) - 1)
    for channel in (c for c in CAMERA_NAMES if c in log.cameras):
        camera, previous = log.cameras[channel], None
        for i, frame in enumerate(log.frames):
            if channel not in frame.images:
                continue
            source, stamp = frame.images[channel]
            folder = "samples" if frame.keyframe else "sweeps"
            filename = f"{folder}/{channel}/{name}__{channel}__{stamp}{source.suffix.lower()}"
            _place(source, root / filename, images)
            record = add_sample_data(channel, (i,), stamp, int(owner[i]), filename, frame.keyframe,
                                     IMAGE_FORMATS[source.suffix.lower()], (camera.width, camera.height))
            if previous is not None:
                previous["next"], record["prev"] = record["token"], previous["token"]
            previous = record
    previous = None
    for k, i in enumerate(keyframes):
        stamp = log.frames[i].timestamp
        filename = f"samples/{LIDAR_NAME}/{name}__{LIDAR_NAME}__{stamp}.pcd.bin"
        (root / filename).parent.mkdir(parents=True, exist_ok=True)
        (root / filename).write_bytes(b"")  # no points: the tables only need the keyframe and its ego pose
        record = add_sample_data(LIDAR_NAME, (k,), stamp, k, filename, True, "pcd", (0, 0))
        if previous is not None:
            previous["next"], record["prev"] = record["token"], previous["token"]
        previous = record

    first_time = log.frames[keyframes[0]].timestamp
    date = datetime.datetime.fromtimestamp(first_time / 1e6, tz=datetime.timezone.utc).strftime("%Y-%m-%d")
    tables["log"].append({"token": tok("log"), "logfile": name, "vehicle": log.vehicle, "date_captured": date,
                          "location": log.location})
    tables["scene"].append({"token": tok("scene"), "name": name, "description": f"converted from {log.path.name}",
                            "log_token": tok("log"), "nbr_samples": len(keyframes),
                            "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1]})
    for k, i in enumerate(keyframes):
        tables["sample"].append({"token": sample_tokens[k], "timestamp": log.frames[i].timestamp,
                                 "scene_token": tok("scene"), "prev": sample_tokens[k - 1] if k else "",
                                 "next": sample_tokens[k + 1] if k + 1 < len(keyframes) else ""})
    for track in log.tracks:
        annotated = [(k, box) for k, i in enumerate(keyframes)
                     if (box := box_at(track.boxes, log.frames[i].timestamp)) is not None]
        if not annotated:
            logger.info("%s: track %s has no box at any keyframe; skipped", log.path, track.id)
            continue
        ann_tokens = [tok("sample_annotation", track.id, k) for k, _ in annotated]
        tables["instance"].append({"token": tok("instance", track.id),
                                   "category_token": token(TOKEN_SEED, "category", track.category),
                                   "nbr_annotations": len(annotated), "first_annotation_token": ann_tokens[0],
                                   "last_annotation_token": ann_tokens[-1]})
        for n, (k, box) in enumerate(annotated):
            tables["sample_annotation"].append({
                "token": ann_tokens[n], "sample_token": sample_tokens[k], "instance_token": tok("instance", track.id),
                "visibility_token": visibility_token(box.visibility) if box.visibility is not None else "",
                "attribute_tokens": [token(TOKEN_SEED, "attribute", box.attribute)] if box.attribute else [],
                "translation": [float(v) for v in box.center], "size": [float(v) for v in box.size],
                "rotation": [float(v) for v in box.rotation], "num_lidar_pts": box.num_lidar_pts,
                "num_radar_pts": 0, "prev": ann_tokens[n - 1] if n else "",
                "next": ann_tokens[n + 1] if n + 1 < len(ann_tokens) else "",
            })
    return tables


def convert(
    log_paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    version: str = "v1.0-custom",
    images: str = "copy",
    split: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert custom log files into a nuScenes v1.0 dataset at `out_dir` and return that dataroot.

    Args:
        log_paths: one JSON/YAML file per log (docs/custom_data.md); each becomes one nuScenes log and scene.
        out_dir: the dataroot to create; written to `<out_dir>.tmp-<pid>` and moved into place when complete.
        version: the table folder `v1.0-<suffix>`; splits.json names the splits `<suffix>_<split>`.
        images: "copy" the images into the dataset, or "link" them (absolute symlinks, no extra disk space).
        split: split of the logs whose file names none.
        overwrite: replace an existing `out_dir`.
    """
    if images not in ("copy", "link"):
        raise ValueError(f"images={images!r}: expected 'copy' or 'link'")
    if not log_paths:
        raise ConvertError("no log files given")
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    logs, problems = [], []
    for path in log_paths:
        try:
            logs.append(load_log(path, split))
        except ConvertError as err:
            problems.append(str(err))
    names: dict[str, Path] = {}
    for log in logs:
        if log.name in names:
            problems.append(f"{log.path}: log: name {log.name!r} is already used by {names[log.name]}; log names "
                            f"become scene names and must be unique")
        names[log.name] = log.path
    if problems:
        raise ConvertError("\n".join(problems))
    split_of = split_names(version, sorted({log.split for log in logs}))
    tmp = temporary_dir(out)
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
        tables = fixed_tables(TOKEN_SEED, {})  # category (10 detection classes), attribute, visibility
        known = {record["name"] for record in tables["category"]}
        tables["category"] += [{"token": token(TOKEN_SEED, "category", name), "name": name,
                                "description": f"nuScenes category {name}"}
                               for name in NUSCENES_CATEGORIES if name not in known]
        used = {c for log in logs for c in (*log.cameras, LIDAR_NAME)}
        tables["sensor"] = [{"token": token(TOKEN_SEED, "sensor", c), "channel": c,
                             "modality": "lidar" if c == LIDAR_NAME else "camera"}
                            for c in (*CAMERA_NAMES, LIDAR_NAME) if c in used]
        for log in logs:
            rows = log_tables(log, tmp, images)
            for table, records in rows.items():
                tables.setdefault(table, []).extend(records)
            logger.info("%s -> scene %s: %d keyframes, %d images, %d tracks, %d annotations", log.path, log.name,
                        len(rows["sample"]), sum(len(f.images) for f in log.frames), len(rows["instance"]),
                        len(rows["sample_annotation"]))
        tables["map"] = []
        (tmp / "maps").mkdir()
        for location in sorted({log.location for log in logs}):
            map_token = token(TOKEN_SEED, "map", location)
            Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(tmp / "maps" / f"{map_token}.png")
            tables["map"].append({"token": map_token, "category": "semantic_prior",
                                  "filename": f"maps/{map_token}.png",
                                  "log_tokens": [r["token"] for r, log in zip(tables["log"], logs)
                                                 if log.location == location]})
        splits = {split_of[s]: [log.name for log in logs if log.split == s] for s in sorted(split_of)}
        write_tables(tmp, version, tables, splits)
        (tmp / "convert_sources.json").write_text(json.dumps(
            {"version": version, "images": images, "logs": [str(log.path.resolve()) for log in logs],
             "splits": splits}, indent=2))
        publish(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
