"""Statistics of a generated dataset, to compare with nuScenes (reference numbers in docs/synth.md)."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from ftkd.constants import CLASS_NAMES
from ftkd.data.synth.shapes import CATEGORY

NAME_OF_CATEGORY = {category: name for name, category in CATEGORY.items()}


def dataset_stats(tables: dict[str, list[dict]], scene_info: list[dict], splits: dict[str, list[str]]) -> dict:
    """Class shares, boxes per keyframe, speeds, attributes, visibility, lidar points and temporal occlusion.

    Boxes "with points" are those the nuScenes benchmark keeps (num_lidar_pts > 0). "Occluded then visible" is the
    share of track-keyframes with 0 lidar points or visibility v0-40 that have a later keyframe of the same track
    with points and visibility above 60 %: the information only the future holds.
    """
    category_of = {c["token"]: NAME_OF_CATEGORY[c["name"]] for c in tables["category"]}
    class_of_instance = {i["token"]: category_of[i["category_token"]] for i in tables["instance"]}
    attribute_of = {a["token"]: a["name"] for a in tables["attribute"]}
    sample_time = {s["token"]: s["timestamp"] * 1e-6 for s in tables["sample"]}
    annotations = {a["token"]: a for a in tables["sample_annotation"]}
    scene_of_sample = {s["token"]: s["scene_token"] for s in tables["sample"]}
    scene_name = {s["token"]: s["name"] for s in tables["scene"]}

    with_points = Counter()
    all_boxes = Counter()
    zero_points = Counter()
    visibility = Counter()
    attributes: dict[str, Counter] = defaultdict(Counter)
    speeds: dict[str, list[float]] = defaultdict(list)
    distance_bins = Counter()
    ego_of_sample = {}
    pose_of = {p["token"]: p for p in tables["ego_pose"]}
    for sd in tables["sample_data"]:
        if sd["filename"].endswith(".pcd.bin"):
            ego_of_sample[sd["sample_token"]] = pose_of[sd["ego_pose_token"]]["translation"]
    for ann in tables["sample_annotation"]:
        name = class_of_instance[ann["instance_token"]]
        all_boxes[name] += 1
        visibility[ann["visibility_token"]] += 1
        if ann["num_lidar_pts"] > 0:
            with_points[name] += 1
            ego = ego_of_sample[ann["sample_token"]]
            d = float(np.hypot(ann["translation"][0] - ego[0], ann["translation"][1] - ego[1]))
            distance_bins["0-20" if d < 20 else "20-40" if d < 40 else "40+"] += 1
        else:
            zero_points[name] += 1
        for tok in ann["attribute_tokens"]:
            attributes[name][attribute_of[tok]] += 1
        if ann["prev"] and ann["next"]:  # central difference as the devkit's box_velocity
            prev, nxt = annotations[ann["prev"]], annotations[ann["next"]]
            dt = sample_time[nxt["sample_token"]] - sample_time[prev["sample_token"]]
            dx = nxt["translation"][0] - prev["translation"][0]
            v = np.hypot(dx, nxt["translation"][1] - prev["translation"][1]) / dt
            moving = not ann["attribute_tokens"] or attribute_of[ann["attribute_tokens"][0]] in (
                "vehicle.moving", "pedestrian.moving", "cycle.with_rider")
            if moving:
                speeds[name].append(float(v))
    # occluded now, visible later (per track)
    tracks: dict[str, list[dict]] = defaultdict(list)
    for ann in tables["sample_annotation"]:
        tracks[ann["instance_token"]].append(ann)
    hidden, hidden_then_visible, track_keyframes = 0, 0, 0
    for anns in tracks.values():
        anns.sort(key=lambda a: sample_time[a["sample_token"]])
        good = np.array([a["num_lidar_pts"] > 0 and a["visibility_token"] in ("3", "4") for a in anns])
        bad = np.array([a["num_lidar_pts"] == 0 or a["visibility_token"] == "1" for a in anns])
        later_good = np.flip(np.cumsum(np.flip(good))) - good  # number of good keyframes after each one
        track_keyframes += len(anns)
        hidden += int(bad.sum())
        hidden_then_visible += int((bad & (later_good > 0)).sum())
    num_keyframes = len(tables["sample"])
    total_with_points = sum(with_points.values())
    ego_speed = np.concatenate([np.asarray(info["ego_speed"]) for info in scene_info]) if scene_info else np.zeros(0)
    split_classes = {}
    for split, names in splits.items():
        present = {class_of_instance[a["instance_token"]] for a in tables["sample_annotation"]
                   if scene_name[scene_of_sample[a["sample_token"]]] in names and a["num_lidar_pts"] > 0}
        split_classes[split] = sorted(present, key=CLASS_NAMES.index)
    return {
        "scenes": len(tables["scene"]),
        "keyframes": num_keyframes,
        "sample_data": len(tables["sample_data"]),
        "instances": len(tables["instance"]),
        "annotations": len(tables["sample_annotation"]),
        "boxes_per_keyframe_with_points": round(total_with_points / max(num_keyframes, 1), 2),
        "annotations_per_keyframe": round(len(tables["sample_annotation"]) / max(num_keyframes, 1), 2),
        "class_share_with_points": {c: round(with_points[c] / max(total_with_points, 1), 4) for c in CLASS_NAMES},
        "zero_point_share": {c: round(zero_points[c] / max(all_boxes[c], 1), 3) for c in CLASS_NAMES},
        "zero_point_share_all": round(sum(zero_points.values()) / max(sum(all_boxes.values()), 1), 3),
        "distance_share_with_points": {k: round(distance_bins[k] / max(total_with_points, 1), 3)
                                       for k in ("0-20", "20-40", "40+")},
        "visibility_share": {k: round(visibility[k] / max(len(tables["sample_annotation"]), 1), 3) for k in "1234"},
        "attribute_share": {c: {k: round(v / sum(attributes[c].values()), 3) for k, v in sorted(attributes[c].items())}
                            for c in CLASS_NAMES if attributes[c]},
        "moving_speed_mps": {c: {"mean": round(float(np.mean(speeds[c])), 2),
                                 "p10": round(float(np.percentile(speeds[c], 10)), 2),
                                 "p90": round(float(np.percentile(speeds[c], 90)), 2)}
                             for c in CLASS_NAMES if speeds[c]},
        "hidden_track_keyframes_share": round(hidden / max(track_keyframes, 1), 3),
        "hidden_then_visible_share": round(hidden_then_visible / max(track_keyframes, 1), 3),
        "ego_speed_mean_mps": round(float(ego_speed.mean()), 2) if len(ego_speed) else 0.0,
        "ego_stopped_share": round(float((ego_speed < 0.5).mean()), 3) if len(ego_speed) else 0.0,
        "conditions": dict(Counter(info["description"] for info in scene_info)),
        "classes_with_points_per_split": split_classes,
    }
