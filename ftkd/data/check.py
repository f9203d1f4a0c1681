"""`ftkd check-data`: does a nuScenes-format dataset hold together, and does its ground truth survive the path a
prediction takes (loader -> reference frame -> augmentation off -> results writer -> official metric)?

Ground truth pushed through that path must come back exactly: mAP = NDS = 1 over the classes present and every
box reproduced. The official metric ignores z and cannot tell some mistakes apart, so the written boxes are also
compared directly with the devkit's annotations, and when they do not match we try to undo each known convention
mistake (yaw sign, w/l order, z at the bottom, LIDAR_TOP vs ego frame, ...) and name the one that explains them.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ftkd.constants import CAMERA_NAMES, LIDAR_NAME
from ftkd.data.results import detections_to_nuscenes, records_to_boxes, write_result_records
from ftkd.engine.evaluation import (
    DEVKIT_CLASSES,
    TP_METRICS,
    TP_SHORT,
    evaluate,
    format_metrics_table,
    load_nuscenes,
    sample_ground_truth,
    split_sample_tokens,
)
from ftkd.structures import Detections, SampleMeta

logger = logging.getLogger(__name__)

# A ground-truth box counts as reproduced when the written box is this close (float32 loader precision).
POSITION_TOLERANCE = 0.05  # metres, in x/y and in z separately
SIZE_TOLERANCE = 0.02  # metres, each of w, l, h
YAW_TOLERANCE = 0.02  # radians
VELOCITY_TOLERANCE = 0.05  # m/s
METRIC_TOLERANCE = 1e-3  # on AP and the TP errors of GT-as-prediction
QUICK_SAMPLES = 20  # samples of a split that `quick_check` pushes through the loader


@dataclass
class CheckSection:
    """One part of the report: a name, whether it passed, and the lines a person reads."""

    name: str
    ok: bool
    lines: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    """The result of `check_data`: its sections in order and, for a full check, the official metrics."""

    dataroot: str
    version: str
    split: str
    sections: list[CheckSection] = field(default_factory=list)
    metrics: dict | None = None

    @property
    def ok(self) -> bool:
        return all(section.ok for section in self.sections)

    @property
    def problems(self) -> list[str]:
        """One line per failed section: its name and first explanation."""
        return [
            f"{section.name}: {section.lines[0] if section.lines else 'failed'}"
            for section in self.sections
            if not section.ok
        ]

    def format(self) -> str:
        lines = [f"ftkd check-data: {self.dataroot} version {self.version} split {self.split}"]
        for section in self.sections:
            lines.append(f"[{'ok' if section.ok else 'FAIL'}] {section.name}")
            lines.extend(f"    {line}" for line in section.lines)
        if self.metrics is not None:
            lines.append("")
            lines.append(format_metrics_table(self.metrics))
        lines.append("")
        lines.append("PASSED: the data and the prediction path agree with the devkit." if self.ok else
                     f"FAILED: {len(self.problems)} check(s) failed, see [FAIL] above.")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Tables and files
# ---------------------------------------------------------------------------------------------------------------


def _rotation_problems(quaternions: np.ndarray) -> np.ndarray:
    """[K, 4] [w, x, y, z] -> [K] bool: not a finite unit quaternion."""
    return ~np.isfinite(quaternions).all(axis=1) | (np.abs(np.linalg.norm(quaternions, axis=1) - 1.0) > 1e-3)


def _rotate(quaternions: np.ndarray, vector: Sequence[float]) -> np.ndarray:
    """[K, 4] [w, x, y, z] unit quaternions applied to one 3-vector -> [K, 3]."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_quat(quaternions[:, [1, 2, 3, 0]]).apply(np.asarray(vector, dtype=np.float64))


