"""`TemporalDataset`: one keyframe per item, with its past (and future) frames, geometry, augmentation and GT.

Reference frame: the ego frame at the current keyframe's LIDAR_TOP timestamp (un-augmented: `meta.ref_to_global`),
after BEV augmentation (`ego_pose`). Each frame's six images are each camera's own sample_data; `lidar2img` maps a
reference-frame point into that image using the ego pose at that image's timestamp (ego motion folded in).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ftkd.constants import CAMERA_NAMES
from ftkd.data.augment import (
    ImageAug,
    PhotometricAug,
    apply_photometric,
    load_image,
    sample_bev_aug,
    sample_image_aug,
    sample_photometric,
)
from ftkd.data.config import DataConfig
from ftkd.data.frames import select_keyframe_frames, select_sweep_frames
from ftkd.data.geometry import compose_lidar2img, intrinsics_to_4x4, pose_matrix, quaternion_to_matrix
from ftkd.data.index import CameraChain, DataError, DatasetIndex, load_index
from ftkd.data.splits import resolve_split
from ftkd.structures.batch import SampleMeta
from ftkd.structures.boxes import transform_boxes

logger = logging.getLogger(__name__)


class SampleKey(NamedTuple):
    """What a sampler asks for: dataset position, epoch (seeds the augmentation) and whether a sequence starts."""

    index: int
    epoch: int = 0
    scene_start: bool = True


@dataclass
class Sample:
    """One augmented temporal sample; `ftkd.data.collate.collate` stacks these into a `Batch`."""

    images: Tensor  # [T, N, 3, H, W] uint8 RGB
    future_images: Tensor | None  # [F, N, 3, H, W] uint8, None without future frames
    lidar2img: Tensor  # [T+F, N, 4, 4] float32
    intrinsics: Tensor  # [T+F, N, 3, 3] float32
    time_offsets: Tensor  # [T+F] float32 seconds
    frame_valid: Tensor  # [T+F] bool
    ego_pose: Tensor  # [4, 4] float64 augmented reference frame -> global
    timestamp: float  # seconds
    scene_start: bool
    gt_boxes: Tensor  # [M, 9] float32 reference frame
    gt_labels: Tensor  # [M] int64
    meta: SampleMeta


def check_data_config(config: DataConfig) -> None:
    """Raise ValueError naming the `data.*` key whose value cannot work."""
    if config.frame_source not in ("sweeps", "keyframes"):
        raise ValueError(f"data.frame_source: expected 'sweeps' or 'keyframes', got {config.frame_source!r}")
    if config.num_past_frames < 0 or config.num_future_frames < 0:
        raise ValueError(
            f"data.num_past_frames / num_future_frames must be >= 0, got {config.num_past_frames} / "
            f"{config.num_future_frames}"
        )
    low, high = config.train_interval
    if not 1 <= low <= high:
        raise ValueError(f"data.train_interval: expected 1 <= low <= high, got {config.train_interval}")
    if config.test_interval < 1:
        raise ValueError(f"data.test_interval: expected >= 1, got {config.test_interval}")
    if min(config.image_size) < 1:
        raise ValueError(f"data.image_size: expected positive (H, W), got {config.image_size}")
    if not 0 < config.resize_jitter[0] <= config.resize_jitter[1]:
        raise ValueError(f"data.resize_jitter: expected 0 < low <= high, got {config.resize_jitter}")
    if config.sequence_splits < 1:
        raise ValueError(f"data.sequence_splits: expected >= 1, got {config.sequence_splits}")


class TemporalDataset(torch.utils.data.Dataset):
    """Keyframes of one split; item i = current keyframe + past (+ future) frames, augmented if `train`.

    Args:
        config: data section of the experiment config.
        split: split name (splits.json or a devkit split).
        train: random frame interval and (if `config.augment`) augmentation; else the deterministic test transform.
        seed: with the epoch and the item index, seeds every random draw (independent of worker count).
    """

    def __init__(self, config: DataConfig, split: str, train: bool, seed: int = 0) -> None:
        check_data_config(config)
        self.config = config
        self.split = split
        self.train = train
        self.augment = train and config.augment
        self.seed = seed
        self.epoch = 0
        self.index: DatasetIndex = load_index(config.dataroot, config.version, config.cache_dir)
        scene_ids = {name: i for i, name in enumerate(self.index.scene_names)}
        names = resolve_split(config.dataroot, config.version, split, self.index.scene_names)
        positions, self.scene_ranges, self.scene_tokens = [], [], []
        for name in names:
            samples = self.index.samples_of_scene(scene_ids[name])
            self.scene_ranges.append(range(len(positions), len(positions) + len(samples)))
            self.scene_tokens.append(self.index.scenes[scene_ids[name]].token)
            positions.extend(samples)
        self.sample_indices = np.asarray(positions, dtype=np.int64)  # dataset position -> index sample
        self.sample_tokens = [self.index.sample_tokens[k] for k in positions]
        self._scene_of = np.concatenate(
            [np.full(len(r), s, dtype=np.int64) for s, r in enumerate(self.scene_ranges)]
        )
        # Without augmentation an image always comes out the same, and neighbouring keyframes share most of their
        # frames (sweeps 6 apart ~ one keyframe): keep the last two samples' images (per loader worker).
        num_images = (config.num_past_frames + config.num_future_frames + 1) * len(CAMERA_NAMES)
        self._image_cache: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()
        self._image_cache_size = 0 if self.augment else 2 * num_images
        logger.info(
            "%s split %r: %d scenes, %d keyframes, %d frames per sample (%s, %s)",
            config.dataroot, split, len(self.scene_ranges), len(self), num_images // len(CAMERA_NAMES),
            config.frame_source, "train" if train else "test",
        )

    def __len__(self) -> int:
        return len(self.sample_indices)

    def scene_of(self, i: int) -> int:
        """Which scene of the split (index into `scene_ranges`) dataset position i belongs to."""
        return int(self._scene_of[i])

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for items requested by a plain integer index (samplers pass it in `SampleKey`)."""
        self.epoch = epoch

    @property
    def num_frames(self) -> int:
        return self.config.num_past_frames + 1

    def __getitem__(self, key: int | SampleKey) -> Sample:
        if not isinstance(key, SampleKey):
            key = SampleKey(int(key), self.epoch, True)
        i = key.index
        if not 0 <= i < len(self):
            raise IndexError(f"dataset position {i} out of range for split {self.split!r} of {len(self)} samples")
        rng = np.random.default_rng([self.seed, key.epoch, i]) if self.train else None
        return self._load(i, rng, key.scene_start)

    def _frame_positions(self, k: int, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray, int]:
        """[T+F, N] chain positions per camera, [T+F] validity, and the interval used (chain steps)."""
        config = self.config
        scene = self.index.scenes[self.index.sample_scene[k]]
        if config.frame_source == "keyframes":
            frames, valid = select_keyframe_frames(
                k - scene.first_sample, scene.num_samples, config.num_past_frames, config.num_future_frames
            )
            return self.index.sample_camera_positions[scene.first_sample + frames], valid, 1
        if rng is None:
            interval = config.test_interval
        else:
            interval = int(rng.integers(config.train_interval[0], config.train_interval[1] + 1))
        lengths = np.array([len(chain) for chain in scene.cameras])
        positions, valid = select_sweep_frames(
            self.index.sample_camera_positions[k].astype(np.int64),
            lengths,
            config.num_past_frames,
            config.num_future_frames,
            interval,
        )
        return positions, valid, interval

    def _load(self, i: int, rng: np.random.Generator | None, scene_start: bool) -> Sample:
        config, index = self.config, self.index
        k = int(self.sample_indices[i])
        token = index.sample_tokens[k]
        scene_id = int(index.sample_scene[k])
        scene = index.scenes[scene_id]
        positions, valid, interval = self._frame_positions(k, rng)
        num_frames = len(positions)  # T + F
        ref_to_global = pose_matrix(index.sample_ego_poses[k, :3], index.sample_ego_poses[k, 3:])

        width, height = (int(v) for v in scene.cameras[0].sizes[positions[0, 0]])
        image_aug = sample_image_aug(
            rng if self.augment else None,
            (height, width),
            config.image_size,
            config.resize_jitter,
            config.flip,
        )
        bev_aug = (
            sample_bev_aug(rng, config.bev_rotation, config.bev_scale) if self.augment else np.eye(4)
        )  # un-augmented -> augmented reference frame
        photometric = sample_photometric(rng) if self.augment and config.photometric else None
        bev_aug_inverse = np.linalg.inv(bev_aug)

        lidar2img = np.zeros((num_frames, len(CAMERA_NAMES), 4, 4))
        intrinsics = np.zeros((num_frames, len(CAMERA_NAMES), 3, 3))
        timestamps = np.zeros((num_frames, len(CAMERA_NAMES)), dtype=np.int64)
        out_height, out_width = config.image_size
        pixels = np.zeros((num_frames, len(CAMERA_NAMES), 3, out_height, out_width), dtype=np.uint8)
        for n, chain in enumerate(scene.cameras):
            at = positions[:, n]  # [T+F] chain positions of this camera
            ego_to_global = pose_matrix(chain.ego_poses[at, :3], chain.ego_poses[at, 3:])  # [T+F, 4, 4]
            calibration = chain.calibration[at]
            image_matrix = np.stack([image_aug.matrix(int(w), int(h)) for w, h in chain.sizes[at]])  # [T+F, 3, 3]
            camera_matrix = image_matrix @ chain.intrinsics[calibration]
            intrinsics[:, n] = camera_matrix
            stored_lidar2img = compose_lidar2img(
                ref_to_global, ego_to_global, chain.camera_to_ego[calibration], chain.intrinsics[calibration]
            )  # [T+F, 4, 4] un-augmented reference frame -> stored-image pixels
            lidar2img[:, n] = intrinsics_to_4x4(image_matrix) @ stored_lidar2img @ bev_aug_inverse
            timestamps[:, n] = chain.timestamps[at]
            decoded: dict[int, np.ndarray] = {}
            for f, p in enumerate(at):
                if p not in decoded:
                    decoded[p] = self._cached_image(scene_id, chain, int(p), n, image_aug, photometric, token)
                pixels[f, n] = decoded[p]

        time_offsets = (timestamps[:1] - timestamps).mean(axis=1) * 1e-6  # [T+F] seconds, past > 0
        boxes, labels, extra = self._targets(k, ref_to_global, bev_aug)
        extra.update(image_aug=image_aug.matrix(width, height), bev_aug=bev_aug, interval=interval)
        T = self.num_frames
        images = torch.from_numpy(pixels)
        return Sample(
            images=images[:T],
            future_images=images[T:] if config.num_future_frames > 0 else None,
            lidar2img=torch.from_numpy(lidar2img).float(),
            intrinsics=torch.from_numpy(intrinsics).float(),
            time_offsets=torch.from_numpy(time_offsets).float(),
            frame_valid=torch.from_numpy(valid),
            ego_pose=torch.from_numpy(ref_to_global @ bev_aug_inverse),
            timestamp=float(index.sample_timestamps[k]) * 1e-6,
            scene_start=scene_start,
            gt_boxes=boxes,
            gt_labels=labels,
            meta=SampleMeta(
                sample_token=token,
                scene_token=scene.token,
                timestamp=float(index.sample_timestamps[k]) * 1e-6,
                ref_to_global=ref_to_global,
                extra=extra,
            ),
        )

    def _cached_image(
        self,
        scene: int,
        chain: CameraChain,
        position: int,
        camera: int,
        image_aug: ImageAug,
        photometric: PhotometricAug | None,
        token: str,
    ) -> np.ndarray:
        """`_read_image` through the test-time cache (a no-op while augmenting)."""
        if self._image_cache_size == 0:
            return self._read_image(chain, position, camera, image_aug, photometric, token)
        key = (scene, camera, position)
        if key in self._image_cache:
            self._image_cache.move_to_end(key)
            return self._image_cache[key]
        image = self._read_image(chain, position, camera, image_aug, photometric, token)
        self._image_cache[key] = image
        if len(self._image_cache) > self._image_cache_size:
            self._image_cache.popitem(last=False)
        return image

    def _read_image(
        self,
        chain: CameraChain,
        position: int,
        camera: int,
        image_aug: ImageAug,
        photometric: PhotometricAug | None,
        token: str,
    ) -> np.ndarray:
        """Decode, resize, crop, flip and jitter one image -> [3, H, W] uint8."""
        path = Path(self.config.dataroot) / chain.filenames[position].decode()
        width, height = (int(v) for v in chain.sizes[position])
        try:
            image = load_image(str(path), image_aug, width, height)
        except (OSError, SyntaxError, ValueError) as err:
            hint = ""
            if isinstance(err, FileNotFoundError) and "sweeps/" in str(path):
                hint = " (no camera sweeps downloaded? data.frame_source=keyframes uses keyframe images only)"
            raise DataError(
                f"could not read image {path} ({CAMERA_NAMES[camera]} of sample {token}): {type(err).__name__}: "
                f"{err}{hint}"
            ) from err
        if photometric is not None:
            image = apply_photometric(image, photometric)
        return np.asarray(image).transpose(2, 0, 1)  # [H, W, 3] -> [3, H, W]

    def _targets(self, k: int, ref_to_global: np.ndarray, bev_aug: np.ndarray) -> tuple[Tensor, Tensor, dict]:
        """GT boxes of keyframe k in the augmented reference frame, filtered as the official evaluation does."""
        index = self.index
        rows = slice(int(index.annotation_offsets[k]), int(index.annotation_offsets[k + 1]))
        keep = (index.box_num_lidar_pts[rows] + index.box_num_radar_pts[rows]) > 0  # the official eval drops these
        rotation_t = ref_to_global[:3, :3].T  # global -> reference rotation
        centres = (index.box_translations[rows][keep] - ref_to_global[:3, 3]) @ rotation_t.T
        box_rotation = rotation_t @ quaternion_to_matrix(index.box_rotations[rows][keep])  # [M, 3, 3]
        yaw = np.arctan2(box_rotation[:, 1, 0], box_rotation[:, 0, 0])
        velocity_global = index.box_velocities[rows][keep]
        velocity_valid = np.isfinite(velocity_global).all(axis=1)
        # NaN velocity (an instance seen once) -> 0 target; the mask is kept in meta.extra["velocity_valid"]
        velocity = np.nan_to_num(velocity_global, nan=0.0) @ rotation_t[:2, :2].T
        boxes = np.concatenate([centres, index.box_sizes[rows][keep], yaw[:, None], velocity], axis=1)  # [M, 9]
        boxes = transform_boxes(torch.from_numpy(boxes), torch.from_numpy(bev_aug))
        x_min, y_min, _, x_max, y_max, _ = self.config.point_cloud_range
        inside = (boxes[:, 0] >= x_min) & (boxes[:, 0] <= x_max) & (boxes[:, 1] >= y_min) & (boxes[:, 1] <= y_max)
        inside_np = inside.numpy()
        extra = {
            "velocity_valid": velocity_valid[inside_np],
            "visibility": index.box_visibility[rows][keep][inside_np],
            "instance_tokens": index.box_instances[rows][keep][inside_np].astype(str),
        }
        labels = torch.from_numpy(index.box_labels[rows][keep][inside_np])
        return boxes[inside].float(), labels, extra
