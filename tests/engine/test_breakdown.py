"""AP per distance band and visibility level (ftkd.engine.breakdown): on the tiny synthetic set against the official
metric, and the visibility "ignore" rule on hand-made boxes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ftkd.data.results import write_result_records

VERSION, SPLIT = "v1.0-synth", "synth_val"


@pytest.fixture(scope="module")
def scored_ground_truth(synth_nusc):
    """{sample token: [(record, visibility token, xy distance from the ego)]} for every annotation the metric scores
    (detection class, with lidar points), read from the annotation table; records score 1."""
    from nuscenes.eval.detection.utils import category_to_detection_name

    from ftkd.engine.evaluation import sample_pose, split_sample_tokens

    out = {}
    for token in split_sample_tokens(synth_nusc, SPLIT):
        ego_xy = sample_pose(synth_nusc, token)[:2, 3]
        entries = []
        for ann_token in synth_nusc.get("sample", token)["anns"]:
            ann = synth_nusc.get("sample_annotation", ann_token)
            name = category_to_detection_name(ann["category_name"])
            if name is None or ann["num_lidar_pts"] + ann["num_radar_pts"] == 0:
                continue
            record = {"sample_token": token, "translation": ann["translation"], "size": ann["size"],
                      "rotation": ann["rotation"], "velocity": [0.0, 0.0], "detection_name": name,
                      "detection_score": 1.0, "attribute_name": ""}
            distance = float(np.linalg.norm(np.asarray(ann["translation"][:2]) - ego_xy))
            entries.append((record, ann["visibility_token"], distance))
        out[token] = entries
    return out


def _breakdown(results, tmp_path, synth_root, synth_nusc, **kwargs):
    from ftkd.engine.breakdown import breakdown

    path = write_result_records(results, tmp_path / "results.json")
    return breakdown(path, synth_root, VERSION, SPLIT, nusc=synth_nusc, **kwargs)


def test_ground_truth_scores_one_in_every_subset_and_bands_partition_the_ground_truth(
    scored_ground_truth, tmp_path, synth_root, synth_nusc
):
    from ftkd.engine.evaluation import evaluate

    results = {token: [record for record, _, _ in entries] for token, entries in scored_ground_truth.items()}
    out = _breakdown(results, tmp_path, synth_root, synth_nusc, out_path=tmp_path / "run" / "breakdown.json")
    assert json.loads((tmp_path / "run" / "breakdown.json").read_text())["distance"] == out["distance"]
    subsets = [out["all"], *out["distance"].values(), *out["visibility"].values()]
    non_empty = [s for s in subsets if s["num_gt"] > 0]
    assert len(non_empty) == 8  # the tiny val split has boxes in every band and at every visibility level
    for subset in non_empty:
        assert subset["mAP"] == pytest.approx(1.0)
        assert all(ap == pytest.approx(1.0) for ap in subset["per_class_AP"].values())
    # The bands partition the ground truth the metric scores (its own count, from the devkit's DetectionEval).
    official = evaluate(tmp_path / "results.json", synth_root, VERSION, SPLIT, tmp_path / "eval", nusc=synth_nusc)
    assert sum(band["num_gt"] for band in out["distance"].values()) == out["all"]["num_gt"] == official["num_gt_boxes"]
    assert sum(level["num_gt"] for level in out["visibility"].values()) + out["num_gt_unknown_visibility"] == (
        official["num_gt_boxes"])
    # Class ranges of the metric: beyond 40 m only the classes scored up to 50 m remain.
    assert set(out["distance"][">40"]["per_class_AP"]) <= {"car", "truck", "bus", "trailer", "construction_vehicle"}
    # Counts per band and level, from the annotation table (the metric keeps boxes closer than the class range).
    from nuscenes.eval.common.config import config_factory

    class_range = config_factory("detection_cvpr_2019").class_range
    kept = [(r, v, d) for entries in scored_ground_truth.values() for r, v, d in entries
            if d < class_range[r["detection_name"]]]
    assert out["distance"]["20-40"]["num_gt"] == sum(20 <= d < 40 for _, _, d in kept)
    assert {k: s["num_gt"] for k, s in out["visibility"].items()} == {
        level: sum(v == level for _, v, _ in kept) for level in ("1", "2", "3", "4")}
    assert out["visibility"]["1"]["level"] == "v0-40"


def test_overall_map_equals_the_official_metric_on_imperfect_predictions(
    scored_ground_truth, tmp_path, synth_root, synth_nusc
):
    from ftkd.engine.evaluation import evaluate

    rng = np.random.default_rng(0)
    results = {}
    for token, entries in scored_ground_truth.items():
        records = []
        for i, (record, _, _) in enumerate(entries):
            if i % 3 == 2:
                continue  # a missed object
            x, y, z = record["translation"]
            shift = rng.normal(0.0, 0.8, size=2)
            records.append({**record, "translation": [x + shift[0], y + shift[1], z],
                            "detection_score": float(rng.uniform(0.1, 1.0))})
            if i % 4 == 0:  # a false positive 6 m away
                records.append({**record, "translation": [x + 6.0, y, z], "detection_score": float(rng.uniform())})
        results[token] = records
    out = _breakdown(results, tmp_path, synth_root, synth_nusc)
    official = evaluate(tmp_path / "results.json", synth_root, VERSION, SPLIT, tmp_path / "eval", nusc=synth_nusc)
    assert 0.1 < out["all"]["mAP"] < 0.9
    assert out["all"]["mAP"] == pytest.approx(official["mean_ap_present"], abs=1e-12)
    assert out["all"]["per_class_AP"] == pytest.approx(
        {name: official["mean_dist_aps"][name] for name in official["present_classes"]}, abs=1e-12)
    assert out["num_pred"] == official["num_pred_boxes"]


def test_dropping_one_band_zeroes_only_that_band(scored_ground_truth, tmp_path, synth_root, synth_nusc):
    results = {token: [record for record, _, distance in entries if not 20.0 <= distance < 40.0]
               for token, entries in scored_ground_truth.items()}
    out = _breakdown(results, tmp_path, synth_root, synth_nusc)
    assert out["distance"]["20-40"]["num_gt"] > 0 and out["distance"]["20-40"]["num_pred"] == 0
    assert out["distance"]["20-40"]["mAP"] == 0.0
    assert out["distance"]["0-20"]["mAP"] == pytest.approx(1.0)
    assert out["distance"][">40"]["mAP"] == pytest.approx(1.0)
    assert out["all"]["mAP"] < 1.0


def test_predictions_of_other_visibility_levels_are_ignored(scored_ground_truth, tmp_path, synth_root, synth_nusc):
    """Perfect predictions of visibility-1 boxes score above those of visibility-4 boxes: counted as false positives
    they would lower the visibility-4 AP; ignored, it stays 1."""
    from nuscenes.eval.common.config import config_factory

    from ftkd.engine.breakdown import select_boxes, load_eval_set, subset_metrics
    from ftkd.engine.evaluation import split_sample_tokens

    results = {token: [{**record, "detection_score": 0.9 if visibility == "1" else 0.5}
                       for record, visibility, _ in entries if visibility in ("1", "4")]
               for token, entries in scored_ground_truth.items()}
    out = _breakdown(results, tmp_path, synth_root, synth_nusc)
    level_4, level_1 = out["visibility"]["4"], out["visibility"]["1"]
    assert level_4["num_gt"] > 0 and level_1["num_gt"] > 0
    assert level_4["mAP"] == pytest.approx(1.0) and level_1["mAP"] == pytest.approx(1.0)
    assert level_4["num_pred_ignored"]["2.0"] == out["num_pred"] - level_4["num_gt"]
    assert out["visibility"]["2"]["mAP"] == pytest.approx(0.0)  # its boxes were not predicted at all
    # Without the rule (the level's GT against every prediction) the visibility-1 predictions are false positives.
    config = config_factory("detection_cvpr_2019")
    eval_set = load_eval_set(synth_nusc, tmp_path / "results.json", split_sample_tokens(synth_nusc, SPLIT), config)
    gt_4 = select_boxes(eval_set.gt, lambda box: eval_set.gt_visibility[id(box)] == "4")
    naive = subset_metrics(gt_4, {th: eval_set.pred for th in config.dist_ths}, config)
    assert naive["per_class_AP"]["car"] < 0.5 and naive["mAP"] < 0.9


def _box(token: str, xy: tuple[float, float], score: float = -1.0, name: str = "pedestrian"):
    from nuscenes.eval.detection.data_classes import DetectionBox

    return DetectionBox(sample_token=token, translation=(xy[0], xy[1], 1.0), size=(0.6, 0.7, 1.8),
                        rotation=(1.0, 0.0, 0.0, 0.0), ego_translation=(xy[0], xy[1], 1.0), num_pts=5,
                        detection_name=name, detection_score=score)


def test_ignore_rule_uses_the_nearest_ground_truth_per_threshold():
    """Hand-made sample: pedestrians A (visibility 1) and B (visibility 4) 1 m apart, a perfect prediction of each,
    and a confident prediction C 3 m from A (more than 4 m from B)."""
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.common.data_classes import EvalBoxes

    from ftkd.engine.breakdown import EvalSet, visibility_breakdown

    config = config_factory("detection_cvpr_2019")
    gt, pred = EvalBoxes(), EvalBoxes()
    a, b = _box("s", (10.0, 0.0)), _box("s", (10.0, 1.0))
    gt.add_boxes("s", [a, b])
    pred.add_boxes("s", [_box("s", (10.0, 0.0), 0.8), _box("s", (10.0, 1.0), 0.7), _box("s", (10.0, -3.0), 0.9)])
    levels = {"1": "v0-40", "2": "v40-60", "3": "v60-80", "4": "v80-100"}
    eval_set = EvalSet(gt=gt, pred=pred, gt_visibility={id(a): "1", id(b): "4"}, visibility_levels=levels)
    out = visibility_breakdown(eval_set, config)
    # Level 4: A's prediction is nearest to A (level 1) at 0 m: ignored at every threshold. B's prediction is within
    # 2 m of A too, but nearest to B: kept (a rule on "any other-level box within 2 m" would drop it and miss B).
    # C is nearest to A at 3 m: a false positive at 0.5/1/2 m, ignored at 4 m.
    assert out["4"]["num_pred_ignored"] == {"0.5": 1, "1.0": 1, "2.0": 1, "4.0": 2}
    # Level 1: B's prediction is ignored everywhere; C is nearest to A (the same level) and stays.
    assert out["1"]["num_pred_ignored"] == {"0.5": 1, "1.0": 1, "2.0": 1, "4.0": 1}
    # AP at 4 m for level 4 is 1 (B's prediction is its only prediction), below 1 at the others (C ranks first).
    assert 0.0 < out["4"]["per_class_AP"]["pedestrian"] < 1.0
    assert out["2"]["mAP"] is None and out["2"]["num_gt"] == 0
    # Only B's prediction kept: level 4 scores exactly 1.
    only = EvalBoxes()
    only.add_boxes("s", [_box("s", (10.0, 0.0), 0.9), _box("s", (10.0, 1.0), 0.7)])
    out = visibility_breakdown(EvalSet(gt=gt, pred=only, gt_visibility=eval_set.gt_visibility,
                                       visibility_levels=levels), config)
    assert out["4"]["mAP"] == pytest.approx(1.0) and out["1"]["mAP"] == pytest.approx(1.0)
