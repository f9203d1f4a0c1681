"""Data configuration: where the dataset is, which frames a sample holds, and how it is augmented."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataConfig:
    # The embedded synthetic world by default; real nuScenes: v1.0-trainval with the devkit splits train / val.
    dataroot: str = "data/synth"  # a nuScenes-format root (synthetic or real)
    version: str = "v1.0-synth"
    train_split: str = "synth_train"  # a split of <version>/splits.json, or a devkit split name on the real data
    val_split: str = "synth_val"
    # Frames: current keyframe + past frames (+ future frames for an offline teacher).
    num_past_frames: int = 7
    num_future_frames: int = 0
    frame_source: str = "sweeps"  # "sweeps" (camera sweeps, SparseBEV) or "keyframes" (2 Hz samples)
    train_interval: tuple[int, int] = (4, 8)  # sweeps between frames, drawn uniformly per sample in training
    test_interval: int = 6  # sweeps between frames at test time (~0.5 s at 12 Hz)
    # Images: final network input size (H, W) after resize + crop.
    image_size: tuple[int, int] = (256, 704)
    # Image augmentation (training only): resize factor relative to the test-time resize, bottom crop, flip.
    resize_jitter: tuple[float, float] = (0.86, 1.25)  # SparseBEV's U(0.38, 0.55) around its 0.44 test resize
    flip: bool = True
    # BEV augmentation (training only): rotation about z (rad) and uniform scale of the reference frame.
    bev_rotation: tuple[float, float] = (-0.3925, 0.3925)
    bev_scale: tuple[float, float] = (0.95, 1.05)
    photometric: bool = True  # brightness/contrast/saturation/hue jitter (applied identically to all frames)
    augment: bool = True  # master switch for all training augmentation
    # Boxes outside this range (reference frame, metres) are dropped from the targets.
    point_cloud_range: tuple[float, float, float, float, float, float] = (-51.2, -51.2, -3.0, 51.2, 51.2, 5.0)
    # Streaming (sequential sampler) training: each scene is cut into this many sub-sequences (StreamPETR's
    # seq_split_num = 2); testing always walks whole scenes.
    sequence_splits: int = 2
    batch_size: int = 8  # per process
    num_workers: int = 4
    cache_dir: str = ""  # where the parsed index is cached ("" = <dataroot>/.ftkd_cache)