def check_tables(nusc) -> CheckSection:
    """Ego poses, calibrations and annotations hold valid, plausibly oriented rotations and sane numbers.

    Orientation checks catch a quaternion stored in the wrong order ([x, y, z, w] instead of [w, x, y, z]): the
    ego's up axis must point up, cameras must look roughly horizontally with image y pointing down.
    """
    lines = []
    poses = np.array([p["rotation"] for p in nusc.ego_pose], dtype=np.float64).reshape(-1, 4)
    bad = _rotation_problems(poses) | ~np.isfinite(np.array([p["translation"] for p in nusc.ego_pose])).all(axis=1)
    if bad.any():
        lines.append(f"{int(bad.sum())} of {len(bad)} ego_pose records have a non-unit or non-finite rotation/"
                     f"translation (e.g. token {nusc.ego_pose[int(np.flatnonzero(bad)[0])]['token']})")
    elif len(poses):
        tilted = _rotate(poses, [0, 0, 1])[:, 2] < 0.9  # ego z axis more than ~25 degrees from global up
        if tilted.any():
            lines.append(f"{int(tilted.sum())} ego poses are tilted > 25 degrees (e.g. token "
                         f"{nusc.ego_pose[int(np.flatnonzero(tilted)[0])]['token']}): quaternion order [w, x, y, z]?")
    for record in nusc.calibrated_sensor:
        sensor = nusc.get("sensor", record["sensor_token"])
        where = f"calibrated_sensor {record['token']} ({sensor['channel']})"
        rotation = np.array(record["rotation"], dtype=np.float64)[None]
        if rotation.shape != (1, 4) or _rotation_problems(rotation)[0]:
            lines.append(f"{where}: rotation {record['rotation']} is not a unit quaternion [w, x, y, z]")
            continue
        if not np.isfinite(record["translation"]).all():
            lines.append(f"{where}: non-finite translation {record['translation']}")
        if sensor["modality"] == "camera":
            intrinsic = np.array(record["camera_intrinsic"], dtype=np.float64)
            if intrinsic.shape != (3, 3) or intrinsic[0, 0] <= 0 or intrinsic[1, 1] <= 0 or not np.allclose(
                intrinsic[2], [0, 0, 1]
            ):
                lines.append(
                    f"{where}: camera_intrinsic {record['camera_intrinsic']}, expected [[fx,0,cx],[0,fy,cy],[0,0,1]]"
                )
            axis = _rotate(rotation, [0, 0, 1])[0]
            down = _rotate(rotation, [0, 1, 0])[0]
            if abs(axis[2]) > 0.5 or down[2] > -0.5:
                lines.append(
                    f"{where}: optical axis {np.round(axis, 2).tolist()}, image-down axis "
                    f"{np.round(down, 2).tolist()} in the ego frame; expected a roughly horizontal view with image y "
                    f"pointing down (is the rotation camera->ego, as [w, x, y, z]?)"
                )
        elif sensor["channel"] == LIDAR_NAME and _rotate(rotation, [0, 0, 1])[0][2] < 0.9:
            lines.append(f"{where}: the lidar's z axis does not point up; rotation {record['rotation']} [w, x, y, z]?")
    annotations = nusc.sample_annotation
    if annotations:
        rotations = np.array([a["rotation"] for a in annotations], dtype=np.float64).reshape(-1, 4)
        sizes = np.array([a["size"] for a in annotations], dtype=np.float64).reshape(-1, 3)
        bad = _rotation_problems(rotations) | ~(sizes > 0).all(axis=1)
        if bad.any():
            a = annotations[int(np.flatnonzero(bad)[0])]
            lines.append(f"{int(bad.sum())} sample_annotation records have a non-unit rotation or non-positive size "
                         f"(e.g. {a['token']}: rotation {a['rotation']}, size {a['size']})")
    summary = (f"{len(nusc.ego_pose)} ego poses, {len(nusc.calibrated_sensor)} calibrations, {len(annotations)} "
               f"annotations: valid rotations and sizes")
    return CheckSection("tables", not lines, lines or [summary])


