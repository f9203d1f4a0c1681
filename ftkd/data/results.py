"""The nuScenes results writer: detections in a sample's reference frame -> global-frame submission records.

Every model goes through this one function, so the conventions (box centre at the gravity centre, size order
[w, l, h], yaw counter-clockwise about +z, velocity in m/s) are turned into the official format in one place.
The reference frame is the current keyframe's ego frame; `SampleMeta.ref_to_global` maps it to the global
frame, as the devkit's `Box.rotate(ego rotation)` + `Box.translate(ego translation)` would.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from ftkd.constants import CLASS_NAMES, DEFAULT_ATTRIBUTES
from ftkd.structures import Detections, SampleMeta

logger = logging.getLogger(__name__)

# Attribute names the official metric accepts ('' = no attribute, for barrier and traffic_cone).
ATTRIBUTE_NAMES: tuple[str, ...] = (
    "cycle.with_rider",
    "cycle.without_rider",
    "pedestrian.moving",
    "pedestrian.sitting_lying_down",
    "pedestrian.standing",
    "vehicle.moving",
    "vehicle.parked",
    "vehicle.stopped",
)
MOVING_SPEED = 0.2  # m/s: above it a vehicle is "moving" and a cycle has a rider (mmdet3d's rule)
MAX_BOXES_PER_SAMPLE = 500  # the official metric refuses more
VEHICLE_CLASSES = frozenset({"car", "truck", "construction_vehicle", "bus", "trailer"})
CYCLE_CLASSES = frozenset({"bicycle", "motorcycle"})
# The submission's "meta" block: a camera-only method.
RESULTS_META = {"use_camera": True, "use_lidar": False, "use_radar": False, "use_map": False, "use_external": False}


def attribute_for(class_name: str, speed: float) -> str:
    """Attribute of a prediction from its class and speed (m/s), as the official code bases write it.

    Moving (> 0.2 m/s): vehicles are "vehicle.moving", cycles "cycle.with_rider"; at rest pedestrians are
    "pedestrian.standing" and buses "vehicle.stopped"; everything else takes the class default.
    """
    if class_name not in DEFAULT_ATTRIBUTES:
        raise ValueError(f"unknown class name {class_name!r}, expected one of {CLASS_NAMES}")
    if speed > MOVING_SPEED:
        if class_name in VEHICLE_CLASSES:
            return "vehicle.moving"
        if class_name in CYCLE_CLASSES:
            return "cycle.with_rider"
    else:
        if class_name == "pedestrian":
            return "pedestrian.standing"
        if class_name == "bus":
            return "vehicle.stopped"
    return DEFAULT_ATTRIBUTES[class_name]


def check_pose(matrix: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Split a rigid 4x4 transform into (rotation [3, 3], translation [3]) after checking it is one.

    A scaled or otherwise non-rigid matrix (e.g. the BEV-augmented `Batch.ego_pose` instead of the
    un-augmented `SampleMeta.ref_to_global`) is an error, as it would silently distort every box.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
        raise ValueError(f"{where}: expected a finite [4, 4] rigid transform, got {matrix.shape} {matrix.tolist()}")
    rotation, translation = matrix[:3, :3], matrix[:3, 3]
    if not np.allclose(matrix[3], [0.0, 0.0, 0.0, 1.0]) or not np.allclose(
        rotation @ rotation.T, np.eye(3), atol=1e-4
    ) or np.linalg.det(rotation) < 0:
        raise ValueError(
            f"{where}: expected a rigid transform (orthonormal rotation, det +1, last row 0 0 0 1), got "
            f"{np.round(matrix, 5).tolist()}; pass the un-augmented reference->global pose"
        )
    return rotation, translation


def detections_to_nuscenes(
    meta: SampleMeta, detections: Detections, *, attributes: Sequence[str] | None = None
) -> list[dict]:
    """Official result records (global frame) of one sample's detections.

    Args:
        meta: the sample; `meta.ref_to_global` [4, 4] maps the reference (ego) frame to the global frame.
        detections: boxes [M, 9] (reference frame: x, y, z gravity centre, w, l, h metres, yaw rad, vx, vy m/s),
            scores [M], labels [M] (indices into CLASS_NAMES).
        attributes: optional attribute name per detection (a model with an attribute head, or ground truth);
            by default the class/speed rule of `attribute_for`.
    Returns:
        M dicts with sample_token, translation, size [w, l, h], rotation [w, x, y, z], velocity [vx, vy] (global),
        detection_name, detection_score, attribute_name.
    """
    where = f"sample {meta.sample_token}"
    boxes, scores, labels = detections.boxes, detections.scores, detections.labels
    if boxes.dim() != 2 or boxes.shape[1] != 9:
        raise ValueError(f"{where}: expected detection boxes of shape [M, 9], got {tuple(boxes.shape)}")
    if scores.shape != boxes.shape[:1] or labels.shape != boxes.shape[:1]:
        raise ValueError(
            f"{where}: expected scores [M] and labels [M] for {len(boxes)} boxes, got "
            f"{tuple(scores.shape)} and {tuple(labels.shape)}"
        )
    if len(boxes) > MAX_BOXES_PER_SAMPLE:
        raise ValueError(
            f"{where}: {len(boxes)} detections, the official metric accepts at most {MAX_BOXES_PER_SAMPLE} per "
            f"sample (keep the top-scoring ones)"
        )
    if torch.is_floating_point(labels) or torch.is_complex(labels):
        raise TypeError(f"{where}: expected integer class labels, got dtype {labels.dtype}")
    boxes_np = boxes.detach().cpu().double().numpy()
    scores_np = scores.detach().cpu().double().numpy()
    labels_np = labels.detach().cpu().numpy()
    bad = ~np.isfinite(boxes_np).all(axis=1) | ~np.isfinite(scores_np)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{where}: detection {i} has non-finite values: box {boxes_np[i].tolist()}, score {scores_np[i]} "
            f"({int(bad.sum())} of {len(bad)} detections affected)"
        )
    small = (boxes_np[:, 3:6] <= 0).any(axis=1)
    if small.any():
        i = int(np.flatnonzero(small)[0])
        raise ValueError(f"{where}: detection {i} has a non-positive size (w, l, h) = {boxes_np[i, 3:6].tolist()}")
    unknown = (labels_np < 0) | (labels_np >= len(CLASS_NAMES))
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        raise ValueError(
            f"{where}: detection {i} has label {int(labels_np[i])}, expected 0..{len(CLASS_NAMES) - 1} (CLASS_NAMES)"
        )
    if attributes is not None:
        if len(attributes) != len(boxes):
            raise ValueError(f"{where}: {len(attributes)} attributes for {len(boxes)} detections")
        for i, name in enumerate(attributes):
            if name not in ATTRIBUTE_NAMES and name != "":
                raise ValueError(f"{where}: attribute {i} is {name!r}, expected '' or one of {ATTRIBUTE_NAMES}")

    rotation, translation = check_pose(meta.ref_to_global, f"{where}: meta.ref_to_global")
    if len(boxes_np) == 0:
        return []
    centres = boxes_np[:, 0:3] @ rotation.T + translation  # [M, 3] global
    velocity = np.concatenate([boxes_np[:, 7:9], np.zeros((len(boxes_np), 1))], axis=1) @ rotation.T  # [M, 3]
    # Box orientation in the global frame: the pose rotation applied after the yaw about the reference +z
    # (the devkit's Box.rotate); quaternions as [w, x, y, z].
    box_rotation = Rotation.from_matrix(rotation) * Rotation.from_euler("z", boxes_np[:, 6:7])
    quat_xyzw = box_rotation.as_quat()  # [M, 4] scalar last
    quat_wxyz = np.concatenate([quat_xyzw[:, 3:], quat_xyzw[:, :3]], axis=1)  # [M, 4] scalar first

    records = []
    for i in range(len(boxes_np)):
        name = CLASS_NAMES[int(labels_np[i])]
        speed = math.hypot(velocity[i, 0], velocity[i, 1])
        records.append(
            {
                "sample_token": meta.sample_token,
                "translation": centres[i].tolist(),
                "size": boxes_np[i, 3:6].tolist(),
                "rotation": quat_wxyz[i].tolist(),
                "velocity": velocity[i, :2].tolist(),
                "detection_name": name,
                "detection_score": float(scores_np[i]),
                "attribute_name": attribute_for(name, speed) if attributes is None else attributes[i],
            }
        )
    return records


def records_to_boxes(records: Sequence[dict], ref_to_global: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Inverse of the writer's geometry: global records -> ([M, 9] float64 boxes in the reference frame, names).

    Yaw is the heading of the box's length axis projected on the reference xy plane; velocity is rotated into
    the reference frame (NaN stays NaN).
    """
    rotation, translation = check_pose(ref_to_global, "records_to_boxes: ref_to_global")
    if not records:
        return np.zeros((0, 9)), []
    centres = np.array([r["translation"] for r in records], dtype=np.float64)  # [M, 3]
    quat_wxyz = np.array([r["rotation"] for r in records], dtype=np.float64)  # [M, 4]
    box_axes = Rotation.from_quat(quat_wxyz[:, [1, 2, 3, 0]]).as_matrix()[:, :, 0]  # [M, 3] length axis, global
    velocity = np.array([list(r["velocity"]) + [0.0] for r in records], dtype=np.float64)  # [M, 3]
    centres_ref = (centres - translation) @ rotation  # [M, 3]: rotation.T applied to each row
    axes_ref = box_axes @ rotation
    velocity_ref = velocity @ rotation
    yaw = np.arctan2(axes_ref[:, 1], axes_ref[:, 0])
    sizes = np.array([r["size"] for r in records], dtype=np.float64)  # [M, 3]
    boxes = np.concatenate([centres_ref, sizes, yaw[:, None], velocity_ref[:, :2]], axis=1)  # [M, 9]
    return boxes, [r["detection_name"] for r in records]


