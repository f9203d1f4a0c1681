"""Where a detector's AP comes from: the official AP per class and mAP over subsets of the ground truth.

Two families of subsets, both scored with the nuscenes-devkit's own pipeline (`load_gt_of_sample_tokens`,
`load_prediction_of_sample_tokens`, `add_center_dist`, `filter_eval_boxes`, then `accumulate` + `calc_ap` per class
and matching threshold, config `detection_cvpr_2019`); we only choose which boxes each call sees:

- **Distance bands** of the box centre from the ego (the devkit's `ego_dist`: xy distance to the LIDAR_TOP keyframe's
  ego position, after its class-range filter, so the > 40 m band holds only the classes scored beyond 40 m). The
  ground truth *and* the predictions are restricted to the band, a prediction to the band of its own centre. A box
  near an edge can therefore miss its match across the edge (a GT at 19.9 m and its prediction at 20.1 m are a
  false negative of 0-20 and a false positive of 20-40), as in any range-binned AP.
- **Visibility levels** (nuScenes visibility tokens '1'..'4' = 0-40, 40-60, 60-80, 80-100 % of the object visible
  over all cameras). Predictions carry no visibility, so the standard "ignore" treatment is used: the ground truth
  is restricted to the level; a prediction whose nearest same-class ground-truth box (centre distance, in its sample,
  after the metric's filters) is of *another* level and closer than the matching threshold is removed (neither true
  nor false positive) for that threshold; every other prediction is kept. The rule is applied per threshold of the
  AP (0.5, 1, 2, 4 m), so a prediction that would be a false positive at 0.5 m in the full metric stays one here.
  Ground truth with an unknown visibility (a converted dataset may leave it empty) is "another level" for every
  level.

mAP of a subset is the mean AP over the classes with ground truth in that subset (None when it has none).

A third, **split-half** evaluation (`split_half`) scores two halves of the split's *scenes* separately with the whole
official metric (NDS, mAP, TP errors: the devkit's `DetectionEval.evaluate` on the half's samples), so that the
spread of the halves' difference over many runs measures how noisy one evaluation on the split is. Halves are whole
scenes because the keyframes of one scene are strongly correlated.
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
from types import SimpleNamespace
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ftkd.engine.evaluation import (
    DEVKIT_CLASSES,
    EVAL_CONFIG,
    TP_METRICS,
    TP_SHORT,
    check_results,
    load_nuscenes,
    present_class_metrics,
    split_sample_tokens,
)

if TYPE_CHECKING:
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.detection.data_classes import DetectionBox, DetectionConfig

logger = logging.getLogger(__name__)

# Band name -> [low, high) of the xy centre distance from the ego, metres.
DISTANCE_BANDS: dict[str, tuple[float, float]] = {"0-20": (0.0, 20.0), "20-40": (20.0, 40.0), ">40": (40.0, math.inf)}
UNKNOWN_VISIBILITY = ""  # the visibility token of a box whose visibility is not known


@dataclass
class EvalSet:
    """Ground truth and predictions of a split after the official metric's filters, with each GT box's visibility."""

    gt: EvalBoxes  # DetectionBox ground truth per sample token
    pred: EvalBoxes  # DetectionBox predictions per sample token
    gt_visibility: dict[int, str]  # id(gt box) -> visibility token ('1'..'4', or '' when unknown)
    visibility_levels: dict[str, str]  # token -> level name of the dataset's visibility table, e.g. '1' -> 'v0-40'


def _filter(nusc, boxes, class_range: dict[str, float]):
    """The devkit's filter_eval_boxes, which cannot read a set without a single box (nothing to filter then)."""
    from nuscenes.eval.common.loaders import filter_eval_boxes

    return filter_eval_boxes(nusc, boxes, class_range) if boxes.all else boxes


