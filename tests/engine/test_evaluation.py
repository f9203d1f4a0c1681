"""Results writer (vs the devkit's Box transforms) and the official-metric wrapper (on the tiny synthetic set)."""

import json
import math

import numpy as np
import pytest
import torch
from pyquaternion import Quaternion

from ftkd.constants import CLASS_NAMES
from ftkd.data.results import (
    attribute_for,
    detections_to_nuscenes,
    records_to_boxes,
    write_result_records,
    write_results,
)
from ftkd.structures import Detections, SampleMeta


def _meta(token: str = "tok", yaw: float = 0.7, tilt: float = 0.02) -> SampleMeta:
    rotation = Quaternion(axis=[0, 0, 1], angle=yaw) * Quaternion(axis=[1, 0.3, 0], angle=tilt)
    pose = np.eye(4)
    pose[:3, :3] = rotation.rotation_matrix
    pose[:3, 3] = [612.3, 1804.9, 0.4]
    return SampleMeta(sample_token=token, scene_token="scene", timestamp=0.0, ref_to_global=pose)


def _detections(num: int = 12, seed: int = 0) -> Detections:
    g = torch.Generator().manual_seed(seed)
    boxes = torch.cat(
        [
            torch.rand(num, 3, generator=g) * 80 - 40,
            torch.rand(num, 3, generator=g) * 4 + 0.3,
            torch.rand(num, 1, generator=g) * 2 * math.pi - math.pi,
            torch.randn(num, 2, generator=g) * 3,
        ],
        dim=1,
    )
    labels = torch.arange(num) % len(CLASS_NAMES)
    return Detections(boxes=boxes, scores=torch.rand(num, generator=g), labels=labels)


def test_writer_matches_devkit_box_transforms():
    from nuscenes.utils.data_classes import Box

    meta, detections = _meta(), _detections()
    records = detections_to_nuscenes(meta, detections)
    pose_rotation = Quaternion(matrix=meta.ref_to_global[:3, :3])
    for box, score, label, record in zip(detections.boxes.double(), detections.scores, detections.labels, records):
        x, y, z, w, l, h, yaw, vx, vy = box.tolist()
        expected = Box([x, y, z], [w, l, h], Quaternion(axis=[0, 0, 1], angle=yaw), velocity=(vx, vy, 0.0))
        expected.rotate(pose_rotation)
        expected.translate(meta.ref_to_global[:3, 3])
        np.testing.assert_allclose(record["translation"], expected.center, atol=1e-9)
        np.testing.assert_allclose(record["size"], [w, l, h])
        np.testing.assert_allclose(Quaternion(record["rotation"]).rotation_matrix, expected.rotation_matrix, atol=1e-9)
        np.testing.assert_allclose(record["velocity"], expected.velocity[:2], atol=1e-9)
        assert record["detection_name"] == CLASS_NAMES[int(label)]
        assert record["detection_score"] == pytest.approx(float(score))
        assert record["sample_token"] == meta.sample_token


def test_records_to_boxes_inverts_the_writer():
    meta, detections = _meta(tilt=0.0), _detections()
    boxes, names = records_to_boxes(detections_to_nuscenes(meta, detections), meta.ref_to_global)
    expected = detections.boxes.double().numpy()
    yaw_error = np.angle(np.exp(1j * (boxes[:, 6] - expected[:, 6])))
    np.testing.assert_allclose(np.delete(boxes, 6, axis=1), np.delete(expected, 6, axis=1), atol=1e-5)
    np.testing.assert_allclose(yaw_error, 0, atol=1e-6)
    assert names == [CLASS_NAMES[int(i)] for i in detections.labels]


@pytest.mark.parametrize(
    "name, speed, expected",
    [
        ("car", 5.0, "vehicle.moving"),
        ("car", 0.1, "vehicle.parked"),
        ("bus", 0.1, "vehicle.stopped"),
        ("bus", 3.0, "vehicle.moving"),
        ("bicycle", 1.0, "cycle.with_rider"),
        ("motorcycle", 0.0, "cycle.without_rider"),
        ("pedestrian", 1.2, "pedestrian.moving"),
        ("pedestrian", 0.05, "pedestrian.standing"),
        ("barrier", 3.0, ""),
        ("traffic_cone", 0.0, ""),
    ],
)
def test_attribute_rule(name, speed, expected):
    assert attribute_for(name, speed) == expected


