"""Image operations done on the device: normalisation and GridMask augmentation."""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from ftkd.constants import IMAGE_MEAN, IMAGE_STD


def normalize_images(images: Tensor) -> Tensor:
    """Subtract the ImageNet mean and divide by its std, per RGB channel.

    Args:
        images: [..., 3, H, W] RGB pixel values in 0..255, uint8 or float (float input is taken as unnormalised
            0..255 values, as the data layer produces them).
    Returns:
        float32 tensor of the same shape, on the same device.
    """
    if images.shape[-3] != 3:
        raise ValueError(f"expected images [..., 3, H, W] (RGB), got {tuple(images.shape)}")
    mean, std = _mean_std(images.device)
    return (images.float() - mean) / std


@functools.lru_cache(maxsize=None)
def _mean_std(device: torch.device) -> tuple[Tensor, Tensor]:
    """[3, 1, 1] mean and std on `device`, made once (so that CUDA-graph capture does no host-to-device copy)."""
    mean = torch.tensor(IMAGE_MEAN, dtype=torch.float32).view(3, 1, 1).to(device)
    std = torch.tensor(IMAGE_STD, dtype=torch.float32).view(3, 1, 1).to(device)
    return mean, std


class GridMask(nn.Module):
    """GridMask augmentation (ratio 0.5, probability 0.7), as in the SparseBEV and StreamPETR recipes.

    A square grid of period d ~ U{2, H-1} is laid over the image; the cells between the grid lines (lines of
    width l = round(d * ratio)) are zeroed, i.e. about (1 - ratio)^2 of the image. One mask is drawn per sample
    and shared by all its frames and cameras (the official code draws one per batch; per-sample masks add
    diversity while keeping a sample's frames consistent, like every other augmentation of a sample). Applied in
    training only, to normalised images (zero = the mean colour).
    """

    def __init__(self, ratio: float = 0.5, prob: float = 0.7) -> None:
        super().__init__()
        self.ratio = ratio
        self.prob = prob

    def _line_mask(self, length: int, canvas: int, period: int, width: int, start: int, device: torch.device) -> Tensor:
        """[length] bool: True on grid lines, for the centre crop of a `canvas`-long axis (official layout)."""
        index = torch.arange(length, device=device) + (canvas - length) // 2  # position on the 1.5x canvas
        shifted = index - start
        num_lines = canvas // period
        return (shifted >= 0) & (shifted.div(period, rounding_mode="floor") < num_lines) & (shifted % period < width)

    def forward(self, images: Tensor) -> Tensor:
        """images: [B, ..., H, W] normalised; returns the masked images (same shape, new tensor)."""
        if not self.training:
            return images
        B, H, W = images.shape[0], images.shape[-2], images.shape[-1]
        masks = torch.ones(B, H, W, dtype=images.dtype, device=images.device)
        for b in range(B):
            if torch.rand(()).item() > self.prob:
                continue
            period = int(torch.randint(2, H, ()).item())
            width = min(max(int(period * self.ratio + 0.5), 1), period - 1)
            start_h = int(torch.randint(period, ()).item())
            start_w = int(torch.randint(period, ()).item())
            rows = self._line_mask(H, int(1.5 * H), period, width, start_h, images.device)
            cols = self._line_mask(W, int(1.5 * W), period, width, start_w, images.device)
            masks[b] = (rows[:, None] | cols[None, :]).to(images.dtype)
        shape = (B,) + (1,) * (images.dim() - 3) + (H, W)
        return images * masks.view(shape)