def load_eval_set(nusc, results_path: str | Path, sample_tokens: list[str], config: DetectionConfig) -> EvalSet:
    """Load ground truth and predictions of `sample_tokens` exactly as `DetectionEval` does (custom-split path), add
    each GT box's visibility token, add centre distances and apply the class-range / zero-point / bike-rack filters.
    """
    from nuscenes.eval.common.loaders import (
        add_center_dist,
        load_gt_of_sample_tokens,
        load_prediction_of_sample_tokens,
    )
    from nuscenes.eval.detection.data_classes import DetectionBox
    from nuscenes.eval.detection.utils import category_to_detection_name

    with contextlib.redirect_stderr(io.StringIO()):  # the devkit's tqdm bar
        pred, _ = load_prediction_of_sample_tokens(
            str(results_path), config.max_boxes_per_sample, DetectionBox, sample_tokens=sample_tokens
        )
        gt = load_gt_of_sample_tokens(nusc, sample_tokens, DetectionBox)
    # The devkit's GT loader keeps the sample's detection-class annotations in `sample['anns']` order; walk the same
    # annotations to read each box's visibility (DetectionBox does not carry it).
    levels = {record["token"]: record["level"] for record in nusc.visibility}
    gt_visibility: dict[int, str] = {}
    for token in sample_tokens:
        annotations = [nusc.get("sample_annotation", a) for a in nusc.get("sample", token)["anns"]]
        annotations = [a for a in annotations if category_to_detection_name(a["category_name"]) is not None]
        boxes = gt[token]
        if len(boxes) != len(annotations):
            raise RuntimeError(
                f"sample {token}: the devkit loaded {len(boxes)} GT boxes, {len(annotations)} detection-class "
                f"annotations were expected (has the devkit's load_gt_of_sample_tokens changed?)"
            )
        for box, annotation in zip(boxes, annotations):
            if tuple(box.translation) != tuple(annotation["translation"]):
                raise RuntimeError(
                    f"sample {token}: GT box at {box.translation} does not follow annotation {annotation['token']} "
                    f"at {annotation['translation']} (has the devkit's GT loading order changed?)"
                )
            visibility = annotation.get("visibility_token") or UNKNOWN_VISIBILITY
            if visibility != UNKNOWN_VISIBILITY and visibility not in levels:
                raise ValueError(
                    f"{nusc.dataroot}/{nusc.version}/sample_annotation.json: annotation {annotation['token']} has "
                    f"visibility_token {visibility!r}, expected one of the visibility table's {sorted(levels)} or ''"
                )
            gt_visibility[id(box)] = visibility
    pred = _filter(nusc, add_center_dist(nusc, pred), config.class_range)
    gt = _filter(nusc, add_center_dist(nusc, gt), config.class_range)
    return EvalSet(gt=gt, pred=pred, gt_visibility=gt_visibility, visibility_levels=dict(sorted(levels.items())))


def select_boxes(boxes: EvalBoxes, keep: Callable[[DetectionBox], bool]) -> EvalBoxes:
    """A new EvalBoxes with the boxes for which keep(box) is true; every sample token stays (possibly empty)."""
    from nuscenes.eval.common.data_classes import EvalBoxes

    out = EvalBoxes()
    for token in boxes.sample_tokens:
        out.add_boxes(token, [box for box in boxes[token] if keep(box)])
    return out


