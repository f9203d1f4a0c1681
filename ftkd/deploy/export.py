"""ONNX export of the online students: one graph per detector that runs one new frame with explicit temporal state.

A runtime feeds the current frame (6 uint8 images, per-camera matrices, the ego motion and the time since the previous
frame) plus the state returned by the previous call, and gets the top-k decoded boxes and the next state back:

- SparseBEV (`SparseBEVStep`): the state is the last T-1 frames' FPN features (in the decoder's sampling layout, see
  `arrange_features`), their `lidar2img` relative to the *previous* frame's ego frame and their time offsets
  relative to the previous frame. The graph ages them by the ego motion / time delta, decodes T frames, and returns
  the newest T-1 as the next state: only the new frame goes through the backbone.
- StreamPETR (`StreamPETRStep`): the state is the memory queue (embeddings, centres, ages, poses, velocities),
  expressed in the previous frame's ego frame. The graph moves it into the current ego frame and runs the model's
  own `forward_frame` with the current frame as "global" frame and "now" as time origin, so the memory rule is the
  model's (reset with pseudo points at a sequence start, top-k push).

All state is float32 and relative (metres within ~100 m, seconds within a few s), so no float64 and no absolute
timestamps cross the graph boundary. `start` (bool) marks a sequence start: the graph then ignores the state (SparseBEV
repeats the current frame in every past slot, as the data layer pads a scene start; StreamPETR resets its memory).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple
from unittest import mock

import torch
from torch import Tensor, nn

from ftkd.constants import CAMERA_NAMES, CLASS_NAMES, NUM_CAMERAS
from ftkd.structures.boxes import decode_boxes

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17  # GridSample (opset 16) and LayerNormalization (opset 17) are native ONNX ops from here on


def affine_inverse(matrix: Tensor) -> Tensor:
    """Inverse of [..., 4, 4] affine transforms (last row 0, 0, 0, 1) from elementary ops only (ONNX-exportable).

    The 3x3 block is inverted with its adjugate: row i of inv(A) is the cross product of the other two columns of A
    over det(A). Works in the input dtype (float64 stays float64).
    """
    A, b = matrix[..., :3, :3], matrix[..., :3, 3:]
    c0, c1, c2 = A[..., :, 0], A[..., :, 1], A[..., :, 2]

    def cross(x: Tensor, y: Tensor) -> Tensor:
        return torch.stack(
            [
                x[..., 1] * y[..., 2] - x[..., 2] * y[..., 1],
                x[..., 2] * y[..., 0] - x[..., 0] * y[..., 2],
                x[..., 0] * y[..., 1] - x[..., 1] * y[..., 0],
            ],
            dim=-1,
        )

    rows = torch.stack([cross(c1, c2), cross(c2, c0), cross(c0, c1)], dim=-2)  # [..., 3, 3] adjugate
    determinant = (c0 * rows[..., 0, :]).sum(dim=-1)[..., None, None]
    inverse = rows / determinant
    top = torch.cat([inverse, -(inverse @ b)], dim=-1)  # [..., 3, 4]
    bottom = torch.cat([torch.zeros_like(top[..., :1, :3]), torch.ones_like(top[..., :1, :1])], dim=-1)  # [..., 1, 4]
    return torch.cat([top, bottom], dim=-2)


class _InverseResult(NamedTuple):
    inverse: Tensor
    info: Tensor


def _affine_inv_ex(matrix: Tensor, *, check_errors: bool = False, out=None) -> _InverseResult:
    return _InverseResult(affine_inverse(matrix), torch.zeros(matrix.shape[:-2], dtype=torch.int32))


@contextlib.contextmanager
def exportable_inverse() -> Iterator[None]:
    """While tracing for ONNX, `torch.linalg.inv_ex` (no ONNX op) becomes `affine_inverse`.

    The models invert only affine matrices (`lidar2img` = camera matrix x rigid transform, ego poses), for which
    the two agree to rounding; the parity tests check the exported graph against the unpatched PyTorch model.
    """
    with mock.patch.object(torch.linalg, "inv_ex", _affine_inv_ex):
        yield


def _topk_detections(
    logits: Tensor, codes: Tensor, k: int, score_threshold: float, centre_range: Sequence[float] | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Fixed-size form of `decode_topk`: the k best (query, class) pairs and a `valid` mask instead of a filter.

    logits [B, Q, K], codes [B, Q, 10] -> boxes [B, k, 9], scores [B, k] (descending), labels [B, k] int64,
    valid [B, k] bool (score above the threshold and centre inside the range: what `decode_topk` would keep).
    """
    B, Q, K = logits.shape
    scores = logits.float().sigmoid().reshape(B, Q * K)  # [B, Q, K] -> [B, Q*K]
    top_scores, top_index = scores.topk(k, dim=1)  # [B, k]
    labels = top_index % K
    queries = top_index.div(K, rounding_mode="floor")
    boxes = decode_boxes(torch.gather(codes.float(), 1, queries[..., None].expand(-1, -1, 10)))  # [B, k, 9]
    valid = top_scores > score_threshold
    if centre_range is not None:
        low = torch.tensor(centre_range[:3], dtype=boxes.dtype, device=boxes.device)
        high = torch.tensor(centre_range[3:], dtype=boxes.dtype, device=boxes.device)
        valid = valid & ((boxes[..., :3] >= low) & (boxes[..., :3] <= high)).all(dim=-1)
    return boxes, top_scores, labels, valid


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one graph input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype


