"""The official nuScenes detection metric (nuscenes-devkit `DetectionEval`, config detection_cvpr_2019), unchanged.

We only (1) check the results JSON first, so a bad file fails with one message naming the file and field instead
of a devkit assertion, (2) add means over the classes present in the split's ground truth (the devkit counts an
absent class as AP 0 and TP errors 1), and (3) format the summary table.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ftkd.data.results import ATTRIBUTE_NAMES, MAX_BOXES_PER_SAMPLE

logger = logging.getLogger(__name__)

EVAL_CONFIG = "detection_cvpr_2019"
TP_METRICS: tuple[str, ...] = ("trans_err", "scale_err", "orient_err", "vel_err", "attr_err")
TP_SHORT = {"trans_err": "mATE", "scale_err": "mASE", "orient_err": "mAOE", "vel_err": "mAVE", "attr_err": "mAAE"}
# The detection classes in the devkit's order (the order of its tables).
DEVKIT_CLASSES: tuple[str, ...] = (
    "car",
    "truck",
    "bus",
    "trailer",
    "construction_vehicle",
    "pedestrian",
    "motorcycle",
    "bicycle",
    "traffic_cone",
    "barrier",
)


def load_nuscenes(dataroot: str | Path, version: str):
    """The devkit's NuScenes object, with a clear error when the version folder is missing."""
    table_root = Path(dataroot) / version
    if not table_root.is_dir():
        raise FileNotFoundError(
            f"no nuScenes tables at {table_root} (dataroot {dataroot!r}, version {version!r}); expected a folder "
            f"with category.json, sample.json, ... (synthetic sets use version 'v1.0-synth')"
        )
    from nuscenes import NuScenes

    with contextlib.redirect_stdout(io.StringIO()):
        return NuScenes(version=version, dataroot=str(dataroot), verbose=False)


def split_sample_tokens(nusc, split: str) -> list[str]:
    """Sample tokens of a split, in dataset order, as the devkit selects them (custom splits.json or predefined)."""
    from nuscenes.utils.splits import create_splits_scenes, get_scenes_of_split, is_predefined_split

    if not is_predefined_split(split):
        splits_file = Path(nusc.dataroot) / nusc.version / "splits.json"
        custom = json.loads(splits_file.read_text()) if splits_file.is_file() else {}
        if split not in custom:
            raise ValueError(
                f"unknown split {split!r}: not in {splits_file} (has {sorted(custom)}) nor a predefined devkit split "
                f"{sorted(create_splits_scenes())}"
            )
    scene_names = set(get_scenes_of_split(split, nusc))
    scenes = {scene["token"] for scene in nusc.scene if scene["name"] in scene_names}
    tokens = [sample["token"] for sample in nusc.sample if sample["scene_token"] in scenes]
    if not tokens:
        raise ValueError(f"split {split!r} selects no samples of {nusc.dataroot}/{nusc.version}")
    return tokens


@dataclass
class SampleGroundTruth:
    """The detection ground truth of one sample as the official metric reads it, in the reference (ego) frame."""

    ref_to_global: np.ndarray  # [4, 4] ego pose of the sample's LIDAR_TOP keyframe (the devkit's ego position)
    boxes: np.ndarray  # [M, 9] float64 (ftkd box layout); velocity NaN where the devkit cannot derive it
    names: list[str]  # detection class names
    attributes: list[str]  # '' where the annotation has none
    num_points: np.ndarray  # [M] num_lidar_pts + num_radar_pts (0 -> ignored by the metric)
    instance_tokens: list[str]


def sample_pose(nusc, sample_token: str) -> np.ndarray:
    """[4, 4] ego -> global at the sample's LIDAR_TOP keyframe (the pose `add_center_dist` of the metric uses)."""
    from pyquaternion import Quaternion

    sample = nusc.get("sample", sample_token)
    if "LIDAR_TOP" not in sample["data"]:
        raise ValueError(f"sample {sample_token} has no LIDAR_TOP keyframe sample_data (the metric needs its ego pose)")
    pose = nusc.get("ego_pose", nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["ego_pose_token"])
    matrix = np.eye(4)
    matrix[:3, :3] = Quaternion(pose["rotation"]).rotation_matrix
    matrix[:3, 3] = pose["translation"]
    return matrix