def check_files(nusc, sample_tokens: Sequence[str], *, decode: bool = True) -> CheckSection:
    """Every keyframe image of the split opens (and decodes) with the size of its table; camera sweeps exist.

    Sweeps: each camera's sample_data chain through the split's scenes is walked; every file must exist, the
    timestamps must increase, and every keyframe interval should hold sweeps if any does.
    """
    from PIL import Image

    dataroot = Path(nusc.dataroot)
    problems: list[str] = []
    opened, sizes = 0, set()
    for token in sample_tokens:
        sample = nusc.get("sample", token)
        if LIDAR_NAME not in sample["data"]:
            problems.append(f"sample {token}: no {LIDAR_NAME} keyframe (the metric needs its ego pose)")
        for channel in CAMERA_NAMES:
            if channel not in sample["data"]:
                problems.append(f"sample {token}: no {channel} keyframe")
                continue
            record = nusc.get("sample_data", sample["data"][channel])
            path = dataroot / record["filename"]
            try:
                with Image.open(path) as image:
                    if decode:
                        image.load()
                    size = image.size
            except (OSError, SyntaxError, ValueError) as err:
                problems.append(f"{path} ({channel} of sample {token}) does not open: {type(err).__name__}: {err}")
                continue
            opened += 1
            sizes.add(size)
            if size != (record["width"], record["height"]):
                problems.append(f"{path}: image is {size[0]}x{size[1]}, sample_data {record['token']} says "
                                f"{record['width']}x{record['height']}")
    scenes = list(dict.fromkeys(nusc.get("sample", token)["scene_token"] for token in sample_tokens))
    sweep_counts: dict[str, list[int]] = {channel: [] for channel in CAMERA_NAMES}
    missing_sweeps = 0
    for scene_token in scenes:
        first = nusc.get("sample", nusc.get("scene", scene_token)["first_sample_token"])
        for channel in CAMERA_NAMES:
            if channel not in first["data"]:
                continue
            record = nusc.get("sample_data", first["data"][channel])
            while record["prev"]:
                record = nusc.get("sample_data", record["prev"])
            between, last_time, seen_keyframe = 0, -math.inf, False
            while True:
                if record["timestamp"] <= last_time:
                    problems.append(f"{channel} sample_data {record['token']}: timestamp does not increase")
                last_time = record["timestamp"]
                if record["is_key_frame"]:
                    if seen_keyframe:
                        sweep_counts[channel].append(between)
                    seen_keyframe, between = True, 0
                else:
                    between += 1
                    if not (dataroot / record["filename"]).is_file():
                        missing_sweeps += 1
                        if missing_sweeps <= 3:
                            problems.append(f"sweep file {dataroot / record['filename']} ({channel}) is missing")
                if not record["next"]:
                    break
                record = nusc.get("sample_data", record["next"])
                if nusc.get("sample", record["sample_token"])["scene_token"] != scene_token:
                    break
    if missing_sweeps > 3:
        problems.append(f"... {missing_sweeps} sweep files missing in all")
    lines = []
    intervals = [c for counts in sweep_counts.values() for c in counts]  # sweeps between two keyframes
    if intervals and max(intervals) > 0 and min(intervals) == 0:
        problems.append(f"some keyframe intervals hold no camera sweeps while others hold up to {max(intervals)}")
    lines.append(f"{opened} keyframe images {'decoded' if decode else 'opened'}, sizes "
                 f"{sorted(f'{w}x{h}' for w, h in sizes)} match sample_data")
    if intervals:
        state = "none: use data.frame_source=keyframes" if max(intervals) == 0 else (
            f"{missing_sweeps} files missing" if missing_sweeps else "files present")
        lines.append(f"camera sweeps per keyframe interval: mean {np.mean(intervals):.1f} (min {min(intervals)}, "
                     f"max {max(intervals)}); {state}")
    return CheckSection("files", not problems, problems + lines)


# ---------------------------------------------------------------------------------------------------------------
# Ground truth through the prediction path
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class GroundTruthPrediction:
    """A sample's ground truth as the loader delivers it, posing as a prediction (score 1)."""

    meta: SampleMeta
    detections: Detections  # reference frame, as a model would output
    attributes: list[str] | None  # the annotations' own attributes (looked up by instance), None if unknown