def subset_metrics(gt: EvalBoxes, pred_per_threshold: dict[float, EvalBoxes], config: DetectionConfig) -> dict:
    """AP per class (mean over the matching thresholds, as the devkit's mean_dist_aps) and their mean over the
    classes with ground truth in `gt`.

    Args:
        gt: EvalBoxes of the subset's ground truth (already filtered by the metric).
        pred_per_threshold: the subset's predictions for each matching threshold of `config.dist_ths` (metres).
        config: the devkit's DetectionConfig.
    Returns:
        {"mAP": float | None, "per_class_AP": {class: AP}, "num_gt": int, "num_gt_per_class": {class: int}} where
        per_class_AP and num_gt_per_class list only the classes present in `gt`.
    """
    from nuscenes.eval.detection.algo import accumulate, calc_ap

    counts: dict[str, int] = {}
    for box in gt.all:
        counts[box.detection_name] = counts.get(box.detection_name, 0) + 1
    per_class_ap: dict[str, float] = {}
    for name in DEVKIT_CLASSES:
        if not counts.get(name):
            continue
        aps = [
            calc_ap(
                accumulate(gt, pred_per_threshold[threshold], name, config.dist_fcn_callable, threshold),
                config.min_recall,
                config.min_precision,
            )
            for threshold in config.dist_ths
        ]
        per_class_ap[name] = float(np.mean(aps))
    return {
        "mAP": float(np.mean(list(per_class_ap.values()))) if per_class_ap else None,
        "per_class_AP": per_class_ap,
        "num_gt": int(sum(counts.values())),
        "num_gt_per_class": {name: counts[name] for name in DEVKIT_CLASSES if name in counts},
    }


def distance_breakdown(eval_set: EvalSet, config: DetectionConfig) -> dict[str, dict]:
    """subset_metrics per distance band: GT and predictions both restricted to [low, high) of their own ego_dist."""
    out = {}
    for band, (low, high) in DISTANCE_BANDS.items():
        gt = select_boxes(eval_set.gt, lambda box: low <= box.ego_dist < high)
        pred = select_boxes(eval_set.pred, lambda box: low <= box.ego_dist < high)
        metrics = subset_metrics(gt, {threshold: pred for threshold in config.dist_ths}, config)
        out[band] = {**metrics, "range_m": [low, None if math.isinf(high) else high], "num_pred": len(pred.all)}
    return out


def nearest_gt(eval_set: EvalSet) -> dict[int, tuple[float, str]]:
    """id(prediction) -> (xy centre distance to its nearest same-class GT box of its sample, that box's visibility
    token); (inf, '') when the sample holds no GT of its class."""
    nearest: dict[int, tuple[float, str]] = {}
    for token in eval_set.pred.sample_tokens:
        gt_boxes = eval_set.gt[token]
        gt_xy = np.array([box.translation[:2] for box in gt_boxes], dtype=np.float64).reshape(-1, 2)  # [G, 2]
        gt_names = np.array([box.detection_name for box in gt_boxes])
        for box in eval_set.pred[token]:
            same = np.flatnonzero(gt_names == box.detection_name)
            if len(same) == 0:
                nearest[id(box)] = (math.inf, UNKNOWN_VISIBILITY)
                continue
            distances = np.linalg.norm(gt_xy[same] - np.asarray(box.translation[:2]), axis=1)  # [G_class]
            closest = int(np.argmin(distances))
            nearest[id(box)] = (float(distances[closest]), eval_set.gt_visibility[id(gt_boxes[same[closest]])])
    return nearest


def visibility_breakdown(eval_set: EvalSet, config: DetectionConfig) -> dict[str, dict]:
    """subset_metrics per visibility level with the ignore rule of the module docstring."""
    nearest = nearest_gt(eval_set)
    out = {}
    for level, level_name in eval_set.visibility_levels.items():
        gt = select_boxes(eval_set.gt, lambda box: eval_set.gt_visibility[id(box)] == level)

        def kept(box, threshold: float) -> bool:
            distance, visibility = nearest[id(box)]
            return not (distance < threshold and visibility != level)

        pred_per_threshold = {th: select_boxes(eval_set.pred, lambda box: kept(box, th)) for th in config.dist_ths}
        metrics = subset_metrics(gt, pred_per_threshold, config)
        ignored = {str(th): len(eval_set.pred.all) - len(pred.all) for th, pred in pred_per_threshold.items()}
        out[level] = {**metrics, "level": level_name, "num_pred_ignored": ignored}
    return out