def sample_ground_truth(nusc, sample_token: str) -> SampleGroundTruth:
    """Detection-class annotations of a sample moved into its reference frame with the devkit's own `Box` ops."""
    from nuscenes.eval.detection.utils import category_to_detection_name
    from nuscenes.utils.data_classes import Box
    from pyquaternion import Quaternion

    ref_to_global = sample_pose(nusc, sample_token)
    pose_rotation = Quaternion(matrix=ref_to_global[:3, :3], atol=1e-6)
    boxes, names, attributes, num_points, instances = [], [], [], [], []
    for token in nusc.get("sample", sample_token)["anns"]:
        annotation = nusc.get("sample_annotation", token)
        name = category_to_detection_name(annotation["category_name"])
        if name is None:
            continue
        velocity = nusc.box_velocity(token)
        box = Box(annotation["translation"], annotation["size"], Quaternion(annotation["rotation"]), velocity=velocity)
        box.translate(-ref_to_global[:3, 3])
        box.rotate(pose_rotation.inverse)
        yaw = float(np.arctan2(box.rotation_matrix[1, 0], box.rotation_matrix[0, 0]))
        boxes.append([*box.center, *box.wlh, yaw, *box.velocity[:2]])
        names.append(name)
        attribute_tokens = annotation["attribute_tokens"]
        attributes.append(nusc.get("attribute", attribute_tokens[0])["name"] if attribute_tokens else "")
        num_points.append(annotation["num_lidar_pts"] + annotation["num_radar_pts"])
        instances.append(annotation["instance_token"])
    return SampleGroundTruth(
        ref_to_global=ref_to_global,
        boxes=np.array(boxes, dtype=np.float64).reshape(-1, 9),
        names=names,
        attributes=attributes,
        num_points=np.array(num_points, dtype=np.int64),
        instance_tokens=instances,
    )


def _finite_numbers(value, length: int) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) == length
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    )


def check_results(results_path: str | Path, sample_tokens: Sequence[str]) -> dict:
    """Load and validate an official results JSON against the split's samples; returns the parsed JSON.

    Raises ValueError naming the file and the offending field: missing/extra samples, unknown class or attribute
    names, malformed or non-finite numbers, non-positive sizes, more than 500 boxes per sample.
    """
    from nuscenes.eval.detection.constants import DETECTION_NAMES

    path = Path(results_path)
    if not path.is_file():
        raise FileNotFoundError(f"results file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not (isinstance(data, dict) and isinstance(data.get("results"), dict) and isinstance(data.get("meta"), dict)):
        raise ValueError(f"{path}: expected an object with a 'meta' object and a 'results' object {{token: [...]}}")
    results = data["results"]
    expected = set(sample_tokens)
    missing = [token for token in sample_tokens if token not in results]
    if missing:
        raise ValueError(
            f"{path}: results are missing {len(missing)} of the split's {len(expected)} samples (e.g. {missing[:3]}); "
            f"every sample needs an entry, an empty list if nothing was detected"
        )
    extra = [token for token in results if token not in expected]
    if extra:
        raise ValueError(f"{path}: results hold {len(extra)} samples that are not in the split (e.g. {extra[:3]})")
    for token, records in results.items():
        where = f"{path}: results[{token!r}]"
        if not isinstance(records, list):
            raise ValueError(f"{where}: expected a list of boxes, got {type(records).__name__}")
        if len(records) > MAX_BOXES_PER_SAMPLE:
            raise ValueError(f"{where}: {len(records)} boxes, at most {MAX_BOXES_PER_SAMPLE} are allowed")
        for i, record in enumerate(records):
            field = f"{where}[{i}]"
            if not isinstance(record, dict):
                raise ValueError(f"{field}: expected an object, got {type(record).__name__}")
            if record.get("sample_token") != token:
                raise ValueError(f"{field}.sample_token = {record.get('sample_token')!r}, expected {token!r}")
            name = record.get("detection_name")
            if name not in DETECTION_NAMES:
                raise ValueError(f"{field}.detection_name = {name!r} is not one of {sorted(DETECTION_NAMES)}")
            attribute = record.get("attribute_name")
            if attribute != "" and attribute not in ATTRIBUTE_NAMES:
                raise ValueError(f"{field}.attribute_name = {attribute!r} is not '' or one of {list(ATTRIBUTE_NAMES)}")
            for key, length in (("translation", 3), ("size", 3), ("rotation", 4)):
                if not _finite_numbers(record.get(key), length):
                    raise ValueError(f"{field}.{key} = {record.get(key)!r}, expected {length} finite numbers")
            velocity = record.get("velocity")
            if not (
                isinstance(velocity, (list, tuple))
                and len(velocity) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in velocity)
            ):
                raise ValueError(f"{field}.velocity = {velocity!r}, expected 2 numbers (m/s, global; NaN if unknown)")
            if min(record["size"]) <= 0:
                raise ValueError(f"{field}.size = {record['size']}, expected positive [w, l, h] in metres")
            if abs(np.linalg.norm(record["rotation"]) - 1.0) > 1e-3:
                raise ValueError(f"{field}.rotation = {record['rotation']}, expected a unit quaternion [w, x, y, z]")
            score = record.get("detection_score")
            if not (isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score)):
                raise ValueError(f"{field}.detection_score = {score!r}, expected a finite number")
    return data


