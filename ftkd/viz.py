"""Pictures a person looks at: a BEV plot and the six camera views with projected 3D boxes (PNG).

Boxes are [M, 9] in the sample's reference (ego) frame (x forward, y left, z up; ftkd.constants layout).
Ground truth is drawn solid green, predictions dashed in a colour per class; both get a heading mark and a
velocity arrow showing one second of motion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, Polygon, Rectangle

from ftkd.constants import CAMERA_NAMES, CLASS_NAMES
from ftkd.structures import Detections
from ftkd.structures.boxes import box_corners

GT_COLOUR = "#1a9641"
# One colour per class, none of them green (the ground truth's colour).
CLASS_COLOURS: dict[str, str] = {
    "car": "#1f77b4",
    "truck": "#ff7f0e",
    "construction_vehicle": "#8c564b",
    "bus": "#d62728",
    "trailer": "#9467bd",
    "barrier": "#555555",
    "motorcycle": "#e377c2",
    "bicycle": "#8b008b",
    "pedestrian": "#17becf",
    "traffic_cone": "#ff6f61",
}
# nuScenes picture layout: front cameras on top, back cameras below, left to right as seen from above-behind.
CAMERA_GRID: tuple[tuple[str, ...], ...] = (
    ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"),
    ("CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"),
)
# Box edges as pairs of corner indices (corner order of ftkd.structures.boxes.box_corners: 0-3 front face).
FRONT_EDGES = ((0, 1), (1, 2), (2, 3), (3, 0))
OTHER_EDGES = ((4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7))
EGO_LENGTH, EGO_WIDTH, EGO_REAR_OVERHANG = 4.6, 1.9, 1.0  # metres, origin at the rear axle
NEAR_PLANE = 0.1  # metres in front of a camera


def _filter(detections: Detections | None, score_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes [M, 9], labels [M], scores [M]) as float64/int numpy, keeping scores >= threshold."""
    if detections is None:
        return np.zeros((0, 9)), np.zeros(0, dtype=np.int64), np.zeros(0)
    keep = detections.scores >= score_threshold
    boxes = detections.boxes[keep].detach().cpu().double()
    return boxes.numpy(), detections.labels[keep].cpu().numpy(), detections.scores[keep].detach().cpu().double().numpy()


def _to_plot(xy: np.ndarray) -> np.ndarray:
    """Reference-frame (x forward, y left) -> plot coordinates (right, up): forward points up the page."""
    return np.stack([-xy[..., 1], xy[..., 0]], axis=-1)


def draw_bev(
    path: str | Path,
    *,
    ground_truth: Detections | None = None,
    predictions: Detections | None = None,
    title: str = "",
    score_threshold: float = 0.3,
    extent: float = 55.0,
) -> Path:
    """Bird's-eye view PNG: ego car, range rings, GT (green, solid) and predictions (class colour, dashed).

    Args:
        path: the PNG file.
        ground_truth / predictions: boxes in the reference frame (ground truth scores are ignored).
        title: first title line (e.g. the sample token); the score threshold is appended.
        score_threshold: predictions scoring below it are not drawn.
        extent: half width of the square view, metres.
    """
    # A bare Figure renders with the Agg canvas on savefig: no pyplot state, no GUI backend needed.
    fig = Figure(figsize=(9, 9.6), dpi=110, layout="constrained")
    ax = fig.subplots()
    ax.set_facecolor("#f7f7f7")
    for radius in range(10, int(extent) + 1, 10):
        ax.add_patch(Circle((0, 0), radius, fill=False, color="#b0b0b0", lw=0.8, ls=":"))
        ax.text(radius * 0.707, radius * 0.707, f"{radius} m", color="#909090", fontsize=7)
    ego = Rectangle(
        (-EGO_WIDTH / 2, -EGO_REAR_OVERHANG), EGO_WIDTH, EGO_LENGTH, facecolor="#303030", edgecolor="black", zorder=5
    )
    ax.add_patch(ego)
    ax.annotate("", xy=(0, EGO_LENGTH + 1.5), xytext=(0, EGO_LENGTH - 1.5),
                arrowprops=dict(arrowstyle="-|>", color="#303030", lw=1.5), zorder=5)

    gt_boxes, gt_labels, _ = _filter(ground_truth, -float("inf"))
    pred_boxes, pred_labels, pred_scores = _filter(predictions, score_threshold)
    layers = ((gt_boxes, gt_labels, None, True), (pred_boxes, pred_labels, pred_scores, False))
    for boxes, labels, scores, is_gt in layers:
        if len(boxes) == 0:
            continue
        # Footprint = top corners front-left, front-right, back-right, back-left: [M, 8, 3] -> [M, 4, 2].
        corners = _to_plot(box_corners(torch.from_numpy(boxes))[:, [0, 1, 5, 4], :2].numpy())
        centres = _to_plot(boxes[:, :2])  # [M, 2]
        fronts = corners[:, [0, 1]].mean(axis=1)  # [M, 2] middle of the front edge
        motion = _to_plot(boxes[:, 7:9])  # [M, 2] one second of motion
        for i in range(len(boxes)):
            colour = GT_COLOUR if is_gt else CLASS_COLOURS[CLASS_NAMES[int(labels[i])]]
            style = dict(lw=1.6, ls="-") if is_gt else dict(lw=1.3, ls="--", alpha=0.35 + 0.65 * float(scores[i]))
            ax.add_patch(Polygon(corners[i], closed=True, fill=False, edgecolor=colour, zorder=3 + is_gt, **style))
            ax.plot(*np.stack([centres[i], fronts[i]]).T, color=colour, zorder=3, **style)
            if np.hypot(*motion[i]) > 0.2:
                ax.annotate("", xy=tuple(centres[i] + motion[i]), xytext=tuple(centres[i]), zorder=4,
                            arrowprops=dict(arrowstyle="->", color=colour, lw=1.0, alpha=style.get("alpha", 1.0)))

    handles = [Line2D([], [], color=GT_COLOUR, lw=1.6, label=f"ground truth ({len(gt_boxes)})")]
    for label in sorted(set(pred_labels.tolist())):
        name = CLASS_NAMES[label]
        count = int((pred_labels == label).sum())
        handles.append(Line2D([], [], color=CLASS_COLOURS[name], lw=1.3, ls="--", label=f"{name} ({count})"))
    ax.legend(handles=handles, loc="upper right", fontsize=7, framealpha=0.85, title="dashed: predictions",
              title_fontsize=7)
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.set_xlabel("right of ego (m)   [= -y]")
    ax.set_ylabel("forward of ego (m)   [= x]")
    ax.set_title(f"{title}\nBEV, ego frame; predictions with score >= {score_threshold:.2f}; arrows: 1 s of motion",
                 fontsize=9)
    return _save(fig, path)


