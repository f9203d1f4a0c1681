"""check-data: clean ground truth passes the prediction path; each injected convention mistake is caught and named."""

import dataclasses
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pyquaternion import Quaternion

from ftkd.data.check import (
    check_data,
    check_files,
    check_metric,
    check_tables,
    compare_with_ground_truth,
    ground_truth_predictions,
    quick_check,
    write_ground_truth_results,
)
from ftkd.engine.evaluation import evaluate, load_nuscenes, split_sample_tokens
from ftkd.structures import Detections
from ftkd.structures.boxes import transform_boxes

VERSION, SPLIT = "v1.0-synth", "synth_val"


@pytest.fixture(scope="module")
def nusc(synth_root):
    return load_nuscenes(synth_root, VERSION)


@pytest.fixture(scope="module")
def gt_predictions(synth_root, nusc):
    return ground_truth_predictions(synth_root, VERSION, SPLIT, nusc=nusc)


def _ego_to_lidar(nusc, sample_token: str) -> torch.Tensor:
    """From the devkit tables: ego -> LIDAR_TOP frame of the sample's lidar keyframe."""
    lidar = nusc.get("sample_data", nusc.get("sample", sample_token)["data"]["LIDAR_TOP"])
    calibration = nusc.get("calibrated_sensor", lidar["calibrated_sensor_token"])
    lidar_to_ego = np.eye(4)
    lidar_to_ego[:3, :3] = Quaternion(calibration["rotation"]).rotation_matrix
    lidar_to_ego[:3, 3] = calibration["translation"]
    return torch.from_numpy(np.linalg.inv(lidar_to_ego))


def _z_at_bottom(boxes, nusc, token):
    boxes = boxes.clone()
    boxes[:, 2] -= boxes[:, 5] / 2
    return boxes


MISTAKES = {
    # injected mistake: (transform of the loader's reference-frame boxes, words the report must contain, what the
    # official metric shows: the TP metric it flags, None = blind to it, "" = depends on the data).
    # A yaw sign flip is invisible to the metric for headings of 0 or pi (most boxes on straight synthetic roads):
    # the box-by-box comparison names it regardless.
    "yaw sign": (lambda b, nusc, t: torch.cat([b[:, :6], -b[:, 6:7], b[:, 7:]], 1), "yaw sign flipped", ""),
    "w/l swap": (lambda b, nusc, t: b[:, [0, 1, 2, 4, 3, 5, 6, 7, 8]], "w and l swapped", "mASE"),
    "z at bottom": (_z_at_bottom, "box z at the bottom face", None),
    "lidar frame": (lambda b, nusc, t: transform_boxes(b.double(), _ego_to_lidar(nusc, t)).float(),
                    "boxes in the LIDAR_TOP frame used as ego-frame boxes", "mATE"),
}


def test_clean_ground_truth_survives_the_prediction_path(gt_predictions, nusc, synth_root, tmp_path):
    tokens = split_sample_tokens(nusc, SPLIT)
    assert [p.meta.sample_token for p in gt_predictions] == tokens
    assert all(p.attributes is not None for p in gt_predictions)
    path = write_ground_truth_results(gt_predictions, tmp_path / "gt.json", sample_tokens=tokens)
    section = compare_with_ground_truth(path, nusc, tokens)
    assert section.ok, section.lines
    metrics = evaluate(path, synth_root, VERSION, SPLIT, tmp_path / "eval", nusc=nusc)
    assert metrics["mean_ap_present"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["nd_score_present"] == pytest.approx(1.0, abs=1e-4)
    assert check_metric(metrics, set()).ok


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_each_injected_mistake_is_caught_and_named(mistake, gt_predictions, nusc, synth_root, tmp_path):
    transform, words, metric_name = MISTAKES[mistake]
    broken = [
        dataclasses.replace(
            p,
            detections=Detections(
                transform(p.detections.boxes, nusc, p.meta.sample_token), p.detections.scores, p.detections.labels
            ),
        )
        for p in gt_predictions
    ]
    tokens = split_sample_tokens(nusc, SPLIT)
    path = write_ground_truth_results(broken, tmp_path / "broken.json", sample_tokens=tokens)
    section = compare_with_ground_truth(path, nusc, tokens)
    assert not section.ok
    assert section.lines[0].startswith(f"likely mistake: {words}"), section.lines
    metric = check_metric(evaluate(path, synth_root, VERSION, SPLIT, tmp_path / "eval", nusc=nusc), set())
    if metric_name is None:  # the official metric is blind to z: only the box-by-box comparison sees it
        assert metric.ok
    elif metric_name:
        assert not metric.ok and any(metric_name in line for line in metric.lines), metric.lines


def test_check_data_report_passes_on_the_synthetic_set(synth_root, tmp_path):
    report = check_data(synth_root, VERSION, SPLIT, out_dir=tmp_path)
    text = report.format()
    assert report.ok, text
    assert "PASSED" in text and "NDS" in text
    assert quick_check(synth_root, VERSION, SPLIT) == []


def test_file_problems_are_reported(synth_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(synth_root, root)
    broken = load_nuscenes(root, VERSION)
    tokens = split_sample_tokens(broken, SPLIT)
    image = root / broken.get("sample_data", broken.get("sample", tokens[0])["data"]["CAM_BACK"])["filename"]
    image.write_bytes(image.read_bytes()[:100])  # truncated JPEG
    sweep = next(sd for sd in broken.sample_data
                 if not sd["is_key_frame"] and sd["sample_token"] in tokens and sd["filename"].startswith("sweeps/CAM"))
    (root / sweep["filename"]).unlink()
    section = check_files(broken, tokens)
    assert not section.ok
    text = "\n".join(section.lines)
    assert f"{image} (CAM_BACK of sample {tokens[0]}) does not open" in text
    assert f"sweep file {root / sweep['filename']}" in text and "is missing" in text


def test_table_problems_are_reported():
    def record(token, **fields):
        return {"token": token, **fields}

    # CAM_FRONT_LEFT of the real rig, and the same quaternion stored in [x, y, z, w] order.
    camera = record("cam", sensor_token="s_cam", translation=[1.5, 0.5, 1.5],
                    rotation=[0.6757, -0.6736, 0.2121, -0.2112],
                    camera_intrinsic=[[1266, 0, 816], [0, 1266, 491], [0, 0, 1]])
    swapped = dict(camera, token="cam_xyzw", rotation=camera["rotation"][1:] + camera["rotation"][:1])
    tables = {
        "sensor": [record("s_cam", channel="CAM_FRONT_LEFT", modality="camera")],
        "ego_pose": [record("p1", rotation=[1, 0, 0, 0], translation=[0, 0, 0]),
                     record("p2", rotation=[0.5, 0.5, 0, 0], translation=[0, 0, 0])],
        "calibrated_sensor": [camera, swapped],
        "sample_annotation": [record("a1", rotation=[1, 0, 0, 0], size=[1.9, 4.6, -1.0])],
    }
    by_token = {(name, r["token"]): r for name, rows in tables.items() for r in rows}
    fake = SimpleNamespace(**tables, get=lambda name, token: by_token[(name, token)])
    section = check_tables(fake)
    text = "\n".join(section.lines)
    assert not section.ok
    assert "ego_pose records have a non-unit" in text  # p2 is not a unit quaternion
    assert "calibrated_sensor cam_xyzw (CAM_FRONT_LEFT): optical axis" in text and "calibrated_sensor cam " not in text
    assert "non-positive size" in text
