"""Configuration of the image backbone + FPN shared by both detectors."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackboneConfig:
    depth: int = 50  # ResNet depth: 18, 34, 50 or 101
    pretrained: str = ""  # path to a local torchvision or mmdet-style checkpoint ("" = random init)
    frozen_stages: int = 1  # 0: nothing frozen; 1: stem + layer1 frozen (official recipe)
    norm_eval: bool = True  # keep BatchNorm statistics frozen in training
    with_checkpoint: bool = False  # gradient checkpointing of the ResNet stages
    fpn_channels: int = 256
    out_levels: tuple[int, ...] = (0, 1, 2, 3)  # C2..C5 -> FPN levels with strides 4, 8, 16, 32
    channels_last: bool = True
