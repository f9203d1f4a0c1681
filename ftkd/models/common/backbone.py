"""Image backbone: a torchvision ResNet (18/34/50/101) followed by an FPN (strides 4..32, 256 channels)."""

from __future__ import annotations

import logging
from typing import NamedTuple

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ftkd.models.common.config import BackboneConfig

logger = logging.getLogger(__name__)

_STAGE_CHANNELS = {
    18: (64, 128, 256, 512),
    34: (64, 128, 256, 512),
    50: (256, 512, 1024, 2048),
    101: (256, 512, 1024, 2048),
}
_NECK_KEYS = ("lateral_convs.", "fpn_convs.")


class LoadReport(NamedTuple):
    """Keys of the model left at their initial values and checkpoint keys that were not used."""

    missing: list[str]
    unexpected: list[str]


class ResNetFPN(nn.Module):
    """ResNet C2..C5 + FPN (1x1 laterals, nearest top-down sums, 3x3 output convs; no norm, no activation).

    Levels are indexed by ResNet stage: level l (0..3) comes from layer{l+1}, stride 2^(l+2). Only the stages up
    to max(out_levels) are built; the top-down path runs over the requested (contiguous) levels, as mmdet's FPN
    with start_level = min(out_levels).
    """

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        if config.depth not in _STAGE_CHANNELS:
            raise ValueError(f"backbone.depth: expected one of {sorted(_STAGE_CHANNELS)}, got {config.depth}")
        levels = tuple(config.out_levels)
        contiguous = bool(levels) and list(levels) == list(range(levels[0], levels[-1] + 1))
        if not contiguous or not 0 <= levels[0] <= levels[-1] <= 3:
            raise ValueError(f"backbone.out_levels: expected contiguous ascending levels in 0..3, got {levels}")
        if not 0 <= config.frozen_stages <= 4:
            raise ValueError(f"backbone.frozen_stages: expected 0..4, got {config.frozen_stages}")
        self.config = config
        self.out_levels = levels
        resnet = getattr(torchvision.models, f"resnet{config.depth}")(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.num_stages = levels[-1] + 1
        for stage in range(1, self.num_stages + 1):
            self.add_module(f"layer{stage}", getattr(resnet, f"layer{stage}"))
        in_channels = [_STAGE_CHANNELS[config.depth][level] for level in levels]
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, config.fpn_channels, 1) for c in in_channels)
        channels = config.fpn_channels
        self.fpn_convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in levels)
        for conv in [*self.lateral_convs, *self.fpn_convs]:
            nn.init.xavier_uniform_(conv.weight)  # mmdet FPN init
            nn.init.zeros_(conv.bias)
        self._freeze_stages()
        if config.pretrained:
            self.load_pretrained(config.pretrained)
        if config.channels_last:
            self.to(memory_format=torch.channels_last)

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(2 ** (level + 2) for level in self.out_levels)

    def _frozen_modules(self) -> list[nn.Module]:
        if self.config.frozen_stages == 0:
            return []
        stages = [getattr(self, f"layer{i}") for i in range(1, min(self.config.frozen_stages, self.num_stages) + 1)]
        return [self.conv1, self.bn1, *stages]

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad_(False)

    def train(self, mode: bool = True) -> "ResNetFPN":
        """Frozen stages stay in eval mode; with norm_eval every BatchNorm keeps its running statistics."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.config.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def _run_stage(self, stage: nn.Sequential, x: Tensor) -> Tensor:
        """Run one ResNet stage, recomputing each residual block in the backward pass if `with_checkpoint`."""
        if self.config.with_checkpoint and self.training and torch.is_grad_enabled():
            for block in stage:
                x = checkpoint(block, x, use_reentrant=False)
            return x
        return stage(x)

    def forward(self, images: Tensor) -> list[Tensor]:
        """images: [B', 3, H, W] normalised float -> one [B', C, H/s, W/s] map per level of `out_levels`."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"ResNetFPN: expected images [B', 3, H, W], got {tuple(images.shape)}")
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        stage_outputs = []
        for stage in range(1, self.num_stages + 1):
            x = self._run_stage(getattr(self, f"layer{stage}"), x)
            stage_outputs.append(x)
        laterals = [conv(stage_outputs[level]) for conv, level in zip(self.lateral_convs, self.out_levels)]
        for i in range(len(laterals) - 1, 0, -1):
            upsampled = F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
            laterals[i - 1] = laterals[i - 1] + upsampled
        return [conv(lateral) for conv, lateral in zip(self.fpn_convs, laterals)]

    def load_pretrained(self, path: str, include_neck: bool = False) -> LoadReport:
        """Load a local torchvision or mmdet-style checkpoint (no downloads).

        Accepted layouts: a plain torchvision state dict (`conv1.weight`, `layer1.0...`, `fc.*` ignored), or an
        mmdet/mmdet3d one under `state_dict`/`model` with `backbone.*` or `img_backbone.*` keys (and `neck.*` /
        `img_neck.*` FPN keys, loaded only if `include_neck`; the official recipes load the backbone only).
        A `module.` prefix (DDP) is stripped. Shape mismatches raise; missing and unused keys are logged and
        returned.
        """
        checkpoint_data = torch.load(path, map_location="cpu", weights_only=True)
        state = checkpoint_data
        for wrapper in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
                state = state[wrapper]
        if not isinstance(state, dict):
            raise ValueError(f"{path}: expected a state dict (maybe under 'state_dict' or 'model'), got {type(state)}")
        state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
        mmdet_style = any(k.startswith(("backbone.", "img_backbone.")) for k in state)
        own = self.state_dict()
        selected: dict[str, Tensor] = {}
        unexpected = []
        for key, value in state.items():
            name = key
            if mmdet_style:
                for prefix in ("img_backbone.", "backbone."):
                    if key.startswith(prefix):
                        name = key[len(prefix):]
                        break
                else:
                    for prefix in ("img_neck.", "neck."):
                        if include_neck and key.startswith(prefix):
                            # mmdet ConvModule wraps the conv: lateral_convs.0.conv.weight -> lateral_convs.0.weight
                            name = key[len(prefix):].replace(".conv.", ".")
                            break
                    else:
                        unexpected.append(key)
                        continue
            if name.startswith(_NECK_KEYS) and not (mmdet_style and include_neck):
                unexpected.append(key)
                continue
            if name not in own:
                if not name.startswith("fc."):
                    unexpected.append(key)
                continue
            if own[name].shape != value.shape:
                raise ValueError(
                    f"{path}: key {key!r} has shape {tuple(value.shape)}, the model expects {tuple(own[name].shape)} "
                    f"at {name!r} (backbone depth {self.config.depth}?)"
                )
            selected[name] = value
        result = self.load_state_dict(selected, strict=False)
        missing = [k for k in result.missing_keys if include_neck or not k.startswith(_NECK_KEYS)]
        if missing or unexpected:
            logger.warning(
                "%s: %d missing keys %s; %d unused keys %s",
                path, len(missing), missing[:8], len(unexpected), unexpected[:8],
            )
        logger.info("loaded %d tensors from %s", len(selected), path)
        return LoadReport(missing=missing, unexpected=unexpected)