def detection_specs(k: int) -> list[TensorSpec]:
    """The decoded top-k outputs every exported student returns first."""
    return [
        TensorSpec("boxes", (1, k, 9), torch.float32),
        TensorSpec("scores", (1, k), torch.float32),
        TensorSpec("labels", (1, k), torch.int64),
        TensorSpec("valid", (1, k), torch.bool),
    ]


def next_state_specs(state: list[TensorSpec]) -> list[TensorSpec]:
    """The updated temporal state, returned after the detections: each state input as `next_<name>`."""
    return [dataclasses.replace(s, name=f"next_{s.name}") for s in state]


class SparseBEVStep(nn.Module):
    """One streaming step of an online SparseBEV with its past-frame cache as explicit inputs/outputs (batch 1).

    Inputs (N cameras, H x W network input, T = config.num_frames, G groups, L levels):
        images [1, N, 3, H, W] uint8 RGB (after the test-time resize/crop); lidar2img [1, N, 4, 4] ego -> pixels;
        previous_from_current [1, 4, 4] current ego frame -> previous ego frame (rigid); time_delta [1] seconds since
        the previous frame; start [1] bool; past_lidar2img [1, T-1, N, 4, 4] (previous ego frame -> pixels of each
        past frame, newest first); past_time_offsets [1, T-1] (seconds before the previous frame);
        past_features_l [(T-1)*G, C/G, N*(h_l+1), w_l] per level.
    Outputs: boxes [1, k, 9] (ego frame), scores [1, k], labels [1, k] int64, valid [1, k] bool, then next_<state>.
    """

    def __init__(self, model: nn.Module, image_size: tuple[int, int]) -> None:
        super().__init__()
        from ftkd.models.sparsebev.model import POST_CENTER_MARGIN

        config = model.config
        if config.offline:
            raise ValueError("export: an offline SparseBEV (model.offline=True) needs future frames; export a student")
        self.model = model
        self.image_size = tuple(image_size)
        self.num_past = config.num_frames - 1
        self.num_groups = config.num_groups
        self.num_levels = len(config.backbone.out_levels)
        self.max_detections = min(config.max_detections, config.num_queries * config.num_classes)
        self.score_threshold = config.score_threshold
        low = [v - POST_CENTER_MARGIN for v in config.point_cloud_range[:3]]
        high = [v + POST_CENTER_MARGIN for v in config.point_cloud_range[3:]]
        self.centre_range = low + high
        self._feature_shapes: list[tuple[int, ...]] | None = None
        self.state_names = (
            ("past_lidar2img", "past_time_offsets", *[f"past_features_{level}" for level in range(self.num_levels)])
            if self.num_past > 0
            else ()
        )

    def feature_shapes(self) -> list[tuple[int, ...]]:
        """Per level, the shape of one frame's features in the sampling layout: [G, C/G, N*(h_l+1), w_l] (found by
        running the backbone once on a blank frame, so FPN rounding is whatever the backbone does)."""
        from ftkd.models.sparsebev.sampling import arrange_features

        if self._feature_shapes is None:
            device = next(self.model.parameters()).device
            images = torch.zeros(1, 1, NUM_CAMERAS, 3, *self.image_size, dtype=torch.uint8, device=device)
            with torch.no_grad():
                features = self.model.extract_features(images)
            self._feature_shapes = [tuple(arrange_features(level, self.num_groups).shape) for level in features]
        return self._feature_shapes

    def specs(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """(inputs, outputs) of the graph, in order."""
        H, W = self.image_size
        N, P = NUM_CAMERAS, self.num_past
        inputs = [
            TensorSpec("images", (1, N, 3, H, W), torch.uint8),
            TensorSpec("lidar2img", (1, N, 4, 4), torch.float32),
            TensorSpec("previous_from_current", (1, 4, 4), torch.float32),
            TensorSpec("time_delta", (1,), torch.float32),
            TensorSpec("start", (1,), torch.bool),
        ]
        state: list[TensorSpec] = []
        if P > 0:
            state = [
                TensorSpec("past_lidar2img", (1, P, N, 4, 4), torch.float32),
                TensorSpec("past_time_offsets", (1, P), torch.float32),
            ]
            for level, (G, *rest) in enumerate(self.feature_shapes()):
                state.append(TensorSpec(f"past_features_{level}", (P * G, *rest), torch.float32))
        return inputs + state, detection_specs(self.max_detections) + next_state_specs(state)

    def forward(self, images: Tensor, lidar2img: Tensor, previous_from_current: Tensor, time_delta: Tensor,
                start: Tensor, *state: Tensor) -> tuple[Tensor, ...]:  # fmt: skip
        from ftkd.models.sparsebev.sampling import arrange_features

        G, P = self.num_groups, self.num_past
        features = self.model.extract_features(images[:, None])  # per level [1, 1, N, C, h, w]
        current = [arrange_features(level, G) for level in features]  # per level [G, C/G, N*(h+1), w]
        lidar2img = lidar2img.float()[:, None]  # [1, 1, N, 4, 4]
        time_offsets = torch.zeros_like(time_delta)[:, None]  # [1, 1]
        if P > 0:
            past_lidar2img, past_time_offsets, *past_features = state
            fresh = start.view(1, 1, 1, 1, 1)
            aged_lidar2img = past_lidar2img @ previous_from_current[:, None, None]  # -> current ego frame
            past_lidar2img = torch.where(fresh, lidar2img.expand(-1, P, -1, -1, -1), aged_lidar2img)
            past_time_offsets = torch.where(start[:, None], 0.0, past_time_offsets + time_delta[:, None])
            past_features = [
                torch.where(start.view(1, 1, 1, 1), now.repeat(P, 1, 1, 1), past)  # [P*G, C/G, rows, w]
                for now, past in zip(current, past_features)
            ]
            lidar2img = torch.cat([lidar2img, past_lidar2img], dim=1)  # [1, T, N, 4, 4]
            time_offsets = torch.cat([time_offsets, past_time_offsets], dim=1)  # [1, T]
            current = [torch.cat([now, past]) for now, past in zip(current, past_features)]  # [T*G, ...]
        output = self.model.decode_arranged(current, lidar2img, time_offsets, self.image_size)
        detections = _topk_detections(
            output.pred_logits, output.pred_boxes, self.max_detections, self.score_threshold, self.centre_range
        )
        if P == 0:
            return detections
        next_state = (lidar2img[:, :P], time_offsets[:, :P], *[level[: P * G] for level in current])
        return (*detections, *next_state)


class StreamPETRStep(nn.Module):
    """One streaming step of StreamPETR with its memory queue as explicit inputs/outputs (batch 1).

    Inputs (L = memory_len entries, newest first; C channels):
        images [1, N, 3, H, W] uint8 RGB; lidar2img [1, N, 4, 4] ego -> pixels; intrinsics [1, N, 3, 3];
        previous_from_current [1, 4, 4] (rigid); time_delta [1] seconds since the previous frame; start [1] bool;
        memory_embedding [1, L, C]; memory_centres [1, L, 3] metres in the previous ego frame; memory_age [1, L, 1]
        seconds between storing and the previous frame; memory_pose [1, L, 4, 4] storing frame -> previous ego frame;
        memory_velocity [1, L, 2] m/s in the storing frame's axes.
    Outputs: boxes [1, k, 9] (ego frame), scores [1, k], labels [1, k] int64, valid [1, k] bool, then next_<state>
    (the memory in the current ego frame, ages relative to the current frame).
    """

    def __init__(self, model: nn.Module, image_size: tuple[int, int]) -> None:
        super().__init__()
        config = model.config
        self.model = model
        self.image_size = tuple(image_size)
        self.max_detections = min(config.max_detections, (config.num_queries + config.num_propagated) * config.num_classes)
        self.score_threshold = config.score_threshold
        self.centre_range = list(config.post_center_range)
        self.state_names = ("memory_embedding", "memory_centres", "memory_age", "memory_pose", "memory_velocity")

    def specs(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """(inputs, outputs) of the graph, in order."""
        H, W = self.image_size
        N, L, C = NUM_CAMERAS, self.model.config.memory_len, self.model.config.embed_dims
        inputs = [
            TensorSpec("images", (1, N, 3, H, W), torch.uint8),
            TensorSpec("lidar2img", (1, N, 4, 4), torch.float32),
            TensorSpec("intrinsics", (1, N, 3, 3), torch.float32),
            TensorSpec("previous_from_current", (1, 4, 4), torch.float32),
            TensorSpec("time_delta", (1,), torch.float32),
            TensorSpec("start", (1,), torch.bool),
        ]
        state = [
            TensorSpec("memory_embedding", (1, L, C), torch.float32),
            TensorSpec("memory_centres", (1, L, 3), torch.float32),
            TensorSpec("memory_age", (1, L, 1), torch.float32),
            TensorSpec("memory_pose", (1, L, 4, 4), torch.float32),
            TensorSpec("memory_velocity", (1, L, 2), torch.float32),
        ]
        return inputs + state, detection_specs(self.max_detections) + next_state_specs(state)

    def forward(self, images: Tensor, lidar2img: Tensor, intrinsics: Tensor, previous_from_current: Tensor,
                time_delta: Tensor, start: Tensor, embedding: Tensor, centres: Tensor, age: Tensor, pose: Tensor,
                velocity: Tensor) -> tuple[Tensor, ...]:  # fmt: skip
        from ftkd.models.streampetr.memory import MemoryState, transform_points

        # Between frames the model keeps its memory in a "global" frame with absolute times. Here the global frame is
        # the current ego frame and the time origin is now: the model's own align/push then run with an identity
        # pose and zero timestamp, and the memory that comes out is already relative to this frame.
        current_from_previous = affine_inverse(previous_from_current.double())  # [1, 4, 4]
        memory = MemoryState(
            embedding=embedding,
            reference_points=transform_points(current_from_previous, centres.double()),
            timestamp=age.double() + time_delta.double()[:, None, None],  # = -(t_stored - t_now)
            ego_pose=current_from_previous[:, None] @ pose.double(),
            velocity=velocity,
        )
        identity = torch.eye(4, dtype=torch.float64, device=images.device)[None]
        now = torch.zeros(1, dtype=torch.float64, device=images.device)
        output, memory = self.model.forward_frame(
            images, lidar2img.float(), intrinsics.float(), identity, now, ~start, memory
        )
        detections = _topk_detections(
            output.pred_logits, output.pred_boxes, self.max_detections, self.score_threshold, self.centre_range
        )
        next_state = (
            memory.embedding.float(),
            memory.reference_points.float(),
            memory.timestamp.float(),
            memory.ego_pose.float(),
            memory.velocity.float(),
        )
        return (*detections, *next_state)


def build_step(model: nn.Module, image_size: tuple[int, int]) -> SparseBEVStep | StreamPETRStep:
    """The export wrapper of an online student (eval mode), for network input `image_size` (H, W)."""
    from ftkd.models.sparsebev.model import SparseBEV
    from ftkd.models.streampetr.model import StreamPETR

    if isinstance(model, SparseBEV):
        return SparseBEVStep(model.eval(), image_size).eval()
    if isinstance(model, StreamPETR):
        return StreamPETRStep(model.eval(), image_size).eval()
    raise TypeError(f"export: expected a SparseBEV or StreamPETR model, got {type(model).__name__}")


def example_inputs(step: SparseBEVStep | StreamPETRStep) -> tuple[Tensor, ...]:
    """Inputs of the right shapes and dtypes for tracing: identity geometry, a fresh sequence, zero state."""
    inputs, _ = step.specs()
    values = []
    for spec in inputs:
        if spec.name in ("lidar2img", "intrinsics", "previous_from_current"):
            value = torch.eye(spec.shape[-1]).expand(spec.shape).clone()
        elif spec.name == "start":
            value = torch.ones(spec.shape, dtype=torch.bool)
        else:
            value = torch.zeros(spec.shape, dtype=spec.dtype)
        values.append(value)
    return tuple(values)


def export_model(
    model: nn.Module, out_path: str | Path, image_size: tuple[int, int], *, opset: int = DEFAULT_OPSET,
    metadata: dict[str, str] | None = None,
) -> Path:  # fmt: skip
    """Export an online student (module in memory) as a static-shape batch-1 ONNX graph; returns the path.

    The graph's metadata (`ftkd.*` keys) records the architecture, input size, class and camera order, the state
    tensor names and the top-k, so `ftkd.deploy.runtime.OnnxStep` needs nothing but the file.
    """
    import onnx

    step = build_step(model, image_size)
    inputs, outputs = step.specs()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), exportable_inverse(), warnings.catch_warnings():
        # shape checks in the models become constants of the static graph (TracerWarning), and the TorchScript-based
        # exporter announces its deprecation (DeprecationWarning): neither is actionable here
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")  # strided slices stay ops
        torch.onnx.export(
            step,
            example_inputs(step),
            str(out_path),
            input_names=[s.name for s in inputs],
            output_names=[s.name for s in outputs],
            opset_version=opset,
            dynamo=False,  # the torch.export-based exporter needs onnxscript, which ftkd does not depend on
            do_constant_folding=True,
        )
    graph = onnx.load(str(out_path))
    info = {
        "ftkd.arch": model.config.arch,
        "ftkd.image_size": json.dumps(list(step.image_size)),
        "ftkd.class_names": json.dumps(list(CLASS_NAMES)),
        "ftkd.camera_names": json.dumps(list(CAMERA_NAMES)),
        "ftkd.state_names": json.dumps(list(step.state_names)),
        "ftkd.max_detections": str(step.max_detections),
        "ftkd.opset": str(opset),
        **(metadata or {}),
    }
    for key, value in info.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(graph)
    onnx.save(graph, str(out_path))
    logger.info("exported %s (%s, input %dx%d, opset %d)", out_path, model.config.arch, *step.image_size, opset)
    return out_path


def export_onnx(
    checkpoint: str | Path, out_path: str | Path, *, opset: int = DEFAULT_OPSET, image_size: tuple[int, int] | None = None
) -> Path:
    """Export the online student of an ftkd checkpoint to ONNX (batch 1, fp32, static shapes); returns the path.

    Args:
        checkpoint: written by `ftkd train` / `ftkd distill` (the distilled student is a plain detector).
        out_path: the .onnx file to write.
        opset: ONNX opset (17 or later).
        image_size: (H, W) network input; default the checkpoint's data.image_size (704x256 for the paper models).
    """
    from ftkd.engine.checkpoint import load_model

    if opset < DEFAULT_OPSET:
        raise ValueError(f"export: opset must be >= {DEFAULT_OPSET} (GridSample, LayerNormalization), got {opset}")
    model, config = load_model(checkpoint, "cpu")
    size = tuple(image_size) if image_size is not None else tuple(config.data.image_size)
    if getattr(config.model, "offline", False):
        raise ValueError(f"export: {checkpoint} holds an offline teacher (model.offline=True); export a student")
    return export_model(model, out_path, size, opset=opset, metadata={"ftkd.checkpoint": str(checkpoint)})

