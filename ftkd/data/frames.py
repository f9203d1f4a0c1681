"""Choose the frames of one sample: the current keyframe, past frames and (for an offline teacher) future frames.

Frames are positions in each camera's sample_data chain of the scene (sweeps and keyframes at 12 Hz). Each camera's
chain is walked separately, so a frame's six images are each that camera's own sweep. Near a scene start/end the
nearest available image is repeated (its real timestamp and geometry kept, as the official SparseBEV does) and the
frame is marked invalid.
"""

from __future__ import annotations

import numpy as np


def frame_steps(num_past: int, num_future: int, interval: int) -> np.ndarray:
    """[T + F] signed chain steps: 0, -interval, ..., -num_past*interval, then +interval, ..., +num_future*interval."""
    if interval < 1:
        raise ValueError(f"frame interval must be >= 1, got {interval}")
    past = -interval * np.arange(num_past + 1)
    future = interval * np.arange(1, num_future + 1)
    return np.concatenate([past, future]).astype(np.int64)


def select_sweep_frames(
    current: np.ndarray, chain_lengths: np.ndarray, num_past: int, num_future: int, interval: int
) -> tuple[np.ndarray, np.ndarray]:
    """Frames `interval` sweeps apart along each camera's chain.

    Args:
        current: [N] position of each camera's current keyframe in its chain.
        chain_lengths: [N] length of each camera's chain in the scene.
        num_past, num_future: frames before / after the current one.
        interval: chain steps between consecutive frames (6 sweeps ~ 0.5 s at 12 Hz).

    Returns:
        positions [T + F, N] int64 chain positions (clamped into the chain: the nearest image is repeated),
        valid [T + F] bool (False if any camera's frame had to be clamped).
    """
    steps = frame_steps(num_past, num_future, interval)
    wanted = current[None, :] + steps[:, None]  # [T + F, N]
    positions = np.clip(wanted, 0, chain_lengths[None, :] - 1)
    return positions, (positions == wanted).all(axis=1)


def select_keyframe_frames(
    current: int, num_samples: int, num_past: int, num_future: int
) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive keyframes of a scene: positions [T + F] (keyframe index in the scene, clamped), valid [T + F]."""
    wanted = current + frame_steps(num_past, num_future, 1)
    positions = np.clip(wanted, 0, num_samples - 1)
    return positions, positions == wanted