def present_class_metrics(summary: dict, present: Sequence[str]) -> dict:
    """mAP, TP errors and NDS averaged over `present` classes only, with the devkit's formulas and NaN rules."""
    from nuscenes.eval.common.config import config_factory

    config = config_factory(EVAL_CONFIG)
    if not present:
        return {"present_classes": [], "mean_ap_present": 0.0, "tp_errors_present": {}, "nd_score_present": 0.0}
    mean_ap = float(np.mean([summary["mean_dist_aps"][name] for name in present]))
    tp_errors = {}
    for metric in TP_METRICS:
        values = np.array([summary["label_tp_errors"][name][metric] for name in present], dtype=np.float64)
        tp_errors[metric] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    # The devkit's NDS: max(0, 1 - error) per TP metric (a NaN error contributes 0, as there).
    tp_scores = [max(0.0, 1.0 - value) for value in tp_errors.values()]
    nd_score = (config.mean_ap_weight * mean_ap + float(np.sum(tp_scores))) / (config.mean_ap_weight + len(tp_scores))
    return {
        "present_classes": list(present),
        "mean_ap_present": mean_ap,
        "tp_errors_present": tp_errors,
        "nd_score_present": float(nd_score),
    }


def evaluate(
    results_path: str | Path,
    dataroot: str | Path,
    version: str,
    split: str,
    out_dir: str | Path,
    *,
    verbose: bool = False,
    nusc=None,
) -> dict:
    """Run the official detection metric on a results JSON and write `out_dir/metrics.json`.

    Args:
        results_path: official results JSON (global frame) with an entry for every sample of `split`.
        dataroot, version, split: the nuScenes-format dataset and the split evaluated (custom `splits.json`
            names or the devkit's predefined ones).
        out_dir: where the devkit writes metrics_summary.json / metrics_details.json and we write metrics.json.
        verbose: let the devkit print its progress and table.
        nusc: an already loaded NuScenes object for (dataroot, version), to avoid loading the tables twice.
    Returns:
        The devkit's metrics summary (mean_ap, nd_score, tp_errors, mean_dist_aps, label_tp_errors, ...) plus
        present_classes, mean_ap_present, tp_errors_present, nd_score_present (means over classes with GT).
    """
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval

    start = time.time()
    if nusc is None:
        nusc = load_nuscenes(dataroot, version)
    tokens = split_sample_tokens(nusc, split)
    data = check_results(results_path, tokens)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scored_path = Path(results_path)
    if not any(data["results"].values()):
        # The devkit cannot read a results file without a single box (filter_eval_boxes fails). The metric of "no
        # detections" is well defined (AP 0, TP errors 1), so hand the devkit one placeholder box 10 km from the
        # ego: its own class-range filter removes it before anything is scored.
        logger.warning("%s holds no detections at all: every class scores AP 0 and TP errors 1", results_path)
        placeholder = {
            "sample_token": tokens[0],
            "translation": (sample_pose(nusc, tokens[0])[:3, 3] + [1e4, 0.0, 0.0]).tolist(),
            "size": [1.0, 1.0, 1.0],
            "rotation": [1.0, 0.0, 0.0, 0.0],
            "velocity": [0.0, 0.0],
            "detection_name": "car",
            "detection_score": 0.0,
            "attribute_name": "",
        }
        scored_path = out_dir / "results_with_placeholder.json"
        data["results"][tokens[0]] = [placeholder]
        scored_path.write_text(json.dumps(data))
    # The devkit always prints its table (and tqdm bars); keep them out of our logs unless asked for.
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    quiet_errors = contextlib.nullcontext() if verbose else contextlib.redirect_stderr(io.StringIO())
    with quiet, quiet_errors:
        evaluator = DetectionEval(
            nusc,
            config=config_factory(EVAL_CONFIG),
            result_path=str(scored_path),
            eval_set=split,
            output_dir=str(out_dir),
            verbose=verbose,
        )
        summary = evaluator.main(plot_examples=0, render_curves=False)
    present = [name for name in DEVKIT_CLASSES if name in {box.detection_name for box in evaluator.gt_boxes.all}]
    metrics = dict(summary)
    metrics.update(present_class_metrics(summary, present))
    metrics["split"] = split
    metrics["results_path"] = str(results_path)
    metrics["num_gt_boxes"] = len(evaluator.gt_boxes.all)
    metrics["num_pred_boxes"] = len(evaluator.pred_boxes.all)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    logger.info(
        "evaluated %s on %s in %.1f s: NDS %.4f mAP %.4f",
        results_path, split, time.time() - start, metrics["nd_score"], metrics["mean_ap"],
    )
    return metrics


