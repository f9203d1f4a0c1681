"""Split-half evaluation (ftkd.engine.breakdown.split_half) on the tiny synthetic set: halves are whole scenes in the
split's order, perfect predictions score AP 1 in each half, and a half scores exactly what the official metric gives
on a split made of that half's scenes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ftkd.data.results import write_result_records
from ftkd.engine.evaluation import DEVKIT_CLASSES

VERSION = "v1.0-synth"
SPLIT = "synth_train"  # the tiny set's val split has one scene; its train split has three


def _scene_chains(nusc, split: str) -> list[tuple[str, list[str]]]:
    """(scene name, sample tokens) of a split walked through the scene table's first_sample_token -> next links,
    scenes in table order: an independent reference for split_scenes."""
    from nuscenes.utils.splits import get_scenes_of_split

    names = set(get_scenes_of_split(split, nusc))
    out = []
    for scene in nusc.scene:
        if scene["name"] not in names:
            continue
        tokens, token = [], scene["first_sample_token"]
        while token:
            tokens.append(token)
            token = nusc.get("sample", token)["next"]
        out.append((scene["name"], tokens))
    return out


@pytest.fixture(scope="module")
def ground_truth_results(annotation_records):
    """{sample token: records} with one record per annotation the metric scores (score 1, true velocity)."""
    return annotation_records(SPLIT)


def test_halves_are_whole_scenes_and_perfect_predictions_score_one(ground_truth_results, tmp_path, synth_root,
                                                                    synth_nusc):
    from ftkd.engine.breakdown import split_half, split_scenes
    from ftkd.engine.evaluation import evaluate

    chains = _scene_chains(synth_nusc, SPLIT)
    assert split_scenes(synth_nusc, SPLIT) == chains and len(chains) == 3
    path = write_result_records(ground_truth_results, tmp_path / "results.json")
    out = split_half(path, synth_root, VERSION, SPLIT, nusc=synth_nusc)
    names = [name for name, _ in chains]
    assert out["scenes"] == [names[:1], names[1:]]  # by scene, in the split's order; the second half takes the odd one
    assert [half["num_samples"] for half in out["halves"]] == [len(chains[0][1]), len(chains[1][1]) + len(chains[2][1])]
    official = evaluate(path, synth_root, VERSION, SPLIT, tmp_path / "eval", nusc=synth_nusc)
    assert sum(half["num_gt"] for half in out["halves"]) == official["num_gt_boxes"]
    assert sum(half["num_pred"] for half in out["halves"]) == official["num_pred_boxes"]
    for half in out["halves"]:
        assert half["num_gt"] > 0
        assert half["mAP_present"] == pytest.approx(1.0)
        assert all(half["per_class_AP"][name] == pytest.approx(1.0) for name in half["present_classes"])
        # Official means over the 10 classes: a class without ground truth in the half counts AP 0 and error 1;
        # velocity has no error for cones and barriers (NaN, left out of the mean).
        absent = [name for name in DEVKIT_CLASSES if name not in half["present_classes"]]
        assert half["mAP"] == pytest.approx(1.0 - len(absent) / 10)
        assert half["mATE"] == pytest.approx(len(absent) / 10) and half["mASE"] == pytest.approx(len(absent) / 10)
        moving = [name for name in absent if name not in ("traffic_cone", "barrier")]
        assert half["mAVE"] == pytest.approx(len(moving) / 8, abs=1e-6)
    json.dumps(out)  # the record is plain JSON
    # Custom groups, and their checks.
    swapped = split_half(path, synth_root, VERSION, SPLIT, nusc=synth_nusc, groups=[names[2:], names[:2]])
    assert swapped["halves"][0]["num_gt"] + swapped["halves"][1]["num_gt"] == official["num_gt_boxes"]
    with pytest.raises(ValueError, match="each in one group only"):
        split_half(path, synth_root, VERSION, SPLIT, nusc=synth_nusc, groups=[names[:2], names[1:]])
    with pytest.raises(ValueError, match="has 1 scene"):
        split_half(path, synth_root, VERSION, "synth_val", nusc=synth_nusc)


def test_a_half_scores_what_the_official_metric_gives_on_a_split_of_its_scenes(ground_truth_results, tmp_path,
                                                                               synth_root, synth_nusc):
    """Imperfect predictions (shifted, missed, false positives); the reference is the devkit's DetectionEval run on a
    copy of the dataset whose splits.json holds a split made of the first half's scenes only."""
    from ftkd.engine.breakdown import split_half, split_scenes
    from ftkd.engine.evaluation import evaluate, load_nuscenes

    rng = np.random.default_rng(0)
    results = {}
    for token, records in ground_truth_results.items():
        noisy = []
        for i, record in enumerate(records):
            if i % 3 == 2:
                continue
            x, y, z = record["translation"]
            shift = rng.normal(0.0, 0.6, size=2)
            vx, vy = record["velocity"]
            noisy.append({**record, "translation": [x + shift[0], y + shift[1], z],
                          "velocity": [vx + rng.normal(), vy], "detection_score": float(rng.uniform(0.1, 1.0))})
            if i % 4 == 0:
                noisy.append({**record, "translation": [x + 6.0, y, z], "detection_score": float(rng.uniform())})
        results[token] = noisy
    path = write_result_records(results, tmp_path / "results.json")
    out = split_half(path, synth_root, VERSION, SPLIT, nusc=synth_nusc)

    root = tmp_path / "copy"
    root.mkdir()
    for entry in synth_root.iterdir():  # the images stay where they are: the metric reads only the tables
        if entry.name != VERSION:
            (root / entry.name).symlink_to(entry)
    shutil.copytree(synth_root / VERSION, root / VERSION)
    splits = json.loads((root / VERSION / "splits.json").read_text())
    splits["first_half"] = out["scenes"][0]
    (root / VERSION / "splits.json").write_text(json.dumps(splits))
    first = [token for name, tokens in split_scenes(synth_nusc, SPLIT) if name in out["scenes"][0] for token in tokens]
    half_path = write_result_records({token: results[token] for token in first}, tmp_path / "first_half.json")
    official = evaluate(half_path, root, VERSION, "first_half", tmp_path / "eval", nusc=load_nuscenes(root, VERSION))

    half = out["halves"][0]
    assert 0.05 < half["NDS"] < 0.95
    assert half["NDS"] == pytest.approx(official["nd_score"], abs=1e-12)
    assert half["mAP"] == pytest.approx(official["mean_ap"], abs=1e-12)
    for metric, short in (("trans_err", "mATE"), ("scale_err", "mASE"), ("orient_err", "mAOE"), ("vel_err", "mAVE"),
                          ("attr_err", "mAAE")):
        assert half[short] == pytest.approx(official["tp_errors"][metric], abs=1e-12, nan_ok=True)
    assert half["NDS_present"] == pytest.approx(official["nd_score_present"], abs=1e-12)
    assert half["per_class_AP"] == pytest.approx(official["mean_dist_aps"], abs=1e-12)
    assert (half["num_gt"], half["num_pred"]) == (official["num_gt_boxes"], official["num_pred_boxes"])
