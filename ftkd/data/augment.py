"""Augmentations of a temporal multi-view sample (SparseBEV's recipe), with the geometry kept consistent.

One draw per sample, applied identically to every frame and camera:
- image: resize by s, crop to the network input size (bottom crop in y, random/centred in x), horizontal flip;
  the pixel mapping is a 3x3 matrix that left-multiplies the camera matrix (and so `lidar2img`);
- BEV: rotation about z and a uniform scale of the reference frame (a 4x4 A: un-augmented -> augmented);
  boxes are mapped by A, `lidar2img` right-multiplied by inverse(A) so projections are unchanged;
- photometric: brightness, contrast, saturation, hue jitter (mmdet PhotoMetricDistortion ranges) on uint8 images.
Pixel coordinates use the OpenCV convention (pixel centres at integers), so matrices are exact to sub-pixel level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ftkd.data.geometry import rotation_z


@dataclass(frozen=True)
class ImageAug:
    """Resize the stored image by `scale`, crop a window at `crop` (x0, y0 in resized pixels), then maybe flip."""

    scale: float
    crop: tuple[int, int]
    flip: bool
    output_size: tuple[int, int]  # (H, W) network input

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of an image of the given stored size after the resize."""
        return max(1, round(width * self.scale)), max(1, round(height * self.scale))

    def matrix(self, width: int, height: int) -> np.ndarray:
        """[3, 3] float64 map from stored-image pixels to output pixels (pixel centres at integers)."""
        new_width, new_height = self.resized_size(width, height)
        sx, sy = new_width / width, new_height / height
        x0, y0 = self.crop
        # resize in pixel-edge coordinates: (u + 0.5) * s - 0.5; then shift by the crop origin
        out = np.array([[sx, 0.0, 0.5 * sx - 0.5 - x0], [0.0, sy, 0.5 * sy - 0.5 - y0], [0.0, 0.0, 1.0]])
        if self.flip:
            flip = np.array([[-1.0, 0.0, self.output_size[1] - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
            out = flip @ out
        return out


def sample_image_aug(
    rng: np.random.Generator | None,
    stored_size: tuple[int, int],
    output_size: tuple[int, int],
    resize_jitter: tuple[float, float] = (1.0, 1.0),
    flip: bool = False,
) -> ImageAug:
    """Draw an image augmentation (rng=None: the deterministic test-time transform).

    Args:
        stored_size: (H, W) of the stored images.
        output_size: (H, W) network input.
        resize_jitter: the resize factor is s0 * U(resize_jitter), s0 = max(H_out / H, W_out / W) (the smallest
            resize that covers the output; SparseBEV's U(0.38, 0.55) for 1600x900 -> 704x256 is s0 * U(0.86, 1.25)).
        flip: allow a horizontal flip with probability 0.5.
    """
    height, width = stored_size
    out_height, out_width = output_size
    base = max(out_height / height, out_width / width)
    if rng is None:
        scale = base
        new_width, new_height = max(1, round(width * scale)), max(1, round(height * scale))
        x0 = max(0, new_width - out_width) // 2
        return ImageAug(scale, (x0, new_height - out_height), False, output_size)
    scale = base * float(rng.uniform(*resize_jitter))
    new_width, new_height = max(1, round(width * scale)), max(1, round(height * scale))
    x0 = int(rng.integers(0, max(0, new_width - out_width) + 1))
    do_flip = bool(flip and rng.random() < 0.5)
    # bottom crop (the sky carries nothing); a window larger than the image is padded with zeros on the right/top
    return ImageAug(scale, (x0, new_height - out_height), do_flip, output_size)


def load_image(path: str, aug: ImageAug, width: int, height: int) -> Image.Image:
    """Decode a stored image and apply `aug` (resize, crop, flip) -> RGB image of `aug.output_size`.

    Only the crop window is resampled (PIL's `resize(box=...)` reads the same source pixels as a full resize would),
    and libjpeg decodes at 1/2, 1/4 or 1/8 scale when that factor divides the stored size and the resize shrinks
    by at least as much: DCT-domain downscaling maps pixel edges exactly, so `aug.matrix` still holds. Parts of the
    window outside the resized image are zero.
    """
    image = Image.open(path)
    if image.size != (width, height):
        raise ValueError(f"image is {image.size[0]}x{image.size[1]}, but its sample_data says {width}x{height}")
    new_width, new_height = aug.resized_size(width, height)
    if image.format == "JPEG":
        for reduce in (8, 4, 2):
            exact = width % reduce == 0 and height % reduce == 0
            if exact and width // reduce >= new_width and height // reduce >= new_height:
                image.draft("RGB", (width // reduce, height // reduce))
                break
    image = image.convert("RGB")
    sx, sy = new_width / image.size[0], new_height / image.size[1]  # decoded -> resized, pixel-edge coordinates
    x0, y0 = aug.crop
    out_height, out_width = aug.output_size
    left, top = max(x0, 0), max(y0, 0)
    right, bottom = min(x0 + out_width, new_width), min(y0 + out_height, new_height)
    if (left, top, right, bottom) == (x0, y0, x0 + out_width, y0 + out_height):
        out = image.resize((out_width, out_height), Image.BILINEAR, box=(x0 / sx, y0 / sy, right / sx, bottom / sy))
    else:
        out = Image.new("RGB", (out_width, out_height))
        if right > left and bottom > top:
            box = (left / sx, top / sy, right / sx, bottom / sy)
            out.paste(image.resize((right - left, bottom - top), Image.BILINEAR, box=box), (left - x0, top - y0))
    if aug.flip:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return out


def sample_bev_aug(
    rng: np.random.Generator, rotation: tuple[float, float], scale: tuple[float, float]
) -> np.ndarray:
    """[4, 4] float64 A = scale * R_z(angle): un-augmented reference frame -> augmented reference frame."""
    angle = float(rng.uniform(*rotation))
    factor = float(rng.uniform(*scale))
    out = rotation_z(angle)
    out[:3, :3] *= factor
    return out


@dataclass(frozen=True)
class PhotometricAug:
    """mmdet PhotoMetricDistortion draws (brightness delta, contrast/saturation factors, hue shift in degrees)."""

    brightness: float = 0.0
    contrast: float = 1.0
    contrast_first: bool = True
    saturation: float = 1.0
    hue: float = 0.0


def sample_photometric(rng: np.random.Generator) -> PhotometricAug:
    """Each distortion is applied with probability 0.5: brightness +-32, contrast and saturation x U(0.5, 1.5), hue
    +-18 degrees; contrast before or after the HSV part with equal odds."""
    brightness = float(rng.uniform(-32, 32)) if rng.random() < 0.5 else 0.0
    contrast_first = bool(rng.random() < 0.5)
    contrast = float(rng.uniform(0.5, 1.5)) if rng.random() < 0.5 else 1.0
    saturation = float(rng.uniform(0.5, 1.5)) if rng.random() < 0.5 else 1.0
    hue = float(rng.uniform(-18, 18)) if rng.random() < 0.5 else 0.0
    return PhotometricAug(brightness, contrast, contrast_first, saturation, hue)


def _lookup(values: np.ndarray) -> list[int]:
    return np.clip(np.round(values), 0, 255).astype(np.uint8).tolist()


def apply_photometric(image: Image.Image, aug: PhotometricAug) -> Image.Image:
    """Apply the distortion to an RGB uint8 image with 256-entry lookup tables (no float image on the CPU).

    Values are clipped to [0, 255] after each step (mmdet works in float and clips once at the end).
    """
    levels = np.arange(256, dtype=np.float64)
    contrast_lut = _lookup(levels * aug.contrast) * 3
    if aug.brightness != 0.0:
        image = image.point(_lookup(levels + aug.brightness) * 3)
    if aug.contrast != 1.0 and aug.contrast_first:
        image = image.point(contrast_lut)
    if aug.saturation != 1.0 or aug.hue != 0.0:
        hue, saturation, value = image.convert("HSV").split()
        if aug.hue != 0.0:  # PIL stores hue in [0, 256) for a full turn
            hue = hue.point(np.mod(np.round(levels + aug.hue * 256.0 / 360.0), 256).astype(np.uint8).tolist())
        if aug.saturation != 1.0:
            saturation = saturation.point(_lookup(levels * aug.saturation))
        image = Image.merge("HSV", (hue, saturation, value)).convert("RGB")
    if aug.contrast != 1.0 and not aug.contrast_first:
        image = image.point(contrast_lut)
    return image
