"""Frame selection (sweeps / keyframes, past / future, padding at scene boundaries)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fake_nuscenes import VERSION

from ftkd.data.config import DataConfig
from ftkd.data.dataset import TemporalDataset
from ftkd.data.frames import select_keyframe_frames, select_sweep_frames


def _naive_sweeps(current, lengths, num_past, num_future, interval):
    """Slow reference: walk each chain one frame at a time, stopping at its ends."""
    offsets = [-interval * t for t in range(num_past + 1)] + [interval * t for t in range(1, num_future + 1)]
    positions = np.zeros((len(offsets), len(current)), dtype=np.int64)
    valid = np.ones(len(offsets), dtype=bool)
    for f, offset in enumerate(offsets):
        for n, (start, length) in enumerate(zip(current, lengths)):
            position = start
            for _ in range(abs(offset)):
                step = 1 if offset > 0 else -1
                if 0 <= position + step < length:
                    position += step
                else:
                    valid[f] = False
            positions[f, n] = position
    return positions, valid


def test_sweep_selection_hand_case():
    positions, valid = select_sweep_frames(np.array([5, 5]), np.array([10, 9]), 3, 2, 2)
    np.testing.assert_array_equal(positions, [[5, 5], [3, 3], [1, 1], [0, 0], [7, 7], [9, 8]])
    np.testing.assert_array_equal(valid, [True, True, True, False, True, False])


def test_sweep_selection_matches_naive_walk():
    rng = np.random.default_rng(0)
    for _ in range(200):
        lengths = rng.integers(1, 40, size=6)
        current = np.array([rng.integers(0, n) for n in lengths])
        args = (int(rng.integers(0, 8)), int(rng.integers(0, 8)), int(rng.integers(1, 9)))
        positions, valid = select_sweep_frames(current, lengths, *args)
        expected_positions, expected_valid = _naive_sweeps(current, lengths, *args)
        np.testing.assert_array_equal(positions, expected_positions)
        np.testing.assert_array_equal(valid, expected_valid)


def test_keyframe_selection():
    positions, valid = select_keyframe_frames(1, 4, 3, 3)
    np.testing.assert_array_equal(positions, [1, 0, 0, 0, 2, 3, 3])
    np.testing.assert_array_equal(valid, [True, True, False, False, True, True, False])
    with pytest.raises(ValueError, match="interval"):
        select_sweep_frames(np.array([0]), np.array([3]), 1, 0, 0)


def _config(root, **kwargs) -> DataConfig:
    return DataConfig(dataroot=str(root), version=VERSION, image_size=(36, 64), **kwargs)


def test_scene_boundaries_in_the_dataset(fake_root):
    """Scene a has 4 keyframes (chain positions 2, 8, 14, 20 of 23): test interval 6 sweeps = one keyframe."""
    dataset = TemporalDataset(_config(fake_root, num_past_frames=3, num_future_frames=2), "fake_all", train=False)
    chain_length = len(dataset.index.scenes[0].cameras[0])
    assert chain_length == 2 + 6 * 3 + 3
    expected = {  # item -> (chain positions of the 6 frames, valid)
        0: ([2, 0, 0, 0, 8, 14], [True, False, False, False, True, True]),
        2: ([14, 8, 2, 0, 20, 22], [True, True, True, False, True, False]),
        3: ([20, 14, 8, 2, 22, 22], [True, True, True, True, False, False]),
    }
    for i, (positions, valid) in expected.items():
        frames, frame_valid, interval = dataset._frame_positions(int(dataset.sample_indices[i]), None)
        assert interval == 6
        np.testing.assert_array_equal(frames[:, 0], positions)
        sample = dataset[i]
        np.testing.assert_array_equal(sample.frame_valid.numpy(), valid)
    # a padded frame repeats its neighbour: same images, same geometry, its own (real) time offset
    sample = dataset[0]
    assert torch.equal(sample.images[1], sample.images[2]) and torch.equal(sample.images[2], sample.images[3])
    assert torch.equal(sample.lidar2img[1], sample.lidar2img[3])
    assert sample.time_offsets[1] == pytest.approx(2 / 12, abs=1e-3)  # the first sweep, 2 sweeps before keyframe 0
    assert not torch.equal(sample.images[0], sample.images[1])
    last = dataset[3]
    assert torch.equal(last.future_images[0], last.future_images[1])
    assert last.time_offsets[4] == pytest.approx(-2 / 12, abs=1e-3)


def test_keyframe_source_in_the_dataset(fake_root):
    dataset = TemporalDataset(
        _config(fake_root, frame_source="keyframes", num_past_frames=2, num_future_frames=1), "fake_train", train=True
    )
    sample = dataset[5]  # scene b, keyframe 1 of 3
    np.testing.assert_array_equal(sample.frame_valid.numpy(), [True, True, False, True])
    np.testing.assert_allclose(sample.time_offsets.numpy(), [0.0, 0.5, 0.5, -0.5], atol=1e-5)
    assert sample.future_images.shape == (1, 6, 3, 36, 64)


def test_training_interval_is_drawn_in_range(fake_root):
    dataset = TemporalDataset(_config(fake_root, train_interval=(4, 8)), "fake_all", train=True)
    intervals = {dataset._frame_positions(10 % len(dataset), np.random.default_rng(s))[2] for s in range(60)}
    assert intervals == {4, 5, 6, 7, 8}
