"""Run a student on raw camera images with a minimal calibration file: no nuScenes tables, boxes in the ego frame.

    predictor = Predictor("final.pt")                 # a checkpoint (PyTorch) or an exported .onnx (ONNX Runtime)
    calib = Calibration.load("calib.json")
    state = predictor.start()                         # one per video stream
    for images, ego_pose, timestamp in stream:        # images: the six cameras, any stored size
        detections, state = predict(images, calib, ego_pose, timestamp, state)

Images get the data layer's test-time transform (`sample_image_aug(None, ...)` + `load_image`: resize so the network
input is covered, bottom crop, centred in x), so raw images go through exactly the pixels and matrices the model saw
in evaluation. The reference frame is the ego frame of each frame (x forward, y left, z up). Cameras are taken as
captured at the frame's ego pose unless `camera_ego_poses` gives each camera's own (rigs whose cameras fire at
different times while the car moves, as nuScenes': the data layer folds that motion in the same way).

Calibration JSON (docs/deploy.md): one entry per camera name of ftkd.constants.CAMERA_NAMES:
    {"CAM_FRONT": {"intrinsics": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],
                   "sensor2ego": [[...4x4...]]}                       # or, as in nuScenes calibrated_sensor:
     "CAM_FRONT_RIGHT": {"intrinsics": ..., "translation": [x, y, z], "rotation": [w, x, y, z]}, ...}
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from ftkd.constants import CAMERA_NAMES
from ftkd.data.augment import load_image, sample_image_aug
from ftkd.data.geometry import intrinsics_to_4x4, invert_rigid, pose_matrix
from ftkd.deploy.runtime import Frame, OnnxStep, Step, StreamState, TorchStep
from ftkd.structures.outputs import Detections

ImageInput = Union[str, Path, Image.Image, np.ndarray]  # a file, a PIL image or an [H, W, 3] uint8 RGB array


@dataclass(frozen=True)
class Calibration:
    """Per camera (CAMERA_NAMES order): camera matrix of the stored image and sensor -> ego transform."""

    intrinsics: np.ndarray  # [N, 3, 3] float64, pixels of the stored (raw) image
    sensor2ego: np.ndarray  # [N, 4, 4] float64, camera (x right, y down, z forward) -> ego frame

    @staticmethod
    def from_dict(data: Mapping, where: str = "calibration") -> "Calibration":
        """Parse the calibration schema (see the module docstring); errors name the camera and key."""
        missing = [name for name in CAMERA_NAMES if name not in data]
        if missing:
            raise ValueError(f"{where}: missing cameras {missing}; expected an entry for each of {list(CAMERA_NAMES)}")
        intrinsics, sensor2ego = [], []
        for name in CAMERA_NAMES:
            entry = data[name]
            K = np.asarray(entry.get("intrinsics", []), dtype=np.float64)
            if K.shape != (3, 3):
                raise ValueError(f"{where}: {name}.intrinsics must be a 3x3 matrix, got shape {list(K.shape)}")
            if "sensor2ego" in entry:
                matrix = np.asarray(entry["sensor2ego"], dtype=np.float64)
                if matrix.shape != (4, 4):
                    raise ValueError(f"{where}: {name}.sensor2ego must be 4x4, got shape {list(matrix.shape)}")
            elif "translation" in entry and "rotation" in entry:
                translation = np.asarray(entry["translation"], dtype=np.float64)
                rotation = np.asarray(entry["rotation"], dtype=np.float64)
                if translation.shape != (3,) or rotation.shape != (4,):
                    raise ValueError(
                        f"{where}: {name}: expected translation [x, y, z] and rotation [w, x, y, z], got "
                        f"{list(translation.shape)} and {list(rotation.shape)}"
                    )
                matrix = pose_matrix(translation, rotation)
            else:
                raise ValueError(f"{where}: {name} needs 'sensor2ego' (4x4) or 'translation' + 'rotation' (w, x, y, z)")
            intrinsics.append(K)
            sensor2ego.append(matrix)
        return Calibration(np.stack(intrinsics), np.stack(sensor2ego))

    @staticmethod
    def load(path: str | Path) -> "Calibration":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"calibration {path}: cannot read JSON ({err})") from err
        return Calibration.from_dict(data, str(path))


def _open_image(image: ImageInput) -> tuple[str | io.BytesIO, int, int]:
    """Something `load_image` can open, and the stored (width, height). Arrays go through a lossless PNG buffer so
    that they are resampled exactly as files are."""
    if isinstance(image, (str, Path)):
        with Image.open(image) as opened:
            width, height = opened.size
        return str(image), width, height
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an [H, W, 3] uint8 RGB array, got {image.dtype} {list(image.shape)}")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected an image path, PIL image or [H, W, 3] uint8 array, got {type(image).__name__}")
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    buffer.seek(0)
    return buffer, image.size[0], image.size[1]


def make_frame(
    images: Sequence[ImageInput] | Mapping[str, ImageInput],
    calib: Calibration,
    ego_pose: np.ndarray,
    timestamp: float,
    image_size: tuple[int, int],
    camera_ego_poses: np.ndarray | None = None,
) -> Frame:
    """Preprocess six raw images (test-time resize/crop) and build their ego -> pixel matrices.

    Args:
        images: six images in CAMERA_NAMES order, or a mapping camera name -> image.
        calib: the rig's calibration (stored-image intrinsics).
        ego_pose: [4, 4] ego -> global (rigid; e.g. odometry), float64.
        timestamp: seconds.
        image_size: (H, W) network input of the model.
        camera_ego_poses: [N, 4, 4] ego -> global at each camera's capture time, float64 (default: `ego_pose`).
    """
    if isinstance(images, Mapping):
        missing = [name for name in CAMERA_NAMES if name not in images]
        if missing:
            raise ValueError(f"images: missing cameras {missing}")
        images = [images[name] for name in CAMERA_NAMES]
    if len(images) != len(CAMERA_NAMES):
        raise ValueError(f"expected {len(CAMERA_NAMES)} images in the order {list(CAMERA_NAMES)}, got {len(images)}")
    ego_pose = np.asarray(ego_pose, dtype=np.float64)
    if ego_pose.shape != (4, 4):
        raise ValueError(f"ego_pose: expected a 4x4 ego -> global matrix, got shape {list(ego_pose.shape)}")
    if camera_ego_poses is None:
        camera_from_frame = np.broadcast_to(np.eye(4), (len(CAMERA_NAMES), 4, 4))
    else:
        camera_ego_poses = np.asarray(camera_ego_poses, dtype=np.float64)
        if camera_ego_poses.shape != (len(CAMERA_NAMES), 4, 4):
            raise ValueError(f"camera_ego_poses: expected [{len(CAMERA_NAMES)}, 4, 4], got {list(camera_ego_poses.shape)}")
        camera_from_frame = invert_rigid(camera_ego_poses) @ ego_pose  # frame ego -> ego at each capture time
    pixels, lidar2img, intrinsics = [], [], []
    for n, image in enumerate(images):
        source, width, height = _open_image(image)
        aug = sample_image_aug(None, (height, width), image_size)
        picture = load_image(source, aug, width, height)
        pixels.append(np.asarray(picture).transpose(2, 0, 1))  # [H, W, 3] -> [3, H, W]
        image_matrix = aug.matrix(width, height)  # stored pixels -> network-input pixels
        camera_matrix = image_matrix @ calib.intrinsics[n]
        intrinsics.append(camera_matrix)
        lidar2img.append(intrinsics_to_4x4(camera_matrix) @ invert_rigid(calib.sensor2ego[n]) @ camera_from_frame[n])
    return Frame(
        images=np.ascontiguousarray(np.stack(pixels)),
        lidar2img=np.stack(lidar2img).astype(np.float32),
        intrinsics=np.stack(intrinsics).astype(np.float32),
        ego_pose=ego_pose,
        timestamp=float(timestamp),
    )


@dataclass
class PredictState:
    """A stream: the predictor it belongs to and the temporal state after the last frame (None before the first)."""

    predictor: "Predictor"
    stream: StreamState | None = None


class Predictor:
    """A student ready for raw camera streams: an ftkd checkpoint (PyTorch) or an `ftkd export` .onnx (ONNX Runtime).

    Args:
        path: checkpoint (.pt) or exported graph (.onnx).
        device: PyTorch device for a checkpoint ("cpu", "cuda").
        providers: ONNX Runtime execution providers for an .onnx file (default CPU).
        image_size: (H, W) network input for a checkpoint (default its data.image_size); an .onnx file fixes it.
    """

    def __init__(
        self,
        path: str | Path,
        device: str = "cpu",
        providers: list[str] | None = None,
        image_size: tuple[int, int] | None = None,
    ) -> None:
        path = Path(path)
        if path.suffix == ".onnx":
            self.step: Step = OnnxStep(path, providers)
        else:
            from ftkd.engine.checkpoint import load_model

            model, config = load_model(path, device)
            if getattr(config.model, "offline", False):
                raise ValueError(f"{path} holds an offline teacher (model.offline=True): it needs future frames")
            size = tuple(image_size) if image_size is not None else tuple(config.data.image_size)
            self.step = TorchStep(model, size, device)
        self.image_size = self.step.image_size

    def start(self) -> PredictState:
        """A new stream (the first frame has no past)."""
        return PredictState(self)

    def __call__(
        self,
        images: Sequence[ImageInput] | Mapping[str, ImageInput],
        calib: Calibration,
        ego_pose: np.ndarray,
        timestamp: float,
        state: PredictState | None = None,
        camera_ego_poses: np.ndarray | None = None,
    ) -> tuple[Detections, PredictState]:
        """Detections (ego frame of this frame: boxes [M, 9], scores [M], labels [M]) and the stream's next state.

        Args: see `make_frame`; `state` None (or `start()`) begins a new stream."""
        state = self.start() if state is None else state
        if state.predictor is not self:
            raise ValueError("this PredictState belongs to another Predictor")
        frame = make_frame(images, calib, ego_pose, timestamp, self.image_size, camera_ego_poses)
        detections, stream = self.step(frame, state.stream)
        return detections, PredictState(self, stream)


def predict(
    images: Sequence[ImageInput] | Mapping[str, ImageInput],
    calib: Calibration | str | Path | Mapping,
    ego_pose: np.ndarray,
    timestamp: float,
    state: PredictState | Predictor,
    camera_ego_poses: np.ndarray | None = None,
) -> tuple[Detections, PredictState]:
    """One frame of a stream: `state` is `Predictor(...).start()` (or the Predictor itself) on the first frame, then
    whatever the previous call returned. Returns detections in this frame's ego frame and the next state."""
    if isinstance(state, Predictor):
        state = state.start()
    if not isinstance(state, PredictState):
        raise TypeError(f"state: expected a Predictor or the PredictState of a previous call, got {type(state).__name__}")
    if isinstance(calib, (str, Path)):
        calib = Calibration.load(calib)
    elif isinstance(calib, Mapping):
        calib = Calibration.from_dict(calib)
    return state.predictor(images, calib, ego_pose, timestamp, state, camera_ego_poses)
