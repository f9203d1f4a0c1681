"""Spatio-temporal sampling against a naive per-point bilinear loop and the nuscenes-devkit geometry."""

import math

import numpy as np
import torch
from nuscenes.utils.data_classes import Box
from nuscenes.utils.geometry_utils import transform_matrix, view_points
from pyquaternion import Quaternion
from sparsebev_fixtures import CAMERA_YAWS_DEG, camera_matrices

from ftkd.models.sparsebev.sampling import (
    arrange_features,
    make_sample_points,
    project_points,
    sample_multiview,
    warp_points,
)


def naive_sample(features, points, level_weights, lidar2img, image_size):
    """Per-point loop: first camera that sees the point, bilinear (pixel centres at i + 0.5, zero outside)."""
    H, W = image_size
    B, Q, T, G, P, _ = points.shape
    N = lidar2img.shape[2]
    C = features[0].shape[3]
    Cg = C // G
    out = torch.zeros(B, Q, G, T * P, Cg, dtype=torch.float64)
    for b, q, t, g, p in np.ndindex(B, Q, T, G, P):
        point = torch.cat([points[b, q, t, g, p].double(), torch.ones(1, dtype=torch.float64)])
        chosen = None
        for n in range(N):
            cam = lidar2img[b, t, n].double() @ point
            if cam[2] > 1e-5:
                u, v = (cam[0] / cam[2]).item() / W, (cam[1] / cam[2]).item() / H
                if 0 < u < 1 and 0 < v < 1:
                    chosen = (n, u, v)
                    break
        if chosen is None:
            continue
        n, u, v = chosen
        for level, feature in enumerate(features):
            Hl, Wl = feature.shape[-2:]
            x, y = u * Wl - 0.5, v * Hl - 0.5
            x0, y0 = math.floor(x), math.floor(y)
            value = torch.zeros(Cg, dtype=torch.float64)
            for xi, yi in [(x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)]:
                if 0 <= xi < Wl and 0 <= yi < Hl:
                    weight = (1 - abs(x - xi)) * (1 - abs(y - yi))
                    value += weight * feature[b, t, n, g * Cg : (g + 1) * Cg, yi, xi].double()
            out[b, q, g, t * P + p] += level_weights[b, q, g, p, level].double() * value
    return out


def rig_lidar2img(B, T, H, W):
    lidar2img = torch.stack([camera_matrices(yaw, H, W)[0] for yaw in CAMERA_YAWS_DEG])  # [N, 4, 4]
    lidar2img = lidar2img[None, None].repeat(B, T, 1, 1, 1)
    for t in range(T):
        lidar2img[:, t, :, 0, 3] += 0.3 * t  # a different projection per frame
    return lidar2img


def test_sample_multiview_equals_naive_loop():
    torch.manual_seed(0)
    B, Q, T, G, P, C, H, W = 2, 3, 2, 2, 3, 4, 32, 88
    features = [torch.randn(B, T, 6, C, 8, 22), torch.randn(B, T, 6, C, 4, 11)]
    angle = torch.rand(B, Q, T, G, P) * 2 * math.pi
    radius = 3 + torch.rand(B, Q, T, G, P) * 15
    z = torch.rand(B, Q, T, G, P) * 3 - 1
    points = torch.stack([radius * angle.cos(), radius * angle.sin(), z], dim=-1)
    points[0, 0, 0, 0, 0] = torch.tensor([0.0, 0.0, 30.0])  # straight up: seen by no camera
    level_weights = torch.rand(B, Q, G, P, 2).softmax(-1)
    lidar2img = rig_lidar2img(B, T, H, W)
    arranged = [arrange_features(f, G) for f in features]
    ours = sample_multiview(arranged, points, level_weights, lidar2img, (H, W))
    reference = naive_sample(features, points, level_weights, lidar2img, (H, W))
    torch.testing.assert_close(ours.double(), reference, rtol=1e-4, atol=1e-5)
    assert ours[0, 0, 0, 0].abs().max() == 0  # unseen point -> zero


def test_first_valid_view_is_used():
    H, W = 32, 88
    lidar2img = rig_lidar2img(1, 1, H, W)
    angle = math.radians(-27)  # inside CAM_FRONT (+-35 deg) and CAM_FRONT_RIGHT (-55 +- 35 deg)
    points = torch.tensor([10 * math.cos(angle), 10 * math.sin(angle), 1.0]).view(1, 1, 1, 1, 1, 3)
    uv, valid = project_points(points.view(1, 1, 1, 1, 3), lidar2img, (H, W))
    assert valid[0, 0, :, 0, 0].tolist() == [True, True, False, False, False, False]
    features = torch.arange(1.0, 7.0).view(1, 1, 6, 1, 1, 1).expand(1, 1, 6, 2, 4, 11).contiguous()  # value = view + 1
    out = sample_multiview([arrange_features(features, 1)], points, torch.ones(1, 1, 1, 1, 1), lidar2img, (H, W))
    torch.testing.assert_close(out, torch.ones(1, 1, 1, 1, 2))


