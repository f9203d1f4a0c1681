"""Pictures: box projection vs the devkit's view_points, and PNGs that open with the expected content."""

import numpy as np
import pytest
import torch
from PIL import Image
from pyquaternion import Quaternion

from ftkd.structures import Detections
from ftkd.structures.boxes import box_corners
from ftkd.viz import FRONT_EDGES, GT_COLOUR, OTHER_EDGES, _project_edges, draw_bev, draw_cameras

# CAM_FRONT of the real rig (camera -> ego), intrinsics scaled to a 320x180 image.
CAM_ROTATION = Quaternion([0.4998015430569128, -0.5030316162024876, 0.4997798114386805, -0.49737083824542755])
CAM_TRANSLATION = np.array([1.70079118954, 0.0159456324149, 1.51095763913])
K = np.array([[1266.417 * 0.2, 0, 816.267 * 0.2], [0, 1266.417 * 0.2, 491.507 * 0.2], [0, 0, 1]])


def _ref_to_image() -> np.ndarray:
    cam_to_ego = np.eye(4)
    cam_to_ego[:3, :3] = CAM_ROTATION.rotation_matrix
    cam_to_ego[:3, 3] = CAM_TRANSLATION
    intrinsic = np.eye(4)
    intrinsic[:3, :3] = K
    return intrinsic @ np.linalg.inv(cam_to_ego)


def _boxes() -> Detections:
    boxes = torch.tensor(
        [
            [15.0, 2.0, 0.8, 1.9, 4.6, 1.6, 0.4, 4.0, 1.0],  # car ahead, moving
            [25.0, -6.0, 1.7, 2.8, 10.0, 3.4, -0.2, 0.0, 0.0],  # bus ahead right
            [-12.0, 3.0, 0.9, 0.7, 0.8, 1.8, 1.2, 0.0, 1.2],  # pedestrian behind
        ],
        dtype=torch.float64,
    )
    return Detections(boxes=boxes, scores=torch.tensor([0.9, 0.6, 0.2]), labels=torch.tensor([0, 3, 8]))


def test_projection_matches_devkit_view_points():
    from nuscenes.utils.data_classes import Box
    from nuscenes.utils.geometry_utils import view_points

    ref_to_image = _ref_to_image()
    box = _boxes().boxes[0]
    x, y, z, w, l, h, yaw = box[:7].tolist()
    devkit_box = Box([x, y, z], [w, l, h], Quaternion(axis=[0, 0, 1], angle=yaw))
    devkit_box.translate(-CAM_TRANSLATION)
    devkit_box.rotate(CAM_ROTATION.inverse)
    expected = view_points(devkit_box.corners(), K, normalize=True)[:2].T  # [8, 2]
    corners = box_corners(box[None])[0].numpy()
    segments = _project_edges(corners, ref_to_image, FRONT_EDGES + OTHER_EDGES)
    assert len(segments) == 12  # the whole box is in front of the camera
    for (a, b), segment in zip(FRONT_EDGES + OTHER_EDGES, segments):
        np.testing.assert_allclose(segment, expected[[a, b]], atol=1e-6)


def test_edges_behind_the_camera_are_clipped_to_the_near_plane():
    corners = np.array([[5.0, 0, 1.5], [-5.0, 0, 1.5]] + [[5.0, 0, 1.5]] * 6)  # one corner far behind the camera
    segments = _project_edges(corners, _ref_to_image(), [(0, 1)])
    assert len(segments) == 1 and np.isfinite(segments[0]).all()
    assert _project_edges(corners, _ref_to_image(), [(1, 1)]) == []


def test_pictures_are_written(tmp_path):
    detections = _boxes()
    bev = draw_bev(tmp_path / "bev.png", ground_truth=detections, predictions=detections, title="sample t")
    picture = np.asarray(Image.open(bev).convert("RGB")).astype(int)
    green = np.array([int(GT_COLOUR[i : i + 2], 16) for i in (1, 3, 5)])
    ys, xs = np.nonzero(np.abs(picture - green).sum(axis=-1) < 40)
    assert len(ys) > 50
    # The car 15 m ahead is drawn above the image centre (forward points up the page).
    assert ys.min() < picture.shape[0] / 2
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (180, 320, 3), dtype=np.uint8) for _ in range(6)]
    ref_to_image = np.stack([_ref_to_image()] * 6)
    cameras = draw_cameras(tmp_path / "cams.png", images, ref_to_image, ground_truth=detections,
                           predictions=detections, title="sample t", score_threshold=0.5)
    assert Image.open(cameras).size[0] > 1000


def test_viz_command_draws_a_sample_of_a_results_file(synth_root, tmp_path):
    from ftkd.cli import main
    from ftkd.data.results import write_result_records
    from ftkd.engine.evaluation import load_nuscenes, split_sample_tokens

    nusc = load_nuscenes(synth_root, "v1.0-synth")
    token = split_sample_tokens(nusc, "synth_val")[2]
    annotation = nusc.get("sample_annotation", nusc.get("sample", token)["anns"][0])
    record = {"sample_token": token, "translation": annotation["translation"], "size": annotation["size"],
              "rotation": annotation["rotation"], "velocity": [1.0, 0.0], "detection_name": "car",
              "detection_score": 0.8, "attribute_name": ""}
    path = write_result_records({token: [record]}, tmp_path / "results.json")
    with pytest.raises(SystemExit) as exit_info:
        main(["viz", str(path), "--dataroot", str(synth_root), "--sample", token, "--out", str(tmp_path / "pics")])
    assert exit_info.value.code == 0
    for suffix in ("bev", "cameras"):
        assert Image.open(tmp_path / "pics" / f"{token}_{suffix}.png").size[0] > 500
