"""The real nuScenes sensor rig (log n015): six cameras and LIDAR_TOP, with intrinsics scaled to the stored size.

Extrinsics are sensor -> ego (ego: x forward, y left, z up, origin on the ground below the rear axle; camera:
x right, y down, z along the optical axis). Quaternions are [w, x, y, z] as in nuScenes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ftkd.constants import CAMERA_NAMES, LIDAR_NAME

FULL_WIDTH, FULL_HEIGHT = 1600, 900  # the size the real intrinsics belong to

# channel -> (translation m, rotation [w, x, y, z], (fx = fy, cx, cy) at 1600x900)
NUSCENES_CAMERAS: dict[str, tuple[tuple[float, ...], tuple[float, ...], tuple[float, float, float]]] = {
    "CAM_FRONT": (
        (1.70079118954, 0.0159456324149, 1.51095763913),
        (0.4998015430569128, -0.5030316162024876, 0.4997798114386805, -0.49737083824542755),
        (1266.417203046554, 816.2670197447984, 491.50706579294757),
    ),
    "CAM_FRONT_RIGHT": (
        (1.5508477543, -0.493404796419, 1.49574800619),
        (0.2060347966337182, -0.2026940577919598, 0.6824507824531167, -0.6713610884174485),
        (1260.8474446004698, 807.968244525554, 495.3344268742088),
    ),
    "CAM_FRONT_LEFT": (
        (1.52387798135, 0.494631336551, 1.50932822144),
        (0.6757265034669446, -0.6736266522251881, 0.21214015046209478, -0.21122827103904068),
        (1272.5979470598488, 826.6154927353808, 479.75165386361925),
    ),
    "CAM_BACK": (
        (0.0283260309358, 0.00345136761476, 1.57910346144),
        (0.5037872666382278, -0.49740249788611096, -0.4941850223835201, 0.5045496097725578),
        (809.2209905677063, 829.2196003259838, 481.77842384512485),
    ),
    "CAM_BACK_LEFT": (
        (1.03569100218, 0.484795032713, 1.59097014818),
        (0.6924185592174665, -0.7031619420114925, -0.11648342771943819, 0.11203317912370753),
        (1256.7414812095406, 792.1125740759628, 492.7757465151356),
    ),
    "CAM_BACK_RIGHT": (
        (1.0148780988, -0.480568219723, 1.56239545128),
        (0.12280980120078765, -0.132400842670559, -0.7004305821388234, 0.690496031265798),
        (1259.5137405846733, 807.2529053838625, 501.19579884916527),
    ),
}
NUSCENES_LIDAR = (
    (0.943713, 0.0, 1.84023),
    (0.7077955119163518, -0.006492242056004365, 0.010646214713995808, -0.7063073142877817),
)
# Each camera fires when the spinning lidar sweeps across its field of view (seconds after the lidar keyframe).
TRIGGER_OFFSETS: dict[str, float] = {
    "CAM_FRONT_LEFT": 0.007,
    "CAM_FRONT": 0.015,
    "CAM_FRONT_RIGHT": 0.022,
    "CAM_BACK_RIGHT": 0.031,
    "CAM_BACK": 0.040,
    "CAM_BACK_LEFT": 0.049,
}


def quaternion_to_matrix(q: tuple[float, ...] | np.ndarray) -> np.ndarray:
    """[w, x, y, z] quaternion (normalised here) -> [3, 3] rotation matrix."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def yaw_quaternion(yaw: float) -> list[float]:
    """Rotation by `yaw` radians about +z as a [w, x, y, z] quaternion."""
    return [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]


@dataclass(frozen=True)
class Sensor:
    """One calibrated sensor: sensor -> ego extrinsics and (cameras) the intrinsics at the stored size."""

    channel: str
    modality: str  # "camera" or "lidar"
    translation: tuple[float, float, float]  # metres, ego frame
    rotation: tuple[float, float, float, float]  # [w, x, y, z], sensor -> ego
    intrinsic: np.ndarray | None  # [3, 3] at the stored image size; None for the lidar

    @property
    def sensor_to_ego(self) -> np.ndarray:
        """[4, 4] sensor -> ego transform."""
        matrix = np.eye(4)
        matrix[:3, :3] = quaternion_to_matrix(self.rotation)
        matrix[:3, 3] = self.translation
        return matrix


def build_rig(width: int, height: int) -> dict[str, Sensor]:
    """The six cameras (in CAMERA_NAMES order) and LIDAR_TOP; intrinsics scaled from 1600x900 to width x height."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    sx, sy = width / FULL_WIDTH, height / FULL_HEIGHT
    rig: dict[str, Sensor] = {}
    for channel in CAMERA_NAMES:
        translation, rotation, (f, cx, cy) = NUSCENES_CAMERAS[channel]
        intrinsic = np.array([[f * sx, 0.0, cx * sx], [0.0, f * sy, cy * sy], [0.0, 0.0, 1.0]])
        rig[channel] = Sensor(channel, "camera", translation, rotation, intrinsic)
    rig[LIDAR_NAME] = Sensor(LIDAR_NAME, "lidar", NUSCENES_LIDAR[0], NUSCENES_LIDAR[1], None)
    return rig
