"""Random tiny students whose class scores are spread out, saved as checkpoints: a fresh head gives every query the
prior 0.01, and ties make the top-k order arbitrary, so comparisons of two inference paths need distinct scores."""

from pathlib import Path

import torch

from ftkd.config import load_config
from ftkd.engine.checkpoint import config_to_json, save_checkpoint
from ftkd.models.build import build_model


def spread_student(config_path: str, overrides: list[str], out: Path):
    """-> (model in eval mode, its ExperimentConfig, checkpoint path `out/ckpt.pt`); seed 0, class-branch weights
    drawn from N(0, 1)."""
    config = load_config(config_path, overrides)
    torch.manual_seed(0)
    model = build_model(config.model).eval()
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith("cls_branch"):
                module[-1].weight.normal_(0.0, 1.0)
    checkpoint = save_checkpoint({"config": config_to_json(config), "model": model.state_dict()}, out / "ckpt.pt")
    return model, config, checkpoint