def test_sample_points_are_devkit_box_corners():
    centre, size, yaw = torch.tensor([4.0, -2.0, 1.0]), torch.tensor([1.8, 4.5, 1.6]), 0.7
    signs = torch.tensor([[1, 1, 1], [1, -1, 1], [1, -1, -1], [1, 1, -1], [-1, 1, 1], [-1, -1, 1], [-1, -1, -1], [-1, 1, -1]])
    points = make_sample_points(centre.view(1, 1, 3), size.view(1, 1, 3), torch.tensor([[yaw]]), 0.5 * signs.float().view(1, 1, 8, 3))
    box = Box(centre.tolist(), size.tolist(), Quaternion(axis=[0, 0, 1], radians=yaw))
    torch.testing.assert_close(points[0, 0].double(), torch.from_numpy(box.corners().T), rtol=0, atol=1e-5)


def test_projection_into_past_and_future_frames_matches_devkit():
    """A moving object seen from a moving ego: our warp + lidar2img lands on the devkit's pixel in every frame."""
    H, W = 900, 1600
    K = np.array([[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]])  # nuScenes CAM_FRONT intrinsics
    cam_translation = [1.70, 0.016, 1.51]
    cam_rotation = Quaternion([0.4998, -0.5030, 0.4998, -0.4970])  # nuScenes CAM_FRONT -> ego
    cam2ego = transform_matrix(cam_translation, cam_rotation)
    dts = [0.0, 0.5, 1.0, -0.5, -1.0]  # current, 2 past, 2 future (seconds, current - frame)
    ego2global = {
        dt: transform_matrix([600.0 - 8.0 * dt, 1600.0 + 1.0 * dt, 0.0], Quaternion(axis=[0, 0, 1], radians=0.3 - 0.05 * dt))
        for dt in dts
    }
    lidar2img = torch.zeros(1, len(dts), 1, 4, 4)
    K4 = np.eye(4)
    K4[:3, :3] = K
    for t, dt in enumerate(dts):
        matrix = K4 @ np.linalg.inv(cam2ego) @ np.linalg.inv(ego2global[dt]) @ ego2global[0.0]
        lidar2img[0, t, 0] = torch.from_numpy(matrix).float()
    centre, velocity = np.array([20.0, 1.5, 0.8]), np.array([6.0, -1.0])  # reference (current ego) frame
    warped = warp_points(
        torch.tensor(centre, dtype=torch.float32).view(1, 1, 1, 3),
        torch.tensor(velocity, dtype=torch.float32).view(1, 1, 2),
        torch.tensor([dts], dtype=torch.float32),
    )  # [1, 1, T, 1, 3]
    uv, valid = project_points(warped, lidar2img, (H, W))
    for t, dt in enumerate(dts):
        position = centre.copy()
        position[:2] -= velocity * dt  # constant velocity: dt seconds before now (after, for dt < 0)
        box = Box(position.tolist(), [1.8, 4.5, 1.6], Quaternion(axis=[0, 0, 1], radians=0.0))
        box.rotate(Quaternion(matrix=ego2global[0.0][:3, :3]))  # current ego -> global
        box.translate(ego2global[0.0][:3, 3])
        box.translate(-ego2global[dt][:3, 3])  # global -> ego of frame t
        box.rotate(Quaternion(matrix=ego2global[dt][:3, :3]).inverse)
        box.translate(-np.array(cam_translation))  # ego -> camera
        box.rotate(cam_rotation.inverse)
        pixel = view_points(box.center[:, None], K, normalize=True)[:2, 0]
        ours = uv[0, t, 0, 0, 0].double().numpy() * [W, H]
        np.testing.assert_allclose(ours, pixel, atol=0.05)
        assert valid[0, t, 0, 0, 0]
    assert uv[0, 3, 0, 0, 0, 0] != uv[0, 4, 0, 0, 0, 0]  # future frames differ


def test_future_warp_moves_forward():
    points = torch.zeros(1, 1, 1, 3)
    warped = warp_points(points, torch.tensor([[[2.0, 0.0]]]), torch.tensor([[0.0, 0.5, -0.5]]))
    torch.testing.assert_close(warped[0, 0, :, 0, 0], torch.tensor([0.0, -1.0, 1.0]))
