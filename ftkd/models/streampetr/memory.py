"""StreamPETR's object-centric memory queue: the last frames' most confident queries, carried from frame to frame.

Each batch slot keeps L entries, newest first (L = frames x top-k): query embedding, centre, velocity, the time
it was stored and the ego pose of the frame it was stored in. Between frames the memory lives in the *global* frame
(centres in global metres, `timestamp` = -t_stored, `ego_pose` = stored reference frame -> global); `align_memory`
brings it into the current reference frame (centres in current metres, `timestamp` = t_now - t_stored, `ego_pose` =
stored frame -> current frame) and resets slots whose sequence just started; after the forward, `push_memory`
prepends the new top-k queries (detached, so no gradient crosses frames) and moves everything back to global.
Geometry and time are kept in float64: absolute timestamps (~1.5e9 s) and global coordinates (~1e3 m) lose
precision in float32.

All functions are pure (tensors in, tensors out), so the same code runs in training, online inference and export.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass
class MemoryState:
    """The memory queue of B batch slots (L entries each, newest first)."""

    embedding: Tensor  # [B, L, C] query features (post-norm decoder output of the frame they were stored in)
    reference_points: Tensor  # [B, L, 3] float64 metres (global between frames, current frame after alignment)
    timestamp: Tensor  # [B, L, 1] float64 seconds (-t_stored between frames, t_now - t_stored after alignment)
    ego_pose: Tensor  # [B, L, 4, 4] float64 (stored frame -> global between frames, -> current after alignment)
    velocity: Tensor  # [B, L, 2] m/s, in the axes of the frame the entry was stored in

    @staticmethod
    def empty(batch_size: int, memory_len: int, embed_dims: int, device: torch.device) -> "MemoryState":
        """An all-zero memory (every entry is then reset by `align_memory` with `keep` False)."""
        f64 = dict(device=device, dtype=torch.float64)
        return MemoryState(
            embedding=torch.zeros(batch_size, memory_len, embed_dims, device=device),
            reference_points=torch.zeros(batch_size, memory_len, 3, **f64),
            timestamp=torch.zeros(batch_size, memory_len, 1, **f64),
            ego_pose=torch.zeros(batch_size, memory_len, 4, 4, **f64),
            velocity=torch.zeros(batch_size, memory_len, 2, device=device),
        )

    @property
    def batch_size(self) -> int:
        return self.embedding.shape[0]

    def detach(self) -> "MemoryState":
        return MemoryState(**{f.name: getattr(self, f.name).detach() for f in fields(self)})

    def first(self, batch_size: int) -> "MemoryState":
        """The memory of the first `batch_size` slots (a streaming test batch shrinks from its end)."""
        return MemoryState(**{f.name: getattr(self, f.name)[:batch_size] for f in fields(self)})

    def to(self, device: torch.device | str) -> "MemoryState":
        return MemoryState(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def state_dict(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @staticmethod
    def from_state_dict(state: dict[str, Tensor]) -> "MemoryState":
        expected = {f.name for f in fields(MemoryState)}
        if set(state) != expected:
            raise ValueError(f"memory state: expected keys {sorted(expected)}, got {sorted(state)}")
        return MemoryState(**state)


def transform_points(matrix: Tensor, points: Tensor) -> Tensor:
    """Apply [B, 4, 4] transforms to [B, L, 3] points (float64)."""
    homogeneous = torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)  # [B, L, 4]
    return torch.einsum("bij,blj->bli", matrix, homogeneous)[..., :3]


def align_memory(
    state: MemoryState, ego_pose: Tensor, timestamp: Tensor, keep: Tensor, pseudo_points: Tensor | None
) -> MemoryState:
    """Bring the memory into the current reference frame and reset slots whose sequence starts now.

    Args:
        state: memory between frames (global frame).
        ego_pose: [B, 4, 4] float64 current (augmented) reference frame -> global.
        timestamp: [B] float64 seconds of the current keyframe.
        keep: [B] bool, False where the slot's sequence starts at this frame (its memory is erased).
        pseudo_points: [P, 3] metres or None. A reset slot's first P entries get these fixed centres and an identity
            pose, so the propagated queries of a sequence's first frame start spread over the scene.
    Returns:
        The memory in the current reference frame.
    """
    B = state.batch_size
    if ego_pose.shape != (B, 4, 4) or timestamp.shape != (B,) or keep.shape != (B,):
        raise ValueError(
            f"align_memory: expected ego_pose [{B}, 4, 4], timestamp [{B}], keep [{B}], got "
            f"{list(ego_pose.shape)}, {list(timestamp.shape)}, {list(keep.shape)}"
        )
    pose = ego_pose.double()
    pose_inv = torch.linalg.inv_ex(pose).inverse  # [B, 4, 4] global -> current (inv_ex: no host sync)
    keep64 = keep.to(torch.float64)
    keep32 = keep.to(state.embedding.dtype)
    reference_points = transform_points(pose_inv, state.reference_points) * keep64[:, None, None]
    relative_pose = (pose_inv[:, None] @ state.ego_pose) * keep64[:, None, None, None]
    time_delta = (state.timestamp + timestamp.double()[:, None, None]) * keep64[:, None, None]
    embedding = state.embedding * keep32[:, None, None]
    velocity = state.velocity * keep32[:, None, None]
    if pseudo_points is not None:
        P = pseudo_points.shape[0]
        reset = (1 - keep64)[:, None, None]  # [B, 1, 1]
        eye = torch.eye(4, dtype=torch.float64, device=pose.device)
        reference_points = torch.cat(
            [reference_points[:, :P] + reset * pseudo_points.double(), reference_points[:, P:]], dim=1
        )
        relative_pose = torch.cat([relative_pose[:, :P] + reset[..., None] * eye, relative_pose[:, P:]], dim=1)
    return MemoryState(embedding, reference_points, time_delta, relative_pose, velocity)


def push_memory(
    state: MemoryState,
    embedding: Tensor,
    reference_points: Tensor,
    velocity: Tensor,
    scores: Tensor,
    num_push: int,
    ego_pose: Tensor,
    timestamp: Tensor,
) -> MemoryState:
    """Prepend the `num_push` highest-scoring current queries (detached) and move the memory to the global frame.

    Args:
        state: the aligned memory (current frame).
        embedding: [B, Q, C] last-layer query features; reference_points: [B, Q, 3] predicted centres (metres,
            current frame); velocity: [B, Q, 2] predicted m/s; scores: [B, Q] confidence (max class probability).
        ego_pose: [B, 4, 4] float64 current reference frame -> global; timestamp: [B] float64 seconds.
    Returns:
        The memory between frames (global frame), truncated to its length L.
    """
    L = state.embedding.shape[1]
    index = scores.detach().topk(num_push, dim=1).indices  # [B, k]

    def gather(x: Tensor) -> Tensor:  # [B, Q, ...] -> [B, k, ...]
        idx = index.view(*index.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
        return torch.gather(x.detach(), 1, idx)

    B, k = index.shape
    eye = torch.eye(4, dtype=torch.float64, device=index.device).expand(B, k, 4, 4)
    new_time = torch.zeros(B, k, 1, dtype=torch.float64, device=index.device)
    embedding = torch.cat([gather(embedding).to(state.embedding.dtype), state.embedding], dim=1)[:, :L]
    points = torch.cat([gather(reference_points).double(), state.reference_points], dim=1)[:, :L]
    time_delta = torch.cat([new_time, state.timestamp], dim=1)[:, :L]
    relative_pose = torch.cat([eye, state.ego_pose], dim=1)[:, :L]
    velocity = torch.cat([gather(velocity).to(state.velocity.dtype), state.velocity], dim=1)[:, :L]
    pose = ego_pose.double()
    return MemoryState(
        embedding=embedding,
        reference_points=transform_points(pose, points),
        timestamp=time_delta - timestamp.double()[:, None, None],
        ego_pose=pose[:, None] @ relative_pose,
        velocity=velocity,
    )
