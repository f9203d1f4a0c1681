"""Geometry of the data layer against the nuscenes-devkit's own Box / view_points / pyquaternion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fake_nuscenes import VERSION
from nuscenes.eval.detection.utils import category_to_detection_name
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.geometry_utils import BoxVisibility, view_points
from pyquaternion import Quaternion

from ftkd.constants import CAMERA_NAMES, CLASS_NAMES
from ftkd.data.config import DataConfig
from ftkd.data.dataset import TemporalDataset
from ftkd.data.geometry import invert_rigid, pose_matrix, project_points, quaternion_to_matrix
from ftkd.structures.boxes import box_corners


def test_quaternion_and_inverse_match_pyquaternion():
    rng = np.random.default_rng(0)
    for _ in range(5):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        np.testing.assert_allclose(quaternion_to_matrix(q), Quaternion(q).rotation_matrix, atol=1e-12)
        pose = pose_matrix(rng.normal(size=3) * 100, q)
        np.testing.assert_allclose(invert_rigid(pose), np.linalg.inv(pose), atol=1e-9)


@pytest.fixture(scope="module")
def nusc(fake_root):
    return NuScenes(version=VERSION, dataroot=str(fake_root), verbose=False)


@pytest.fixture(scope="module")
def dataset(fake_root):
    # stored size == network input size: the test-time image transform is the identity
    config = DataConfig(dataroot=str(fake_root), version=VERSION, image_size=(72, 128), num_past_frames=2,
                        num_future_frames=1)
    return TemporalDataset(config, "fake_all", train=False)


def _devkit_pixels(nusc: NuScenes, ann_token: str, sd_token: str) -> tuple[np.ndarray, np.ndarray]:
    """Corners of a global annotation box in one image, by the devkit's Box operations: [8, 2] pixels, [8] depth."""
    sd = nusc.get("sample_data", sd_token)
    pose = nusc.get("ego_pose", sd["ego_pose_token"])
    calib = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    box = nusc.get_box(ann_token)
    box.translate(-np.array(pose["translation"]))
    box.rotate(Quaternion(pose["rotation"]).inverse)
    box.translate(-np.array(calib["translation"]))
    box.rotate(Quaternion(calib["rotation"]).inverse)
    corners = box.corners()  # [3, 8]
    return view_points(corners, np.array(calib["camera_intrinsic"]), normalize=True)[:2].T, corners[2]


def test_gt_boxes_match_devkit(nusc, dataset):
    for i, token in enumerate(dataset.sample_tokens):
        sample = dataset[i]
        lidar_sd = nusc.get("sample_data", nusc.get("sample", token)["data"]["LIDAR_TOP"])
        pose = nusc.get("ego_pose", lidar_sd["ego_pose_token"])
        expected = {}
        for ann_token in nusc.get("sample", token)["anns"]:
            ann = nusc.get("sample_annotation", ann_token)
            name = category_to_detection_name(ann["category_name"])
            box = nusc.get_box(ann_token)
            box.translate(-np.array(pose["translation"]))
            box.rotate(Quaternion(pose["rotation"]).inverse)
            velocity = Quaternion(pose["rotation"]).inverse.rotate(nusc.box_velocity(ann_token))[:2]
            inside = abs(box.center[0]) <= 51.2 and abs(box.center[1]) <= 51.2
            if name is None or ann["num_lidar_pts"] + ann["num_radar_pts"] == 0 or not inside:
                continue
            expected[ann["instance_token"]] = (
                [*box.center, *box.wlh, box.orientation.yaw_pitch_roll[0], *np.nan_to_num(velocity)],
                CLASS_NAMES.index(name),
            )
        tokens = list(sample.meta.extra["instance_tokens"])
        assert sorted(tokens) == sorted(expected), f"sample {token}: kept boxes differ from the devkit filter"
        for box, label, instance in zip(sample.gt_boxes, sample.gt_labels, tokens):
            np.testing.assert_allclose(box.numpy(), expected[instance][0], atol=1e-4)
            assert int(label) == expected[instance][1]
    # the instance seen in one keyframe has an undefined velocity: zero target, flagged
    first = dataset[0]
    assert not first.meta.extra["velocity_valid"].all()
    assert (first.gt_boxes[~torch.from_numpy(first.meta.extra["velocity_valid"]), 7:9] == 0).all()