def breakdown(
    results_path: str | Path,
    dataroot: str | Path,
    version: str,
    split: str,
    *,
    out_path: str | Path | None = None,
    nusc=None,
) -> dict:
    """AP per class and mAP per distance band and per visibility level of an official results JSON.

    Args:
        results_path: official results JSON (global frame) with an entry for every sample of `split`, e.g. the
            trainer's `<run>/results_final.json`.
        dataroot, version, split: the nuScenes-format dataset and the split scored.
        out_path: where to write the result as JSON (e.g. `<run>/breakdown.json`, next to metrics.json); None = not
            written.
        nusc: an already loaded NuScenes object for (dataroot, version).
    Returns:
        {"all": subset, "distance": {"0-20" | "20-40" | ">40": subset}, "visibility": {"1".."4": subset},
        "num_gt_unknown_visibility": int, "split", "results_path", "eval_config"} where a subset is
        {"mAP", "per_class_AP", "num_gt", "num_gt_per_class", ...}; "all" reproduces the metric's mAP over the
        classes present (`mean_ap_present` of ftkd.engine.evaluation.evaluate).
    """
    from nuscenes.eval.common.config import config_factory

    start = time.time()
    if nusc is None:
        nusc = load_nuscenes(dataroot, version)
    tokens = split_sample_tokens(nusc, split)
    check_results(results_path, tokens)
    config = config_factory(EVAL_CONFIG)
    eval_set = load_eval_set(nusc, results_path, tokens, config)
    result = {
        "all": subset_metrics(eval_set.gt, {th: eval_set.pred for th in config.dist_ths}, config),
        "distance": distance_breakdown(eval_set, config),
        "visibility": visibility_breakdown(eval_set, config),
        "num_gt_unknown_visibility": sum(
            eval_set.gt_visibility[id(box)] == UNKNOWN_VISIBILITY for box in eval_set.gt.all
        ),
        "num_pred": len(eval_set.pred.all),
        "split": split,
        "results_path": str(results_path),
        "eval_config": EVAL_CONFIG,
    }
    if out_path is not None:
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(f".{out_path.name}.tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        tmp.replace(out_path)
    logger.info("breakdown of %s on %s in %.1f s", results_path, split, time.time() - start)
    return result


def split_scenes(nusc, split: str) -> list[tuple[str, list[str]]]:
    """(scene name, its sample tokens) for every scene of a split, in the order `split_sample_tokens` gives them."""
    scenes: dict[str, list[str]] = {}
    for token in split_sample_tokens(nusc, split):
        name = nusc.get("scene", nusc.get("sample", token)["scene_token"])["name"]
        scenes.setdefault(name, []).append(token)
    return list(scenes.items())


def select_samples(boxes: EvalBoxes, tokens: Sequence[str]) -> EvalBoxes:
    """A new EvalBoxes holding the boxes of `tokens` only (every one of them, possibly empty)."""
    from nuscenes.eval.common.data_classes import EvalBoxes

    out = EvalBoxes()
    for token in tokens:
        out.add_boxes(token, boxes[token])
    return out


def official_metrics(gt: EvalBoxes, pred: EvalBoxes, config: DetectionConfig) -> dict:
    """The official detection metric of already loaded and filtered boxes.

    Runs the devkit's own `DetectionEval.evaluate` (accumulate, calc_ap, calc_tp with its NaN rules for cones and
    barriers, DetectionMetrics) on `gt` / `pred`, which is all that method reads of its object; so a sample subset
    is scored exactly as `ftkd.engine.evaluation.evaluate` scores a split. Returns the devkit's summary (mean_ap,
    nd_score, tp_errors, mean_dist_aps, label_tp_errors, ...) plus the present-class means of
    `present_class_metrics` (present = classes with ground truth in `gt`).
    """
    from nuscenes.eval.detection.evaluate import DetectionEval

    if set(gt.sample_tokens) != set(pred.sample_tokens):
        raise ValueError(f"ground truth and predictions cover different samples ({len(gt.sample_tokens)} vs "
                         f"{len(pred.sample_tokens)}); the metric needs an entry for every sample")
    metrics, _ = DetectionEval.evaluate(SimpleNamespace(gt_boxes=gt, pred_boxes=pred, cfg=config, verbose=False))
    summary = metrics.serialize()
    present = {box.detection_name for box in gt.all}
    summary.update(present_class_metrics(summary, [name for name in DEVKIT_CLASSES if name in present]))
    return summary


def half_record(summary: dict, gt: EvalBoxes, pred: EvalBoxes) -> dict:
    """The numbers of one half in the accuracy record's names: NDS, mAP, mATE..mAAE (official, 10 classes; fractions
    and metres), their present-class NDS / mAP, per-class AP and the box counts."""
    return {
        "NDS": summary["nd_score"],
        "mAP": summary["mean_ap"],
        **{TP_SHORT[m]: summary["tp_errors"][m] for m in TP_METRICS},
        "NDS_present": summary["nd_score_present"],
        "mAP_present": summary["mean_ap_present"],
        "present_classes": summary["present_classes"],
        "per_class_AP": summary["mean_dist_aps"],
        "num_gt": len(gt.all),
        "num_pred": len(pred.all),
        "num_samples": len(gt.sample_tokens),
    }


def split_half(
    results_path: str | Path,
    dataroot: str | Path,
    version: str,
    split: str,
    *,
    groups: Sequence[Sequence[str]] | None = None,
    nusc=None,
) -> dict:
    """The official metric of a results JSON on each half of the split's scenes.

    Args:
        results_path: official results JSON (global frame) with an entry for every sample of `split`, e.g. the
            trainer's `<run>/results_final.json`.
        dataroot, version, split: the nuScenes-format dataset and the split scored.
        groups: scene names of each part; None = the first half and the second half of the split's scenes in
            `split_scenes` order (the second half takes the odd one out). Every group must be non-empty and hold
            scenes of the split only, each scene in at most one group.
        nusc: an already loaded NuScenes object for (dataroot, version).
    Returns:
        {"scenes": [[names of part 1], [names of part 2], ...], "halves": [half_record per part], "split"} where a
        half record holds NDS, mAP, mATE, mASE, mAOE, mAVE, mAAE (the official 10-class values, as the stage
        record's metrics), NDS_present, mAP_present, present_classes, per_class_AP, num_gt, num_pred, num_samples.
    """
    from nuscenes.eval.common.config import config_factory

    start = time.time()
    if nusc is None:
        nusc = load_nuscenes(dataroot, version)
    scenes = dict(split_scenes(nusc, split))
    if groups is None:
        if len(scenes) < 2:
            raise ValueError(f"split {split!r} of {nusc.dataroot}/{nusc.version} has {len(scenes)} scene(s); a "
                             "split-half evaluation needs at least 2")
        names = list(scenes)
        groups = [names[: len(names) // 2], names[len(names) // 2:]]
    groups = [list(group) for group in groups]
    seen: set[str] = set()
    for i, group in enumerate(groups):
        unknown = [name for name in group if name not in scenes]
        if not group or unknown or seen & set(group):
            raise ValueError(f"groups[{i}] = {group}: expected a non-empty list of scenes of split {split!r} "
                             f"({list(scenes)}), each in one group only")
        seen |= set(group)
    tokens = [token for tokens in scenes.values() for token in tokens]
    check_results(results_path, tokens)
    config = config_factory(EVAL_CONFIG)
    eval_set = load_eval_set(nusc, results_path, tokens, config)
    halves = []
    for group in groups:
        part = [token for name in group for token in scenes[name]]
        gt, pred = select_samples(eval_set.gt, part), select_samples(eval_set.pred, part)
        halves.append(half_record(official_metrics(gt, pred, config), gt, pred))
    logger.info("split-half evaluation of %s on %s in %.1f s", results_path, split, time.time() - start)
    return {"scenes": groups, "halves": halves, "split": split}
