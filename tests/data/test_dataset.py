"""TemporalDataset / build_dataloader: determinism, collation, the index cache and clear errors on bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import pytest
import torch
from fake_nuscenes import VERSION

from ftkd.config import load_config
from ftkd.data import index as index_module
from ftkd.data.collate import collate
from ftkd.data.config import DataConfig
from ftkd.data.dataset import SampleKey, TemporalDataset
from ftkd.data.index import DataError, load_index
from ftkd.data.loader import build_dataloader, set_epoch
from ftkd.structures.batch import Batch
from ftkd.utils.configuration import ConfigError


def _config(root, **kwargs) -> DataConfig:
    return DataConfig(dataroot=str(root), version=VERSION, image_size=(32, 64), num_past_frames=2, **kwargs)


def _assert_same(a, b) -> None:
    for field in ("images", "lidar2img", "intrinsics", "time_offsets", "frame_valid", "ego_pose"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    boxes_a = a.gt_boxes if isinstance(a, Batch) else [a.gt_boxes]
    boxes_b = b.gt_boxes if isinstance(b, Batch) else [b.gt_boxes]
    assert all(torch.equal(x, y) for x, y in zip(boxes_a, boxes_b))


def test_determinism_by_seed_epoch_and_index(fake_root):
    dataset = TemporalDataset(_config(fake_root), "fake_all", train=True, seed=1)
    again = TemporalDataset(_config(fake_root), "fake_all", train=True, seed=1)
    _assert_same(dataset[SampleKey(3, epoch=2)], again[SampleKey(3, epoch=2)])
    assert not torch.equal(dataset[SampleKey(3, epoch=2)].lidar2img, dataset[SampleKey(3, epoch=3)].lidar2img)
    other_seed = TemporalDataset(_config(fake_root), "fake_all", train=True, seed=2)
    assert not torch.equal(dataset[SampleKey(3, 2)].lidar2img, other_seed[SampleKey(3, 2)].lidar2img)
    test_a = TemporalDataset(_config(fake_root), "fake_all", train=False, seed=1)
    test_b = TemporalDataset(_config(fake_root), "fake_all", train=False, seed=2)
    _assert_same(test_a[SampleKey(3, 0)], test_b[SampleKey(3, 5)])


def test_loader_is_independent_of_worker_count(fake_root):
    config = _config(fake_root, batch_size=2)
    batches = {}
    for workers in (0, 2):
        loader = build_dataloader(config, "fake_all", train=True, seed=4, num_workers=workers)
        set_epoch(loader, 1)
        batches[workers] = list(loader)
    assert len(batches[0]) == len(batches[2]) == 5  # 9 samples, padded to 10 by wrapping
    for a, b in zip(batches[0], batches[2]):
        assert [m.sample_token for m in a.meta] == [m.sample_token for m in b.meta]
        _assert_same(a, b)


def test_collate_builds_a_valid_batch(fake_root):
    dataset = TemporalDataset(_config(fake_root, num_future_frames=2), "fake_val", train=False)
    batch = collate([dataset[0], dataset[1]])
    assert batch.images.shape == (2, 3, 6, 3, 32, 64) and batch.images.dtype == torch.uint8
    assert batch.future_images.shape == (2, 2, 6, 3, 32, 64)
    assert batch.lidar2img.shape == (2, 5, 6, 4, 4) and batch.lidar2img.dtype == torch.float32
    assert batch.ego_pose.dtype == torch.float64 and batch.timestamp.dtype == torch.float64
    assert (batch.time_offsets[:, 3:] < 0).all() and (batch.time_offsets[:, 1:3] >= 0).all()
    assert batch.scene_start.tolist() == [True, True]
    student = batch.student_view()
    assert student.future_images is None and student.lidar2img.shape[1] == 3
    assert [m.sample_token for m in batch.meta] == dataset.sample_tokens[:2]


def test_index_is_cached_and_invalidated(fake_root, tmp_path, monkeypatch):
    first = load_index(fake_root, VERSION, cache_dir=str(tmp_path))
    assert len(list(tmp_path.glob("index_*.pkl"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("the cached index should have been used")

    monkeypatch.setattr(index_module, "build_index", fail)
    cached = load_index(fake_root, VERSION, cache_dir=str(tmp_path))
    assert cached.sample_tokens == first.sample_tokens
    table = fake_root / VERSION / "sample.json"
    stat = table.stat()
    os.utime(table, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # "edited" table -> new cache key
    try:
        with pytest.raises(AssertionError, match="cached index"):
            load_index(fake_root, VERSION, cache_dir=str(tmp_path))
    finally:
        os.utime(table, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _linked_copy(src, dst):
    """A copy of the dataset whose files are symlinks (cheap); tables are real copies so they can be edited."""
    shutil.copytree(src, dst, symlinks=True, copy_function=os.symlink, ignore=shutil.ignore_patterns(".ftkd_cache"))
    for table in (dst / VERSION).iterdir():
        table.unlink()
        shutil.copy(src / VERSION / table.name, table)
    return dst


def test_missing_version_folder_and_table(fake_root, tmp_path):
    with pytest.raises(DataError, match=r"no version folder v1.0-trainval/.*v1.0-fake"):
        TemporalDataset(DataConfig(dataroot=str(fake_root), version="v1.0-trainval"), "val", train=False)
    root = _linked_copy(fake_root, tmp_path / "copy")
    (root / VERSION / "ego_pose.json").unlink()
    with pytest.raises(DataError, match=r"missing table file\(s\) \['ego_pose.json'\]"):
        TemporalDataset(_config(root), "fake_all", train=False)


def test_corrupt_image_names_file_and_sample(fake_root, tmp_path):
    root = _linked_copy(fake_root, tmp_path / "copy")
    dataset = TemporalDataset(_config(root, cache_dir=str(tmp_path / "cache")), "fake_val", train=False)
    chain = dataset.index.scenes[2].cameras[3]
    position = int(dataset.index.sample_camera_positions[dataset.sample_indices[0], 3])
    filename = chain.filenames[position].decode()
    (root / filename).unlink()
    (root / filename).write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(DataError, match=rf"{filename}.*CAM_BACK of sample {dataset.sample_tokens[0]}"):
        dataset[0]
    (root / filename).unlink()
    with pytest.raises(DataError, match=rf"{filename}.*No such file"):
        dataset[0]


def test_bad_split_and_config_values(fake_root, tmp_path):
    with pytest.raises(DataError, match=r"unknown split 'valid'.*fake_all.*fake_train.*fake_val.*mini_val"):
        TemporalDataset(_config(fake_root), "valid", train=False)
    with pytest.raises(DataError, match="selects none of the 3 scenes"):
        TemporalDataset(_config(fake_root), "mini_val", train=False)
    with pytest.raises(ValueError, match="data.frame_source"):
        TemporalDataset(_config(fake_root, frame_source="sweep"), "fake_all", train=False)
    with pytest.raises(ValueError, match="data.train_interval"):
        TemporalDataset(_config(fake_root, train_interval=(8, 4)), "fake_all", train=False)
    path = tmp_path / "exp.yaml"
    path.write_text(json.dumps({"data": {"num_past_frame": 3}}))
    with pytest.raises(ConfigError, match=r"data: unknown key\(s\) \['num_past_frame'\]"):
        load_config(path)
    config = dataclasses.replace(load_config(None, ["data.frame_source=keyframes"]).data, dataroot=str(fake_root))
    assert config.frame_source == "keyframes"


def test_sequential_loader_flags_scene_starts(fake_root):
    loader = build_dataloader(_config(fake_root), "fake_all", train=False, sequential=True, batch_size=2, num_workers=0)
    seen = []
    for batch in loader:
        for b, meta in enumerate(batch.meta):
            index = loader.dataset.sample_tokens.index(meta.sample_token)
            seen.append(index)
            assert bool(batch.scene_start[b]) == (index in {r.start for r in loader.dataset.scene_ranges})
    assert sorted(seen) == list(range(len(loader.dataset)))


def test_test_time_image_cache_reuses_shared_frames(fake_root, monkeypatch):
    """Keyframe k+1 shares all but its newest frame with keyframe k (sweeps 6 apart); results equal a cold load."""
    from ftkd.data import dataset as dataset_module

    calls = []
    original = dataset_module.load_image
    monkeypatch.setattr(dataset_module, "load_image", lambda path, *args: calls.append(path) or original(path, *args))
    dataset = TemporalDataset(_config(fake_root), "fake_all", train=False)
    dataset[1]
    second = dataset[2]
    assert len(calls) == 6 * 3 + 6  # keyframe 1: 3 frames; keyframe 2: only its current frame is new
    cold = TemporalDataset(_config(fake_root), "fake_all", train=False)
    _assert_same(second, cold[2])
    augmented = TemporalDataset(_config(fake_root, train_interval=(4, 4)), "fake_all", train=True)
    calls.clear()
    augmented[1]
    augmented[2]
    assert len(calls) == 2 * 6 * 3  # augmented images are never reused