def test_lidar2img_matches_devkit_projection(nusc, dataset):
    """Box corners projected with our lidar2img (current, past and future frames) == devkit Box + view_points."""
    filename_to_token = {sd["filename"]: sd["token"] for sd in nusc.sample_data}
    checked = 0
    for i in (0, 2, 5, 8):
        sample = dataset[i]
        k = int(dataset.sample_indices[i])
        scene = dataset.index.scenes[dataset.index.sample_scene[k]]
        frames, _, _ = dataset._frame_positions(k, None)
        anns = nusc.get("sample", sample.meta.sample_token)["anns"]
        ann_tokens = {nusc.get("sample_annotation", a)["instance_token"]: a for a in anns}
        corners = box_corners(sample.gt_boxes.double()).numpy()  # [M, 8, 3] reference frame
        for m, instance in enumerate(sample.meta.extra["instance_tokens"]):
            for f in range(frames.shape[0]):
                for n in range(len(CAMERA_NAMES)):
                    sd_token = filename_to_token[scene.cameras[n].filenames[frames[f, n]].decode()]
                    expected, depth = _devkit_pixels(nusc, ann_tokens[instance], sd_token)
                    pixels, our_depth = project_points(sample.lidar2img[f, n].double().numpy(), corners[m])
                    front = depth > 0.5
                    np.testing.assert_allclose(our_depth, depth, atol=1e-3)
                    np.testing.assert_allclose(pixels[front], expected[front], atol=2e-2)
                    checked += int(front.sum())
    assert checked > 100


def test_current_frame_matches_get_sample_data(nusc, dataset):
    """The devkit's own entry point for the keyframe images: nusc.get_sample_data + view_points."""
    sample = dataset[1]
    record = nusc.get("sample", sample.meta.sample_token)
    corners = box_corners(sample.gt_boxes.double()).numpy()
    by_instance = {inst: m for m, inst in enumerate(sample.meta.extra["instance_tokens"])}
    for n, channel in enumerate(CAMERA_NAMES):
        _, boxes, camera_matrix = nusc.get_sample_data(record["data"][channel], box_vis_level=BoxVisibility.NONE)
        np.testing.assert_allclose(sample.intrinsics[0, n].double().numpy(), camera_matrix, atol=1e-4)
        for box in boxes:
            m = by_instance.get(nusc.get("sample_annotation", box.token)["instance_token"])
            if m is None:
                continue
            front = box.corners()[2] > 0.5
            expected = view_points(box.corners(), camera_matrix, normalize=True)[:2].T
            pixels, _ = project_points(sample.lidar2img[0, n].double().numpy(), corners[m])
            np.testing.assert_allclose(pixels[front], expected[front], atol=2e-2)


def test_time_offsets_and_ego_pose(nusc, dataset):
    sample = dataset[2]  # scene a, keyframe 2: past frames are keyframes 1 and 0 (6 sweeps apart)
    np.testing.assert_allclose(sample.time_offsets.numpy(), [0.0, 0.5, 1.0, -0.5], atol=1e-5)
    assert sample.frame_valid.all()
    lidar_sd = nusc.get("sample_data", nusc.get("sample", sample.meta.sample_token)["data"]["LIDAR_TOP"])
    pose = nusc.get("ego_pose", lidar_sd["ego_pose_token"])
    expected = np.eye(4)
    expected[:3, :3] = Quaternion(pose["rotation"]).rotation_matrix
    expected[:3, 3] = pose["translation"]
    np.testing.assert_allclose(sample.meta.ref_to_global, expected, atol=1e-9)
    np.testing.assert_allclose(sample.ego_pose.numpy(), expected, atol=1e-9)  # no BEV augmentation at test time
    assert sample.timestamp == pytest.approx(lidar_sd["timestamp"] * 1e-6)
