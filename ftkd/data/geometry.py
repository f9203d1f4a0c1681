"""4x4 homogeneous transforms and the `lidar2img` composition (numpy, float64).

Frames: "reference" is the current keyframe's ego frame (x forward, y left, z up) at the LIDAR_TOP keyframe
timestamp; "ego(t)" is the ego frame at another sample_data's timestamp; "camera" is x right, y down, z along the
optical axis; pixels use the OpenCV convention (pixel centres at integer coordinates).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def quaternion_to_matrix(quaternion: Sequence[float] | np.ndarray) -> np.ndarray:
    """[..., 4] unit quaternions (w, x, y, z; nuScenes / pyquaternion order) -> [..., 3, 3] rotation matrices."""
    q = np.asarray(quaternion, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)  # [..., 3, 3]


def pose_matrix(translation: Sequence[float] | np.ndarray, rotation: Sequence[float] | np.ndarray) -> np.ndarray:
    """nuScenes (translation [..., 3] metres, rotation quaternion [..., 4] wxyz) -> [..., 4, 4] child-to-parent."""
    translation = np.asarray(translation, dtype=np.float64)
    rotation_matrix = quaternion_to_matrix(rotation)
    out = np.zeros(rotation_matrix.shape[:-2] + (4, 4), dtype=np.float64)
    out[..., :3, :3] = rotation_matrix
    out[..., :3, 3] = translation
    out[..., 3, 3] = 1.0
    return out


def invert_rigid(matrix: np.ndarray) -> np.ndarray:
    """Inverse of [..., 4, 4] rigid transforms (rotation + translation), exact and cheaper than `np.linalg.inv`."""
    rotation_t = np.swapaxes(matrix[..., :3, :3], -1, -2)
    out = np.zeros_like(matrix)
    out[..., :3, :3] = rotation_t
    out[..., :3, 3] = -(rotation_t @ matrix[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def intrinsics_to_4x4(intrinsics: np.ndarray) -> np.ndarray:
    """[..., 3, 3] camera matrices -> [..., 4, 4] (identity in the last row/column) for homogeneous chains."""
    out = np.zeros(intrinsics.shape[:-2] + (4, 4), dtype=np.float64)
    out[..., :3, :3] = intrinsics
    out[..., 3, 3] = 1.0
    return out


def rotation_z(angle: float) -> np.ndarray:
    """[4, 4] rotation by `angle` radians about +z (counter-clockwise seen from above)."""
    cos, sin = np.cos(angle), np.sin(angle)
    out = np.eye(4)
    out[:2, :2] = [[cos, -sin], [sin, cos]]
    return out


def compose_lidar2img(
    ref_to_global: np.ndarray, ego_to_global: np.ndarray, camera_to_ego: np.ndarray, intrinsics: np.ndarray
) -> np.ndarray:
    """Reference frame -> pixels of one camera image, ego motion folded in.

    Args:
        ref_to_global: [4, 4] reference (current keyframe ego) frame -> global.
        ego_to_global: [..., 4, 4] ego pose at *that image's* timestamp (its sample_data's ego_pose).
        camera_to_ego: [..., 4, 4] the camera's calibrated_sensor (sensor -> ego).
        intrinsics: [..., 3, 3] camera matrix of the stored image.

    Returns:
        [..., 4, 4] float64 `lidar2img`: [u*d, v*d, d, 1] = lidar2img @ [x, y, z, 1] with d the depth (metres).
    """
    global_to_camera = invert_rigid(camera_to_ego) @ invert_rigid(ego_to_global)
    return intrinsics_to_4x4(intrinsics) @ global_to_camera @ ref_to_global


def project_points(lidar2img: np.ndarray, points: np.ndarray, min_depth: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Project [P, 3] reference-frame points with a [4, 4] `lidar2img` -> ([P, 2] pixels, [P] depth in metres)."""
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1) @ lidar2img.T  # [P, 4]
    depth = homogeneous[:, 2]
    pixels = homogeneous[:, :2] / np.maximum(depth, min_depth)[:, None]
    return pixels, depth