def ground_truth_predictions(
    dataroot: str | Path,
    version: str,
    split: str,
    *,
    max_samples: int | None = None,
    num_workers: int = 0,
    nusc=None,
) -> list[GroundTruthPrediction]:
    """Push a split's ground truth through the data loader (test mode: no augmentation) as a model's output.

    The loader's `gt_boxes` are in the reference frame, exactly where a detector's boxes are. Attributes are not part
    of the batch, so they are looked up from the annotation of each box's instance (`meta.extra["instance_tokens"]`):
    the writer's speed rule cannot know e.g. a stopped vehicle from a parked one.
    """
    from torch.utils.data import DataLoader, Subset

    from ftkd.data.collate import collate
    from ftkd.data.config import DataConfig
    from ftkd.data.dataset import TemporalDataset

    config = DataConfig(
        dataroot=str(dataroot),
        version=version,
        val_split=split,
        num_past_frames=0,
        num_future_frames=0,
        frame_source="keyframes",
        image_size=(64, 176),  # only the boxes matter here; small images keep the pass cheap
        augment=False,
    )
    dataset = TemporalDataset(config, split, train=False)
    if max_samples is not None:
        dataset = Subset(dataset, range(min(max_samples, len(dataset))))
    loader = DataLoader(dataset, batch_size=4, num_workers=num_workers, collate_fn=collate)
    nusc = nusc if nusc is not None else load_nuscenes(dataroot, version)
    attribute_of = {
        (a["sample_token"], a["instance_token"]): (nusc.get("attribute", a["attribute_tokens"][0])["name"]
                                                  if a["attribute_tokens"] else "")
        for a in nusc.sample_annotation
    }
    predictions = []
    for batch in loader:
        for b, meta in enumerate(batch.meta):
            if not np.allclose(batch.ego_pose[b].numpy(), meta.ref_to_global, atol=1e-6):
                raise ValueError(f"sample {meta.sample_token}: the loader's ego_pose differs from meta.ref_to_global "
                                 f"in test mode: BEV augmentation is not off")
            boxes, labels = batch.gt_boxes[b], batch.gt_labels[b]
            instances = meta.extra.get("instance_tokens")
            attributes = None
            if instances is not None:
                attributes = [
                    attribute_of.get((meta.sample_token, t.decode() if isinstance(t, bytes) else str(t)), "")
                    for t in instances
                ]
            detections = Detections(boxes=boxes, scores=torch.ones(len(boxes)), labels=labels)
            predictions.append(GroundTruthPrediction(meta, detections, attributes))
    return predictions


def write_ground_truth_results(
    predictions: Sequence[GroundTruthPrediction], path: str | Path, sample_tokens: Sequence[str] | None = None
) -> Path:
    """The results writer's records of `predictions` (with their attributes when known), written atomically."""
    results = {p.meta.sample_token: detections_to_nuscenes(p.meta, p.detections, attributes=p.attributes)
               for p in predictions}
    return write_result_records(results, path, sample_tokens=sample_tokens)


# Known convention mistakes: each undoes one mistake on reference-frame boxes [M, 9] (float64 numpy). The context
# holds the sample's LIDAR_TOP -> ego transform ("lidar_to_ego") and reference -> global pose ("ref_to_global").
def _with(boxes: np.ndarray, column: int | slice, values: np.ndarray) -> np.ndarray:
    boxes = boxes.copy()
    boxes[:, column] = values
    return boxes