def write_result_records(
    results: dict[str, list[dict]], path: str | Path, *, sample_tokens: Sequence[str] | None = None
) -> Path:
    """Atomically write {sample_token: records} as an official results JSON.

    `sample_tokens` lists every sample of the split: the metric needs an entry for each, so the ones without
    detections get an empty list; a token outside it is an error.
    """
    path = Path(path)
    results = dict(results)
    if sample_tokens is not None:
        allowed = set(sample_tokens)
        outside = [token for token in results if token not in allowed]
        if outside:
            raise ValueError(
                f"{path}: {len(outside)} predicted samples are not in the given sample_tokens (e.g. {outside[:3]})"
            )
        for token in sample_tokens:
            results.setdefault(token, [])
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as f:
            json.dump({"meta": RESULTS_META, "results": results}, f, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    logger.info("wrote %d samples, %d boxes to %s", len(results), sum(map(len, results.values())), path)
    return path


def write_results(
    predictions: Iterable[tuple[SampleMeta, Detections]],
    path: str | Path,
    *,
    sample_tokens: Sequence[str] | None = None,
) -> Path:
    """Write a model's detections (reference frame) as an official nuScenes results JSON (global frame).

    Args:
        predictions: (meta, detections) per sample. A sample may appear twice only with identical records
            (a distributed sampler pads the last batch with repeated samples).
        path: the JSON file, written atomically (temporary file + rename).
        sample_tokens: every sample token of the split; missing samples get an empty list.
    Returns:
        `path` as a Path.
    """
    results: dict[str, list[dict]] = {}
    for meta, detections in predictions:
        records = detections_to_nuscenes(meta, detections)
        if meta.sample_token in results:
            if results[meta.sample_token] != records:
                raise ValueError(f"{path}: sample {meta.sample_token} was predicted twice with different detections")
            continue
        results[meta.sample_token] = records
    return write_result_records(results, path, sample_tokens=sample_tokens)
