"""Run an exported student frame after frame: an ONNX Runtime session (or its PyTorch twin) that carries the state.

A `Frame` holds what a car provides for one time step: the six preprocessed images, their `lidar2img`/intrinsics
(ego frame of this frame -> pixels), the ego pose (ego -> global, float64) and the time in seconds. The stepper turns
consecutive poses and times into the graph's relative inputs (`previous_from_current`, `time_delta`, in float64 on
the host) and feeds back the state the previous call returned. `state=None` starts a new sequence.

`OnnxStep` runs the .onnx file; `TorchStep` runs the same export wrapper in PyTorch (what the graph was traced
from), so the two can be compared output by output (`compare_detections`, `check_export`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ftkd.constants import NUM_CAMERAS
from ftkd.data.geometry import invert_rigid
from ftkd.structures.outputs import Detections


@dataclass
class Frame:
    """One time step of the camera rig (N = 6 cameras in ftkd.constants.CAMERA_NAMES order)."""

    images: np.ndarray  # [N, 3, H, W] uint8 RGB at the network input size (after the test-time resize/crop)
    lidar2img: np.ndarray  # [N, 4, 4]: this frame's ego frame -> network-input pixels
    intrinsics: np.ndarray  # [N, 3, 3]: camera matrices after the resize/crop
    ego_pose: np.ndarray  # [4, 4] float64: this frame's ego frame -> global (rigid)
    timestamp: float  # seconds (any origin, the same for the whole sequence)


@dataclass
class StreamState:
    """What is carried from one frame to the next: the graph's state tensors and the previous pose and time."""

    tensors: dict = field(default_factory=dict)  # name -> np.ndarray (TorchStep) or onnxruntime.OrtValue (OnnxStep)
    ego_pose: np.ndarray | None = None  # [4, 4] float64 of the previous frame
    timestamp: float = 0.0  # seconds, previous frame


class Step:
    """Base class: `__call__(frame, state)` -> (detections in the frame's ego frame, next state)."""

    arch: str
    image_size: tuple[int, int]
    input_names: tuple[str, ...]
    state_names: tuple[str, ...]
    state_shapes: dict[str, tuple[int, ...]]

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def initial_state(self) -> dict[str, np.ndarray]:
        """Zero state tensors (ignored by the graph on the first frame, where `start` is True)."""
        return {name: np.zeros(shape, dtype=np.float32) for name, shape in self.state_shapes.items()}

    def __call__(self, frame: Frame, state: StreamState | None = None) -> tuple[Detections, StreamState]:
        H, W = self.image_size
        if frame.images.shape[-3:] != (3, H, W) or frame.images.dtype != np.uint8:
            raise ValueError(
                f"{self.arch} graph expects uint8 images [N, 3, {H}, {W}], got {frame.images.dtype} "
                f"{list(frame.images.shape)}"
            )
        pose = np.asarray(frame.ego_pose, dtype=np.float64)
        start = state is None
        if start:
            previous_from_current, time_delta = np.eye(4), 0.0
            tensors = self.initial_state()
        else:
            previous_from_current = invert_rigid(state.ego_pose) @ pose
            time_delta = float(frame.timestamp) - float(state.timestamp)
            tensors = state.tensors
        feed = {
            "images": frame.images[None],
            "lidar2img": np.asarray(frame.lidar2img, dtype=np.float32)[None],
            "intrinsics": np.asarray(frame.intrinsics, dtype=np.float32)[None],
            "previous_from_current": previous_from_current.astype(np.float32)[None],
            "time_delta": np.array([time_delta], dtype=np.float32),
            "start": np.array([start]),
            **tensors,
        }
        outputs = self.run({name: feed[name] for name in self.input_names})
        valid = outputs["valid"][0]
        detections = Detections(
            boxes=torch.from_numpy(outputs["boxes"][0][valid]),
            scores=torch.from_numpy(outputs["scores"][0][valid]),
            labels=torch.from_numpy(outputs["labels"][0][valid]),
        )
        next_state = StreamState(
            tensors={name: outputs[f"next_{name}"] for name in self.state_names},
            ego_pose=pose,
            timestamp=float(frame.timestamp),
        )
        return detections, next_state