def _rigid(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a rigid transform to boxes (centres as points, velocities as vectors, yaw += rotation about z)."""
    rotation = matrix[:3, :3]
    centres = boxes[:, 0:3] @ rotation.T + matrix[:3, 3]
    velocity = np.concatenate([boxes[:, 7:9], np.zeros((len(boxes), 1))], axis=1) @ rotation.T  # [M, 3]
    yaw = boxes[:, 6] + math.atan2(rotation[1, 0], rotation[0, 0])
    return np.concatenate([centres, boxes[:, 3:6], yaw[:, None], velocity[:, :2]], axis=1)


MISTAKES: tuple[tuple[str, Callable[[np.ndarray, dict], np.ndarray]], ...] = (
    ("yaw sign flipped (yaw must be counter-clockwise about +z)", lambda b, c: _with(b, 6, -b[:, 6])),
    ("w and l swapped (size must be [w, l, h], l along the heading)", lambda b, c: _with(b, slice(3, 5), b[:, [4, 3]])),
    ("box z at the bottom face instead of the gravity centre", lambda b, c: _with(b, 2, b[:, 2] + b[:, 5] / 2)),
    ("box z at the top face instead of the gravity centre", lambda b, c: _with(b, 2, b[:, 2] - b[:, 5] / 2)),
    ("boxes in the LIDAR_TOP frame used as ego-frame boxes", lambda b, c: _rigid(b, c["lidar_to_ego"])),
    ("ego-frame boxes used as LIDAR_TOP-frame boxes", lambda b, c: _rigid(b, np.linalg.inv(c["lidar_to_ego"]))),
    ("yaw off by +90 degrees (heading along the box width)", lambda b, c: _with(b, 6, b[:, 6] - math.pi / 2)),
    ("yaw off by -90 degrees (heading along the box width)", lambda b, c: _with(b, 6, b[:, 6] + math.pi / 2)),
    ("old mmdet3d LiDAR box convention (yaw = -yaw - pi/2 with w/l swapped)",
     lambda b, c: _with(_with(b, 6, -b[:, 6] - math.pi / 2), slice(3, 5), b[:, [4, 3]])),
    ("heading reversed (yaw off by 180 degrees)", lambda b, c: _with(b, 6, b[:, 6] + math.pi)),
    ("velocity sign flipped", lambda b, c: _with(b, slice(7, 9), -b[:, 7:9])),
    ("global-frame velocity used as reference-frame velocity",
     lambda b, c: _with(b, slice(7, 9), b[:, 7:9] @ c["ref_to_global"][:2, :2])),
)


def _match_errors(truth: np.ndarray, truth_names: list[str], boxes: np.ndarray, names: list[str]) -> np.ndarray:
    """Per GT box, errors to the nearest written box of its class: [M, 5] = dxy, |dz|, max |dsize|, |dyaw|, |dv|.

    Rows with no box of the class are inf; |dv| is NaN where the GT velocity is unknown.
    """
    errors = np.full((len(truth), 5), np.inf)
    names_array = np.array(names)
    for i, (box, name) in enumerate(zip(truth, truth_names)):
        candidates = np.flatnonzero(names_array == name) if len(names) else np.zeros(0, dtype=np.int64)
        if len(candidates) == 0:
            continue
        j = candidates[np.argmin(np.linalg.norm(boxes[candidates, 0:3] - box[0:3], axis=1))]
        yaw_error = abs(math.remainder(boxes[j, 6] - box[6], 2 * math.pi))
        errors[i] = [
            np.linalg.norm(boxes[j, 0:2] - box[0:2]),
            abs(boxes[j, 2] - box[2]),
            np.abs(boxes[j, 3:6] - box[3:6]).max(),
            yaw_error,
            np.linalg.norm(boxes[j, 7:9] - box[7:9]),  # NaN when the GT velocity is unknown
        ]
    return errors


def _reproduced(errors: np.ndarray) -> np.ndarray:
    """[M, 5] errors -> [M, 5] bool per component (unknown GT velocity counts as reproduced)."""
    limits = np.array([POSITION_TOLERANCE, POSITION_TOLERANCE, SIZE_TOLERANCE, YAW_TOLERANCE, VELOCITY_TOLERANCE])
    ok = errors <= limits
    ok[:, 4] |= np.isnan(errors[:, 4])
    return ok


def compare_with_ground_truth(results_path: str | Path, nusc, sample_tokens: Sequence[str]) -> CheckSection:
    """Compare written records with the devkit's annotations box by box; on failure, name the likely mistake.

    Every annotation the metric scores (a detection class, lidar/radar points, within the class range) must have a
    written box of its class within the tolerances, for centre x/y, z, size, yaw and velocity.
    """
    from nuscenes.eval.common.config import config_factory
    from pyquaternion import Quaternion

    class_range = config_factory("detection_cvpr_2019").class_range
    results = json.loads(Path(results_path).read_text())["results"]
    per_sample = []
    for token in sample_tokens:
        truth = sample_ground_truth(nusc, token)
        distance = np.linalg.norm(truth.boxes[:, 0:2], axis=1)  # ego-frame xy distance
        keep = [i for i, name in enumerate(truth.names)
                if truth.num_points[i] > 0 and distance[i] < class_range[name]]
        boxes, names = records_to_boxes(results.get(token, []), truth.ref_to_global)
        lidar = nusc.get("sample_data", nusc.get("sample", token)["data"][LIDAR_NAME])
        calibration = nusc.get("calibrated_sensor", lidar["calibrated_sensor_token"])
        lidar_to_ego = np.eye(4)
        lidar_to_ego[:3, :3] = Quaternion(calibration["rotation"]).rotation_matrix
        lidar_to_ego[:3, 3] = calibration["translation"]
        context = {"lidar_to_ego": lidar_to_ego, "ref_to_global": truth.ref_to_global}
        per_sample.append((truth.boxes[keep], [truth.names[i] for i in keep], boxes, names, context))
    total = sum(len(s[1]) for s in per_sample)
    if total == 0:
        return CheckSection("ground truth through the prediction path", False,
                            ["no annotation in the split is scored by the metric (points > 0, within range)"])
    errors = np.concatenate([_match_errors(t, tn, b, n) for t, tn, b, n, _ in per_sample])  # [total, 5]
    component_ok = _reproduced(errors)
    fraction = component_ok.all(axis=1).mean()
    summary = (f"{fraction:.1%} of {total} scored GT boxes reproduced within {POSITION_TOLERANCE} m, "
               f"{SIZE_TOLERANCE} m size, {YAW_TOLERANCE} rad, {VELOCITY_TOLERANCE} m/s")
    if fraction == 1.0:
        return CheckSection("ground truth through the prediction path", True, [summary])
    lines = [summary]
    labels = ("centre x/y", "centre z", "size", "yaw", "velocity")
    for k, label in enumerate(labels):
        wrong = ~component_ok[:, k]
        if wrong.any():
            finite = errors[wrong, k][np.isfinite(errors[wrong, k])]
            median = f", median error {np.median(finite):.3f}" if len(finite) else ""
            lines.append(f"{label}: {wrong.mean():.1%} of boxes off{median}")
    explained = []
    for name, undo in MISTAKES:
        undone = np.concatenate([
            _match_errors(t, tn, undo(b, c) if len(b) else b, n) for t, tn, b, n, c in per_sample
        ])
        undone_fraction = _reproduced(undone).all(axis=1).mean()
        if undone_fraction > fraction and undone_fraction >= 0.9:
            explained.append((undone_fraction, name))
    if explained:
        best_fraction, best = max(explained, key=lambda item: item[0])  # the first listed among equals
        lines.insert(0, f"likely mistake: {best} (undoing it reproduces {best_fraction:.1%} of the boxes)")
    else:
        lines.insert(0, "no single known convention mistake explains the differences")
    return CheckSection("ground truth through the prediction path", False, lines)


METRIC_HINTS = {
    "trans_err": "box centres are off in x/y: a frame mistake (LIDAR_TOP vs ego, a missing or wrong ego pose)",
    "scale_err": "sizes differ: w and l swapped, or a size order other than [w, l, h]",
    "orient_err": "yaw differs: yaw sign, a +-90 degree offset, or a frame rotation",
    "vel_err": "velocities differ: sign, frame (not rotated into the reference frame) or units",
    "attr_err": "attributes differ from the annotations",
}


def check_metric(metrics: dict, undefined_velocity: set[str]) -> CheckSection:
    """GT-as-prediction must score AP = 1 and TP errors = 0 for every class present in the split."""
    present = metrics["present_classes"]
    lines = []
    low_ap = {name: metrics["mean_dist_aps"][name] for name in present
              if metrics["mean_dist_aps"][name] < 1 - METRIC_TOLERANCE}
    if low_ap:
        lines.append("AP below 1: " + ", ".join(f"{name} {ap:.3f}" for name, ap in low_ap.items())
                     + " (boxes missing, or centres more than 0.5 m off)")
    for metric in TP_METRICS:
        bad = {}
        for name in present:
            value = metrics["label_tp_errors"][name][metric]
            if metric == "vel_err" and name in undefined_velocity:
                continue  # the devkit scores 1 when no GT box of the class has a velocity
            if np.isfinite(value) and value > METRIC_TOLERANCE:
                bad[name] = value
        if bad:
            lines.append(f"{TP_SHORT[metric]} > 0 ({', '.join(f'{n} {v:.3f}' for n, v in bad.items())}): "
                         f"{METRIC_HINTS[metric]}")
    headline = (f"present classes ({len(present)}): NDS {metrics['nd_score_present']:.4f}, mAP "
                f"{metrics['mean_ap_present']:.4f}; devkit over all 10 classes: NDS {metrics['nd_score']:.4f}, "
                f"mAP {metrics['mean_ap']:.4f}")
    notes = [headline]
    missing = [name for name in DEVKIT_CLASSES if name not in present]
    if missing:
        notes.append(f"classes without GT in this split (the devkit scores them AP 0, errors 1): {missing}")
    if undefined_velocity:
        notes.append(f"no GT velocity (instances seen once) for {sorted(undefined_velocity)}: their AVE is 1 by the "
                     f"devkit's rule and is not checked")
    notes.append("the metric ignores z; z is checked box by box above")
    return CheckSection("official metric on GT-as-prediction", not lines, lines + notes)


def _undefined_velocity_classes(nusc, sample_tokens: Sequence[str]) -> set[str]:
    """Classes present in the split none of whose scored GT boxes has a velocity."""
    seen, with_velocity = set(), set()
    for token in sample_tokens:
        truth = sample_ground_truth(nusc, token)
        for box, name, points in zip(truth.boxes, truth.names, truth.num_points):
            if points > 0:
                seen.add(name)
                if np.isfinite(box[7:9]).all():
                    with_velocity.add(name)
    return seen - with_velocity


def _attribute_rule_agreement(predictions: Sequence[GroundTruthPrediction]) -> str:
    """How often the writer's class/speed attribute rule (used for model predictions) matches the annotations."""
    agree = total = 0
    for prediction in predictions:
        if prediction.attributes is None:
            continue
        records = detections_to_nuscenes(prediction.meta, prediction.detections)
        for record, attribute in zip(records, prediction.attributes):
            if attribute:
                total += 1
                agree += record["attribute_name"] == attribute
    if total == 0:
        return "attributes: none known to compare with the writer's speed rule"
    return (f"the writer's class/speed attribute rule (used for model outputs) matches {agree / total:.1%} of the "
            f"{total} annotated attributes (GT-as-prediction uses the annotations' own)")


def check_data(
    dataroot: str | Path,
    version: str,
    split: str,
    *,
    out_dir: str | Path | None = None,
    quick: bool = False,
    num_workers: int = 0,
) -> CheckReport:
    """All checks of `ftkd check-data` (see the module docstring).

    Args:
        dataroot, version, split: the dataset and split (custom splits.json names or devkit names).
        out_dir: where the GT-as-prediction results and metric files go (default: a temporary folder).
        quick: check only the split's first QUICK_SAMPLES samples, open image headers without decoding, and
            compare boxes directly without the official metric (which needs every sample of the split).
        num_workers: data loader workers.
    """
    if out_dir is None:
        with tempfile.TemporaryDirectory(prefix="ftkd_check_") as tmp:
            return check_data(dataroot, version, split, out_dir=tmp, quick=quick, num_workers=num_workers)
    out_dir = Path(out_dir)
    report = CheckReport(str(dataroot), version, split)
    nusc = load_nuscenes(dataroot, version)
    tokens = split_sample_tokens(nusc, split)
    checked = tokens[:QUICK_SAMPLES] if quick else tokens
    report.sections.append(check_tables(nusc))
    report.sections.append(check_files(nusc, checked, decode=not quick))
    try:
        predictions = ground_truth_predictions(
            dataroot, version, split, max_samples=len(checked), num_workers=num_workers, nusc=nusc
        )
    except (ValueError, OSError) as err:
        report.sections.append(CheckSection("ground truth through the prediction path", False,
                                            [f"the data loader failed: {type(err).__name__}: {err}"]))
        return report
    if not all(p.attributes is not None for p in predictions):
        logger.warning("the loader gives no meta.extra['instance_tokens']: attributes follow the writer's speed rule")
    results_path = write_ground_truth_results(predictions, out_dir / "gt_as_prediction.json",
                                              sample_tokens=None if quick else tokens)
    section = compare_with_ground_truth(results_path, nusc, checked)
    section.lines.append(_attribute_rule_agreement(predictions))
    report.sections.append(section)
    if not quick:
        report.metrics = evaluate(results_path, dataroot, version, split, out_dir / "metrics", nusc=nusc)
        report.sections.append(check_metric(report.metrics, _undefined_velocity_classes(nusc, tokens)))
    return report


def quick_check(dataroot: str | Path, version: str, split: str) -> list[str]:
    """The fast check `ftkd train` runs before training: problems found (empty = ok)."""
    return check_data(dataroot, version, split, quick=True).problems