def test_writer_attribute_uses_global_speed():
    detections = Detections(
        boxes=torch.tensor(
            [[1.0, 2.0, 0.5, 1.8, 4.5, 1.6, 0.0, 0.0, 0.15], [1.0, 9.0, 0.5, 1.8, 4.5, 1.6, 0.0, 0.3, 0.0]]
        ),
        scores=torch.tensor([0.9, 0.8]),
        labels=torch.tensor([0, 0]),
    )
    records = detections_to_nuscenes(_meta(), detections)
    assert [r["attribute_name"] for r in records] == ["vehicle.parked", "vehicle.moving"]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.boxes.__setitem__((3, 0), float("nan")), "non-finite"),
        (lambda d: d.scores.__setitem__(1, float("inf")), "non-finite"),
        (lambda d: d.boxes.__setitem__((2, 4), -1.0), "non-positive size"),
        (lambda d: d.labels.__setitem__(0, 10), "label 10"),
    ],
)
def test_writer_rejects_bad_detections(change, message):
    detections = _detections()
    change(detections)
    with pytest.raises(ValueError, match=message) as info:
        detections_to_nuscenes(_meta("sample-x"), detections)
    assert "sample-x" in str(info.value)


def test_writer_rejects_bad_shapes_and_poses():
    detections = _detections()
    with pytest.raises(ValueError, match=r"\[M, 9\]"):
        detections_to_nuscenes(_meta(), Detections(detections.boxes[:, :7], detections.scores, detections.labels))
    scaled = _meta()
    scaled.ref_to_global[:3, :3] *= 1.05  # a BEV-augmented (scaled) pose instead of ref_to_global
    with pytest.raises(ValueError, match="rigid transform"):
        detections_to_nuscenes(scaled, detections)


def test_write_results_fills_missing_samples_atomically(tmp_path):
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.detection.data_classes import DetectionBox

    meta, detections = _meta("a"), _detections(5)
    path = write_results([(meta, detections), (meta, detections)], tmp_path / "out" / "results.json",
                         sample_tokens=["a", "b"])
    data = json.loads(path.read_text())
    assert set(data["results"]) == {"a", "b"} and data["results"]["b"] == []
    assert data["meta"]["use_camera"] is True
    boxes = EvalBoxes.deserialize(data["results"], DetectionBox)  # the devkit's own parser accepts it
    assert len(boxes.all) == 5
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temporary file left behind
    with pytest.raises(ValueError, match="not in the given sample_tokens"):
        write_result_records({"c": []}, tmp_path / "bad.json", sample_tokens=["a"])
    with pytest.raises(ValueError, match="predicted twice"):
        write_results([(meta, detections), (meta, _detections(5, seed=1))], tmp_path / "twice.json")


# ---------------------------------------------------------------------------------------------------------------
# The official metric on the tiny synthetic set (val split holds all 10 classes)
# ---------------------------------------------------------------------------------------------------------------

VERSION, SPLIT = "v1.0-synth", "synth_val"


@pytest.fixture(scope="module")
def annotation_results(annotation_records):
    """Scored ground truth copied from the annotation table (independent of ftkd's loader), devkit velocities."""
    return annotation_records(SPLIT)


def _evaluate(results, tmp_path, synth_root, synth_nusc):
    from ftkd.engine.evaluation import evaluate

    path = write_result_records(results, tmp_path / "results.json")
    return evaluate(path, synth_root, VERSION, SPLIT, tmp_path / "eval", nusc=synth_nusc)


def test_ground_truth_as_prediction_scores_one(annotation_results, tmp_path, synth_root, synth_nusc):
    from ftkd.engine.evaluation import format_metrics_table

    metrics = _evaluate(annotation_results, tmp_path, synth_root, synth_nusc)
    assert len(metrics["present_classes"]) == 10
    assert metrics["mean_ap"] == pytest.approx(1.0, abs=1e-9)
    assert metrics["nd_score"] == pytest.approx(1.0, abs=1e-9)
    assert metrics["nd_score_present"] == pytest.approx(1.0, abs=1e-9)
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["nd_score"] == metrics["nd_score"]
    table = format_metrics_table(metrics)
    assert "NDS" in table and "traffic_cone" in table and "1.0000" in table


def _shift_sideways(record, ego_xy, distance):
    """Move a box centre `distance` metres at right angles to the ego->box direction (its range stays the same,
    so the metric's class-range filter keeps exactly the same boxes)."""
    radial = np.asarray(record["translation"][:2]) - ego_xy
    side = np.array([-radial[1], radial[0]]) / np.linalg.norm(radial)
    x, y, z = record["translation"]
    return {**record, "translation": [x + distance * side[0], y + distance * side[1], z]}


