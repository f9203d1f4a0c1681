"""Augmentation keeps images and geometry consistent; photometric jitter against numpy references."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from fake_nuscenes import VERSION
from PIL import Image

from ftkd.data.augment import (
    ImageAug,
    PhotometricAug,
    apply_photometric,
    load_image,
    sample_image_aug,
)
from ftkd.data.config import DataConfig
from ftkd.data.dataset import TemporalDataset
from ftkd.data.geometry import project_points
from ftkd.structures.boxes import box_corners


def _blob_image(width: int, height: int, centre: tuple[float, float], sigma: float = 4.0) -> np.ndarray:
    v, u = np.mgrid[0:height, 0:width]
    blob = np.exp(-((u - centre[0]) ** 2 + (v - centre[1]) ** 2) / (2 * sigma**2))
    return np.repeat((blob * 255).round().astype(np.uint8)[..., None], 3, axis=2)


def _centroid(image: np.ndarray) -> np.ndarray:
    weight = image[..., 0].astype(np.float64)
    v, u = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    return np.array([(u * weight).sum(), (v * weight).sum()]) / weight.sum()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize(
    "aug",
    [
        ImageAug(0.5, (10, 40), False, (64, 176)),
        ImageAug(0.45, (3, 40), True, (64, 176)),
        ImageAug(0.8, (60, 100), True, (64, 176)),
        ImageAug(0.2, (0, 16), False, (32, 96)),  # JPEG: decoded at 1/4 scale by libjpeg before the resize
        ImageAug(0.125, (-4, -2), True, (32, 48)),  # window larger than the image: zero padding
    ],
)
def test_image_matrix_follows_the_pixels(tmp_path, aug, fmt):
    """A blob drawn at a sub-pixel position ends where the 3x3 matrix says, after resize/crop/flip."""
    width, height = 320, 240
    centre = (151.3, 171.7)
    path = tmp_path / f"blob.{fmt.lower()}"
    Image.fromarray(_blob_image(width, height, centre, sigma=6.0)).save(path, format=fmt, quality=95)
    image = np.asarray(load_image(str(path), aug, width, height))
    assert image.shape == (*aug.output_size, 3)
    expected = aug.matrix(width, height) @ np.array([*centre, 1.0])
    np.testing.assert_allclose(_centroid(image), expected[:2], atol=0.15)


@pytest.mark.parametrize(
    "aug", [ImageAug(0.55, (30, 240), True, (256, 704)), ImageAug(0.38, (0, 86), False, (256, 704))]
)
def test_window_resize_equals_full_resize_then_crop(tmp_path, aug):
    """Slow reference: resize the whole image, crop (PIL pads with zeros), flip."""
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(900, 1600, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    x0, y0 = aug.crop
    full = Image.fromarray(pixels).resize(aug.resized_size(1600, 900), Image.BILINEAR)
    reference = full.crop((x0, y0, x0 + aug.output_size[1], y0 + aug.output_size[0]))
    if aug.flip:
        reference = reference.transpose(Image.FLIP_LEFT_RIGHT)
    ours = np.asarray(load_image(str(tmp_path / "x.png"), aug, 1600, 900)).astype(int)
    assert np.abs(ours - np.asarray(reference).astype(int)).max() <= 1


def test_test_time_transform_is_centred_bottom_crop():
    aug = sample_image_aug(None, (900, 1600), (256, 704))
    assert aug.scale == pytest.approx(0.44) and not aug.flip
    assert aug.resized_size(1600, 900) == (704, 396)
    assert aug.crop == (0, 396 - 256)
    rng = np.random.default_rng(0)
    draws = [sample_image_aug(rng, (900, 1600), (256, 704), (0.86, 1.25), True) for _ in range(200)]
    scales = np.array([d.scale for d in draws])
    assert 0.44 * 0.86 <= scales.min() and scales.max() <= 0.44 * 1.25
    assert 0.3 < np.mean([d.flip for d in draws]) < 0.7
    for d in draws:
        new_width, new_height = d.resized_size(1600, 900)
        assert d.crop[1] == new_height - 256 and 0 <= d.crop[0] <= max(0, new_width - 704)


def test_photometric_against_numpy():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(8, 12, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    assert np.array_equal(np.asarray(apply_photometric(image, PhotometricAug())), pixels)
    bright = np.asarray(apply_photometric(image, PhotometricAug(brightness=20.4)))
    np.testing.assert_array_equal(bright, np.clip(np.round(pixels + 20.4), 0, 255))
    both = np.asarray(apply_photometric(image, PhotometricAug(brightness=-10, contrast=1.3, contrast_first=True)))
    np.testing.assert_array_equal(both, np.clip(np.round(np.clip(pixels - 10.0, 0, 255) * 1.3), 0, 255))
    grey = np.asarray(apply_photometric(image, PhotometricAug(saturation=0.0)))
    assert (grey.max(axis=2) - grey.min(axis=2)).max() == 0
    red = Image.fromarray(np.full((2, 2, 3), (255, 0, 0), dtype=np.uint8))
    green = np.asarray(apply_photometric(red, PhotometricAug(hue=120.0)))
    assert green[0, 0, 1] == 255 and green[0, 0, 0] < 10 and green[0, 0, 2] < 10


def _dataset(root, **kwargs) -> TemporalDataset:
    # train interval fixed to the test interval, so that train and test samples hold the same frames
    config = DataConfig(dataroot=str(root), version=VERSION, image_size=(48, 96), num_past_frames=2,
                        train_interval=(6, 6), **kwargs)
    return TemporalDataset(config, "fake_all", train=True, seed=3)


def test_augmented_projections_stay_consistent(fake_root):
    """Augmented box corners through augmented lidar2img == un-augmented corners through the un-augmented
    lidar2img, mapped by the image augmentation: the box sticks to the same pixels of the same (moved) image."""
    plain = TemporalDataset(dataclasses.replace(_dataset(fake_root).config), "fake_all", train=False)
    augmented = _dataset(fake_root)
    for i in range(len(plain)):
        reference, sample = plain[i], augmented[i]
        assert torch.equal(reference.gt_labels, sample.gt_labels)  # no fixture box is near the range border
        by_instance = {t: m for m, t in enumerate(reference.meta.extra["instance_tokens"])}
        image_aug, test_aug = sample.meta.extra["image_aug"], reference.meta.extra["image_aug"]
        to_augmented = image_aug @ np.linalg.inv(test_aug)  # test-time pixels -> augmented pixels
        for m, instance in enumerate(sample.meta.extra["instance_tokens"]):
            corners = box_corners(sample.gt_boxes[m : m + 1].double())[0].numpy()
            plain_m = by_instance[instance]
            corners_plain = box_corners(reference.gt_boxes[plain_m : plain_m + 1].double())[0].numpy()
            for f in range(sample.lidar2img.shape[0]):
                for n in range(6):
                    pixels, depth = project_points(sample.lidar2img[f, n].double().numpy(), corners)
                    plain_lidar2img = reference.lidar2img[f, n].double().numpy()
                    plain_pixels, plain_depth = project_points(plain_lidar2img, corners_plain)
                    front = plain_depth > 0.5
                    expected = plain_pixels[front] @ to_augmented[:2, :2].T + to_augmented[:2, 2]
                    np.testing.assert_allclose(depth, plain_depth, rtol=1e-4, atol=1e-3)
                    np.testing.assert_allclose(pixels[front], expected, atol=2e-2)
        # the BEV augmentation moved the boxes (rotation about z, scale) and the ego pose accordingly
        bev = sample.meta.extra["bev_aug"]
        np.testing.assert_allclose(sample.ego_pose.numpy() @ bev, reference.meta.ref_to_global, atol=1e-6)


def test_flip_moves_the_image_content(fake_root):
    """With no resize jitter and stored size == input size, a flipped sample is exactly the mirrored test image."""
    config = DataConfig(dataroot=str(fake_root), version=VERSION, image_size=(72, 128), num_past_frames=1,
                        resize_jitter=(1.0, 1.0), photometric=False)
    plain = TemporalDataset(config, "fake_all", train=False)
    augmented = TemporalDataset(config, "fake_all", train=True)
    flipped = 0
    for epoch in range(6):
        augmented.set_epoch(epoch)
        sample = augmented[4]
        if sample.meta.extra["image_aug"][0, 0] < 0:
            reference = plain[4]
            assert torch.equal(sample.images[0], reference.images[0].flip(-1))
            flipped += 1
    assert flipped > 0


def test_photometric_is_identical_across_frames_and_views(fake_root):
    """The same stored image seen twice (padded frames) gets the same jitter; one draw per sample."""
    dataset = _dataset(fake_root)
    sample = dataset[0]  # scene start: past frames 1 and 2 repeat the same sweep
    assert torch.equal(sample.images[1], sample.images[2])
    no_photo = TemporalDataset(dataclasses.replace(dataset.config, photometric=False), "fake_all", train=True, seed=3)
    assert not torch.equal(no_photo[0].images, sample.images)
    np.testing.assert_array_equal(no_photo[0].meta.extra["image_aug"], sample.meta.extra["image_aug"])