def format_metrics_table(metrics: dict) -> str:
    """The summary a person reads: headline metrics (devkit and present-class means) and per-class AP/TP errors."""
    present = metrics.get("present_classes", list(DEVKIT_CLASSES))
    lines = [f"nuScenes detection metrics ({EVAL_CONFIG}) on split {metrics.get('split', '?')}"]
    header = f"{'':<26}{'NDS':>8}{'mAP':>8}" + "".join(f"{TP_SHORT[m]:>8}" for m in TP_METRICS)
    lines.append(header)
    lines.append(
        f"{'official (10 classes)':<26}{metrics['nd_score']:>8.4f}{metrics['mean_ap']:>8.4f}"
        + "".join(f"{metrics['tp_errors'][m]:>8.4f}" for m in TP_METRICS)
    )
    if "nd_score_present" in metrics:
        label = f"present classes ({len(present)})"
        lines.append(
            f"{label:<26}{metrics['nd_score_present']:>8.4f}{metrics['mean_ap_present']:>8.4f}"
            + "".join(f"{metrics['tp_errors_present'].get(m, float('nan')):>8.4f}" for m in TP_METRICS)
        )
    lines.append("")
    lines.append(f"{'class':<22}{'AP':>8}{'ATE':>8}{'ASE':>8}{'AOE':>8}{'AVE':>8}{'AAE':>8}  GT")
    for name in DEVKIT_CLASSES:
        errors = metrics["label_tp_errors"][name]
        lines.append(
            f"{name:<22}{metrics['mean_dist_aps'][name]:>8.3f}"
            + "".join(f"{errors[m]:>8.3f}" for m in TP_METRICS)
            + ("  yes" if name in present else "  none")
        )
    if "num_gt_boxes" in metrics:
        lines.append(
            f"\n{metrics['num_gt_boxes']} GT boxes, {metrics['num_pred_boxes']} predictions after the metric's "
            f"filters (class range, GT with lidar/radar points)"
        )
    return "\n".join(lines)