PERTURBATIONS = {
    # name: (record change given the ego xy, the TP metric that must rise, its expected mean over the classes)
    "centre": (lambda r, ego: _shift_sideways(r, ego, 0.3), "trans_err", 0.3),
    "size": (lambda r, ego: {**r, "size": [v * 1.25 for v in r["size"]]}, "scale_err", 1 - 1 / 1.25**3),
    "yaw": (lambda r, ego: {**r, "rotation": list(Quaternion(axis=[0, 0, 1], angle=0.4) * Quaternion(r["rotation"]))},
            "orient_err", 0.4),
    "velocity": (lambda r, ego: {**r, "velocity": [r["velocity"][0], r["velocity"][1] + 0.8]}, "vel_err", 0.8),
}


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_perturbations_raise_the_expected_metric(name, annotation_results, tmp_path, synth_root, synth_nusc):
    from ftkd.engine.evaluation import sample_pose

    change, metric, expected = PERTURBATIONS[name]
    results = {
        token: [change(r, sample_pose(synth_nusc, token)[:2, 3]) for r in records]
        for token, records in annotation_results.items()
    }
    metrics = _evaluate(results, tmp_path, synth_root, synth_nusc)
    # Every error stays below the 0.5 m AP threshold. Means over the classes present keep the numbers exact.
    assert metrics["mean_ap_present"] == pytest.approx(1.0, abs=1e-9)
    for other in ("trans_err", "scale_err", "orient_err", "vel_err", "attr_err"):
        if other == metric:
            assert metrics["tp_errors_present"][other] == pytest.approx(expected, rel=0.02)
        else:
            assert metrics["tp_errors_present"][other] == pytest.approx(0.0, abs=1e-6)
    assert metrics["nd_score_present"] < 1.0


def test_missing_boxes_and_wrong_attributes_lower_map_and_raise_maae(annotation_results, tmp_path, synth_root,
                                                                      synth_nusc):
    flipped = {
        "vehicle.moving": "vehicle.parked", "vehicle.parked": "vehicle.moving", "vehicle.stopped": "vehicle.moving",
        "pedestrian.moving": "pedestrian.standing", "pedestrian.standing": "pedestrian.moving",
        "pedestrian.sitting_lying_down": "pedestrian.moving", "cycle.with_rider": "cycle.without_rider",
        "cycle.without_rider": "cycle.with_rider", "": "",
    }
    # Drop every second box of each class over the split (each class keeps at least one, so it still has TPs).
    seen: dict[str, int] = {}

    def keep(record: dict) -> bool:
        seen[record["detection_name"]] = seen.get(record["detection_name"], 0) + 1
        return seen[record["detection_name"]] % 2 == 1

    results = {t: [{**r, "attribute_name": flipped[r["attribute_name"]]} for r in records if keep(r)]
               for t, records in annotation_results.items()}
    metrics = _evaluate(results, tmp_path, synth_root, synth_nusc)
    assert 0.2 < metrics["mean_ap_present"] < 0.8
    assert metrics["tp_errors_present"]["attr_err"] == pytest.approx(1.0)
    assert metrics["tp_errors_present"]["trans_err"] == pytest.approx(0.0, abs=1e-6)


def test_bad_results_files_fail_with_one_clear_error(annotation_results, tmp_path, synth_root, synth_nusc):
    from ftkd.engine.evaluation import evaluate

    def run(results, match):
        path = tmp_path / "bad.json"
        path.write_text(json.dumps({"meta": {}, "results": results}))
        with pytest.raises(ValueError, match=match) as info:
            evaluate(path, synth_root, VERSION, SPLIT, tmp_path / "eval", nusc=synth_nusc)
        assert str(path) in str(info.value)

    tokens = list(annotation_results)
    run({t: annotation_results[t] for t in tokens[1:]}, "missing 1 of")
    token = next(t for t in tokens if annotation_results[t])
    wrong = dict(annotation_results)
    wrong[token] = [{**annotation_results[token][0], "detection_name": "Car"}] + annotation_results[token][1:]
    run(wrong, r"detection_name = 'Car' is not one of")
    wrong[token] = [{**annotation_results[token][0], "translation": [float("nan"), 0, 0]}]
    run(wrong, r"\.translation = .* expected 3 finite numbers")


def test_eval_command(annotation_results, tmp_path, synth_root, capsys):
    from ftkd.cli import main

    path = write_result_records(annotation_results, tmp_path / "results.json")
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(path), "--dataroot", str(synth_root), "--version", VERSION, "--split", SPLIT])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "official (10 classes)       1.0000  1.0000" in out
    assert (tmp_path / "results_eval" / "metrics.json").is_file()
    first = next(iter(annotation_results))
    missing = write_result_records({t: r for t, r in annotation_results.items() if t != first}, tmp_path / "bad.json")
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(missing), "--dataroot", str(synth_root), "--split", SPLIT])
    assert exit_info.value.code == 1
    assert f"{missing}: results are missing 1 of" in capsys.readouterr().out


def test_results_without_any_detection_score_zero(annotation_results, tmp_path, synth_root, synth_nusc):
    metrics = _evaluate({token: [] for token in annotation_results}, tmp_path, synth_root, synth_nusc)
    assert metrics["num_pred_boxes"] == 0
    assert metrics["mean_ap"] == 0.0 and metrics["nd_score"] == 0.0
    assert metrics["tp_errors"]["trans_err"] == pytest.approx(1.0)
