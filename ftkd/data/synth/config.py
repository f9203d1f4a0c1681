"""SynthConfig: everything that decides a synthetic dataset (same config + seed -> byte-identical tables and images)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ftkd.utils.configuration import ConfigError

VERSION = "v1.0-synth"  # the version folder; custom splits live in <dataroot>/v1.0-synth/splits.json
TRAIN_SPLIT = "synth_train"
VAL_SPLIT = "synth_val"


@dataclass(frozen=True)
class SynthConfig:
    seed: int = 0  # world layout, scenes, agents, lighting and noise all derive from it
    scenes: int = 4
    val_scenes: int = 1  # the last `val_scenes` scenes form the val split, the others the train split
    samples_per_scene: int = 10  # keyframes per scene (2 Hz)
    sweeps_per_sample: int = 5  # camera sweeps between keyframes (12 Hz cameras: 5 sweeps per 0.5 s)
    image_width: int = 352  # stored image size; intrinsics are scaled from 1600x900 accordingly
    image_height: int = 198
    jpeg_quality: int = 90
    # Difficulty knobs (1.0 = nuScenes-like).
    density: float = 1.0  # number of agents (moving and parked) per metre of road
    occlusion: float = 1.0  # parked rows, trees, walls and construction zones per metre of road
    noise: float = 1.0  # camera sensor noise and lidar range noise
    night_fraction: float = 0.116  # share of night scenes (nuScenes trainval: 11.6%)
    rain_fraction: float = 0.194  # share of rainy scenes (low contrast, haze; nuScenes trainval: 19.4%)
    # Every scene gets this many extra static instances of each of the 10 classes close to the ego's mid-scene
    # position, so that even tiny splits contain all classes (0 switches this off; large sets do not need it).
    min_instances_per_class: int = 1
    annotation_range: float = 60.0  # metres from the ego within which objects are annotated
    lidar_azimuth_steps: int = 1080  # lidar columns per revolution (0.33 deg, a 32-beam spinning lidar at 20 Hz)
    workers: int = 1  # processes (scenes are independent; output does not depend on this)

    def __post_init__(self) -> None:
        checks = {
            "scenes": self.scenes >= 1,
            "val_scenes": 0 <= self.val_scenes <= self.scenes,
            "samples_per_scene": self.samples_per_scene >= 2,
            "sweeps_per_sample": self.sweeps_per_sample >= 0,
            "image_width": self.image_width >= 32,
            "image_height": self.image_height >= 32,
            "jpeg_quality": 1 <= self.jpeg_quality <= 100,
            "density": self.density >= 0,
            "occlusion": self.occlusion >= 0,
            "noise": self.noise >= 0,
            "night_fraction": 0 <= self.night_fraction <= 1,
            "rain_fraction": 0 <= self.rain_fraction <= 1,
            "min_instances_per_class": self.min_instances_per_class >= 0,
            "annotation_range": self.annotation_range > 0,
            "lidar_azimuth_steps": self.lidar_azimuth_steps >= 90,
            "workers": self.workers >= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"SynthConfig: invalid value for {bad}: {[getattr(self, k) for k in bad]}")

    @classmethod
    def preset(cls, name: str, **overrides: object) -> SynthConfig:
        """A named preset: "tiny" (tests, seconds on one core) or "bench" (the default benchmark set)."""
        presets = {
            # 4 scenes (3 train + 1 val) x 8 keyframes, small images: for unit tests and the CPU demo.
            "tiny": cls(scenes=4, val_scenes=1, samples_per_scene=8, image_width=320, image_height=180),
            # The benchmark that training runs use: 48 scenes (40 train + 8 val) x 32 keyframes (16 s), 704x396
            # images (the 0.44 resize of 1600x900 that SparseBEV/StreamPETR crop 704x256 from): 1,536 keyframes,
            # 53,856 camera images.
            "bench": cls(scenes=48, val_scenes=8, samples_per_scene=32, image_width=704, image_height=396,
                         min_instances_per_class=0),
        }
        if name not in presets:
            raise ConfigError(f"unknown synth preset {name!r}; expected one of {sorted(presets)}")
        return replace(presets[name], **overrides)

    @property
    def version(self) -> str:
        return VERSION