def _project_edges(corners: np.ndarray, ref_to_image: np.ndarray, edges: Sequence[tuple[int, int]]) -> list:
    """Pixel segments of box edges, each edge clipped to the part in front of the camera's near plane."""
    homogeneous = np.concatenate([corners, np.ones((8, 1))], axis=1) @ ref_to_image.T  # [8, 4]: (u d, v d, d, 1)
    segments = []
    for a, b in edges:
        pa, pb = homogeneous[a], homogeneous[b]
        if pa[2] < NEAR_PLANE and pb[2] < NEAR_PLANE:
            continue
        # Homogeneous image coordinates are linear along a 3D segment, so clip before dividing by depth.
        if pa[2] < NEAR_PLANE:
            pa = pa + (pb - pa) * (NEAR_PLANE - pa[2]) / (pb[2] - pa[2])
        elif pb[2] < NEAR_PLANE:
            pb = pb + (pa - pb) * (NEAR_PLANE - pb[2]) / (pa[2] - pb[2])
        segments.append(np.stack([pa[:2] / pa[2], pb[:2] / pb[2]]))  # [2, 2] pixels
    return segments


def draw_cameras(
    path: str | Path,
    images: Sequence[np.ndarray],
    ref_to_image: np.ndarray,
    *,
    ground_truth: Detections | None = None,
    predictions: Detections | None = None,
    title: str = "",
    score_threshold: float = 0.3,
    camera_names: Sequence[str] = CAMERA_NAMES,
) -> Path:
    """The six camera images in the nuScenes 2x3 layout with projected 3D box edges.

    Args:
        path: the PNG file.
        images: one [H, W, 3] uint8 RGB image per camera, in `camera_names` order.
        ref_to_image: [N, 4, 4]: reference-frame point -> (u * depth, v * depth, depth, 1) in each image's pixels
            (a `lidar2img` matrix of the stored image).
        ground_truth / predictions: boxes in the reference frame; predictions below `score_threshold` are hidden.
    """
    ref_to_image = np.asarray(ref_to_image, dtype=np.float64)
    if len(images) != len(camera_names) or ref_to_image.shape != (len(camera_names), 4, 4):
        raise ValueError(
            f"expected {len(camera_names)} images and ref_to_image [{len(camera_names)}, 4, 4], got {len(images)} "
            f"images and {ref_to_image.shape}"
        )
    height, width = images[0].shape[:2]
    fig = Figure(figsize=(18, 12 * height / width + 1.0), dpi=100, layout="constrained")
    axes = fig.subplots(2, 3)
    gt_boxes, _, _ = _filter(ground_truth, -float("inf"))
    pred_boxes, pred_labels, pred_scores = _filter(predictions, score_threshold)
    gt_corners = box_corners(torch.from_numpy(gt_boxes)).numpy() if len(gt_boxes) else np.zeros((0, 8, 3))
    pred_corners = box_corners(torch.from_numpy(pred_boxes)).numpy() if len(pred_boxes) else np.zeros((0, 8, 3))
    # (corners [8, 3], colour, line style, is ground truth) per box, ground truth first.
    layers = [(corners, GT_COLOUR, dict(lw=1.4, ls="-"), True) for corners in gt_corners] + [
        (corners, CLASS_COLOURS[CLASS_NAMES[int(label)]], dict(lw=1.1, ls="--", alpha=0.4 + 0.6 * float(score)), False)
        for corners, label, score in zip(pred_corners, pred_labels, pred_scores)
    ]
    for row, names in enumerate(CAMERA_GRID):
        for col, name in enumerate(names):
            ax = axes[row, col]
            if name not in camera_names:
                ax.set_axis_off()
                continue
            n = list(camera_names).index(name)
            image = images[n]
            ax.imshow(image)
            drawn = {True: 0, False: 0}  # boxes with an edge inside the image: ground truth, predictions
            for corners, colour, style, is_gt in layers:
                front = _project_edges(corners, ref_to_image[n], FRONT_EDGES)
                others = _project_edges(corners, ref_to_image[n], OTHER_EDGES)
                for segment in front:
                    ax.plot(segment[:, 0], segment[:, 1], color=colour, **{**style, "lw": style["lw"] * 1.8})
                for segment in others:
                    ax.plot(segment[:, 0], segment[:, 1], color=colour, **style)
                drawn[is_gt] += any(
                    ((segment >= 0) & (segment <= [image.shape[1], image.shape[0]])).all(axis=1).any()
                    for segment in front + others
                )
            ax.set_xlim(0, image.shape[1])
            ax.set_ylim(image.shape[0], 0)
            ax.set_title(f"{name}  ({drawn[True]} GT, {drawn[False]} predicted)", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(
        f"{title}\nground truth: green solid; predictions (score >= {score_threshold:.2f}): class colour, dashed; "
        f"thick edges: front face",
        fontsize=10,
    )
    return _save(fig, path)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def camera_projections(nusc, sample_token: str, ref_to_global: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """A sample's six keyframe images (CAMERA_NAMES order) and [6, 4, 4] reference frame -> pixel matrices.

    Each camera uses the ego pose at its own timestamp: reference -> global -> ego(t_cam) -> camera -> pixels.
    """
    from PIL import Image
    from pyquaternion import Quaternion

    def matrix(record: dict) -> np.ndarray:
        out = np.eye(4)
        out[:3, :3] = Quaternion(record["rotation"]).rotation_matrix
        out[:3, 3] = record["translation"]
        return out

    sample = nusc.get("sample", sample_token)
    images, ref_to_image = [], []
    for name in CAMERA_NAMES:
        record = nusc.get("sample_data", sample["data"][name])
        calibration = nusc.get("calibrated_sensor", record["calibrated_sensor_token"])
        ego_to_global = matrix(nusc.get("ego_pose", record["ego_pose_token"]))
        intrinsic = np.eye(4)
        intrinsic[:3, :3] = calibration["camera_intrinsic"]
        global_to_camera = np.linalg.inv(ego_to_global @ matrix(calibration))
        ref_to_image.append(intrinsic @ global_to_camera @ ref_to_global)
        with Image.open(Path(nusc.dataroot) / record["filename"]) as image:
            images.append(np.asarray(image.convert("RGB")))
    return images, np.stack(ref_to_image)


def draw_sample(
    nusc, sample_token: str, records: Sequence[dict], out_dir: str | Path, *, score_threshold: float = 0.3
) -> tuple[Path, Path]:
    """BEV and camera pictures of one sample: its annotations and the given official result records (global)."""
    from ftkd.data.results import records_to_boxes
    from ftkd.engine.evaluation import sample_ground_truth

    truth = sample_ground_truth(nusc, sample_token)
    keep = truth.num_points > 0  # what the metric scores
    ground_truth = Detections(
        boxes=torch.from_numpy(np.nan_to_num(truth.boxes[keep])),
        scores=torch.ones(int(keep.sum()), dtype=torch.float64),
        labels=torch.tensor([CLASS_NAMES.index(n) for n, k in zip(truth.names, keep) if k], dtype=torch.int64),
    )
    boxes, names = records_to_boxes(records, truth.ref_to_global)
    predictions = Detections(
        boxes=torch.from_numpy(np.nan_to_num(boxes)),
        scores=torch.tensor([float(r["detection_score"]) for r in records], dtype=torch.float64),
        labels=torch.tensor([CLASS_NAMES.index(n) for n in names], dtype=torch.int64),
    )
    scene = nusc.get("scene", nusc.get("sample", sample_token)["scene_token"])["name"]
    title = f"sample {sample_token} ({scene}): {int(keep.sum())} GT boxes, {len(records)} predictions"
    out_dir = Path(out_dir)
    bev = draw_bev(out_dir / f"{sample_token}_bev.png", ground_truth=ground_truth, predictions=predictions,
                   title=title, score_threshold=score_threshold)
    images, ref_to_image = camera_projections(nusc, sample_token, truth.ref_to_global)
    cameras = draw_cameras(out_dir / f"{sample_token}_cameras.png", images, ref_to_image, ground_truth=ground_truth,
                           predictions=predictions, title=title, score_threshold=score_threshold)
    return bev, cameras
