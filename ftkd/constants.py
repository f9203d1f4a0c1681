"""Names and conventions shared by every part of ftkd (nuScenes detection benchmark)."""

# The 10 nuScenes detection classes, in the order used for class indices everywhere in ftkd
# (the order of mmdet3d / SparseBEV / StreamPETR, so label i means the same thing as there).
CLASS_NAMES: tuple[str, ...] = (
    "car",
    "truck",
    "construction_vehicle",
    "bus",
    "trailer",
    "barrier",
    "motorcycle",
    "bicycle",
    "pedestrian",
    "traffic_cone",
)
NUM_CLASSES = len(CLASS_NAMES)

# The six cameras in nuScenes order; images[:, :, n] is CAMERA_NAMES[n].
CAMERA_NAMES: tuple[str, ...] = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_FRONT_LEFT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_BACK_RIGHT",
)
NUM_CAMERAS = len(CAMERA_NAMES)
LIDAR_NAME = "LIDAR_TOP"

# Box layout of every [M, 9] box tensor in ftkd (targets, decoded predictions):
#   x, y, z  centre of gravity (metres, in the reference frame: the current keyframe's ego frame)
#   w, l, h  size (metres; l along the box's heading, as nuScenes' [w, l, h])
#   yaw      heading of the length axis, counter-clockwise from the frame's +x axis (radians)
#   vx, vy   velocity (m/s, in the reference frame)
BOX_DIM = 9
# Regression code layout ([..., 10]) used by both detectors, their losses and logit distillation:
#   x, y, z, log w, log l, log h, sin yaw, cos yaw, vx, vy
CODE_DIM = 10

# Default attribute per class when a prediction carries none (nuScenes / mmdet3d convention),
# with the speed rule applied by the results writer (moving above 0.2 m/s).
DEFAULT_ATTRIBUTES: dict[str, str] = {
    "car": "vehicle.parked",
    "truck": "vehicle.parked",
    "construction_vehicle": "vehicle.parked",
    "bus": "vehicle.moving",
    "trailer": "vehicle.parked",
    "barrier": "",
    "motorcycle": "cycle.without_rider",
    "bicycle": "cycle.without_rider",
    "pedestrian": "pedestrian.moving",
    "traffic_cone": "",
}

# ImageNet statistics (RGB, 0..255) for normalising images on the device.
IMAGE_MEAN = (123.675, 116.28, 103.53)
IMAGE_STD = (58.395, 57.12, 57.375)