class OnnxStep(Step):
    """An exported graph in ONNX Runtime (CPU by default; pass e.g. ["CUDAExecutionProvider"] for a GPU).

    The state outputs stay where the graph produced them (ONNX Runtime I/O binding: `OrtValue`s on the device of the
    first provider) and are fed back as they are, so a GPU run never copies SparseBEV's feature cache through the host.
    Only the detections come back as numpy arrays.
    """

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int = 0) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        providers = providers or ["CPUExecutionProvider"]
        self.session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        self.state_device = "cuda" if providers[0].startswith("CUDA") else "cpu"
        meta = self.session.get_modelmeta().custom_metadata_map
        if "ftkd.arch" not in meta:
            raise ValueError(f"{path}: not an ftkd export (no 'ftkd.arch' metadata); export it with `ftkd export`")
        self.arch = meta["ftkd.arch"]
        self.image_size = tuple(json.loads(meta["ftkd.image_size"]))
        self.state_names = tuple(json.loads(meta["ftkd.state_names"]))
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        shapes = {i.name: tuple(i.shape) for i in self.session.get_inputs()}
        self.state_shapes = {name: shapes[name] for name in self.state_names}
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feed: dict) -> dict:
        """numpy arrays or OrtValues in; numpy detections and OrtValue next-state tensors out."""
        import onnxruntime

        binding = self.session.io_binding()
        for name, value in feed.items():
            if isinstance(value, onnxruntime.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in self.output_names:
            binding.bind_output(name, self.state_device if name.startswith("next_") else "cpu")
        self.session.run_with_iobinding(binding)
        outputs = dict(zip(self.output_names, binding.get_outputs()))
        return {name: value if name.startswith("next_") else value.numpy() for name, value in outputs.items()}


class TorchStep(Step):
    """The export wrapper of a model in PyTorch (eval mode, no autograd): the reference the graph is checked against."""

    def __init__(self, model: nn.Module, image_size: tuple[int, int], device: str | torch.device = "cpu") -> None:
        from ftkd.deploy.export import build_step

        self.device = torch.device(device)
        self.step = build_step(model.to(self.device), image_size)
        self.arch = model.config.arch
        self.image_size = tuple(image_size)
        inputs, outputs = self.step.specs()
        self.input_names = tuple(spec.name for spec in inputs)
        self.output_names = [spec.name for spec in outputs]
        self.state_names = tuple(self.step.state_names)
        self.state_shapes = {spec.name: spec.shape for spec in inputs if spec.name in self.state_names}

    @torch.no_grad()
    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = [torch.from_numpy(np.ascontiguousarray(feed[name])).to(self.device) for name in self.input_names]
        outputs = self.step(*inputs)
        return {name: value.cpu().numpy() for name, value in zip(self.output_names, outputs)}


def compare_detections(reference: Detections, other: Detections, score_tolerance: float = 1e-4) -> tuple[float, float]:
    """(max |score difference|, max |box difference|) of two top-k lists of the same model, order-robust.

    Scores are compared rank by rank. Boxes and labels are compared only at ranks whose reference score is more than
    `score_tolerance` away from its neighbours: elsewhere two (query, class) pairs may swap ranks by rounding alone.
    Raises ValueError if the lists differ in length or in a label at an unambiguous rank.
    """
    if len(reference.scores) != len(other.scores):
        raise ValueError(f"{len(reference.scores)} reference detections but {len(other.scores)} others")
    if len(reference.scores) == 0:
        return 0.0, 0.0
    scores = reference.scores.double()
    gaps = (scores[:-1] - scores[1:]).abs()
    clear = torch.ones(len(scores), dtype=torch.bool)
    clear[1:] &= gaps > score_tolerance
    clear[:-1] &= gaps > score_tolerance
    if (reference.labels[clear] != other.labels[clear]).any():
        raise ValueError("labels differ at ranks whose scores are unambiguous")
    score_diff = (scores - other.scores.double()).abs().max().item()
    box_diff = (reference.boxes[clear].double() - other.boxes[clear].double()).abs().max().item() if clear.any() else 0.0
    return score_diff, box_diff


def ring_rig(image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """A simple 6-camera ring (pinholes 1.5 m above the ego origin, 70 deg field of view, yaws in CAMERA_NAMES order):
    lidar2img [N, 4, 4] ego -> pixels and intrinsics [N, 3, 3], for checks that need plausible geometry only."""
    H, W = image_size
    lidar2img, intrinsics = [], []
    for yaw_deg in (0.0, -55.0, 55.0, 180.0, 110.0, -110.0):
        yaw = torch.deg2rad(torch.tensor(yaw_deg, dtype=torch.float64))
        right = torch.stack([yaw.sin(), -yaw.cos(), torch.zeros(())])
        forward = torch.stack([yaw.cos(), yaw.sin(), torch.zeros(())])
        down = torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64)
        rotation = torch.stack([right, down, forward])  # rows: camera axes in the ego frame
        focal = W / 2 / torch.tan(torch.deg2rad(torch.tensor(35.0, dtype=torch.float64)))
        K = torch.tensor([[focal, 0.0, W / 2], [0.0, focal, H / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)
        ego_to_camera = torch.eye(4, dtype=torch.float64)
        ego_to_camera[:3, :3] = rotation
        ego_to_camera[:3, 3] = -rotation @ torch.tensor([0.0, 0.0, 1.5], dtype=torch.float64)
        K4 = torch.eye(4, dtype=torch.float64)
        K4[:3, :3] = K
        lidar2img.append(K4 @ ego_to_camera)
        intrinsics.append(K)
    return torch.stack(lidar2img).float(), torch.stack(intrinsics).float()


def check_export(checkpoint: str | Path, onnx_path: str | Path, frames: int = 3, seed: int = 0) -> dict[str, float]:
    """Run an exported graph in ONNX Runtime and its PyTorch wrapper on `frames` random frames of a ring rig driving
    forward at 10 m/s (state carried), and return the largest differences; raises if they exceed 1e-3."""
    from ftkd.engine.checkpoint import load_model

    onnx_step = OnnxStep(onnx_path)
    model, _ = load_model(checkpoint, "cpu")
    torch_step = TorchStep(model, onnx_step.image_size)
    lidar2img, intrinsics = ring_rig(onnx_step.image_size)
    generator = torch.Generator().manual_seed(seed)
    onnx_state = torch_state = None
    worst = {"frames": frames, "max_score_diff": 0.0, "max_box_diff": 0.0}
    for t in range(frames):
        pose = torch.eye(4, dtype=torch.float64)
        pose[0, 3] = 5.0 * t
        images = torch.randint(0, 256, (NUM_CAMERAS, 3, *onnx_step.image_size), dtype=torch.uint8, generator=generator)
        frame = Frame(images.numpy(), lidar2img.numpy(), intrinsics.numpy(), pose.numpy(), 0.5 * t)
        onnx_detections, onnx_state = onnx_step(frame, onnx_state)
        torch_detections, torch_state = torch_step(frame, torch_state)
        score_diff, box_diff = compare_detections(torch_detections, onnx_detections)
        worst["max_score_diff"] = max(worst["max_score_diff"], score_diff)
        worst["max_box_diff"] = max(worst["max_box_diff"], box_diff)
    if worst["max_score_diff"] > 1e-3 or worst["max_box_diff"] > 1e-3:
        raise ValueError(f"{onnx_path}: ONNX Runtime and PyTorch disagree: {worst}")
    return worst
