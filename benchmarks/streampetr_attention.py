"""Does a trained StreamPETR look where the objects are? A diagnostic of its cross-attention and of how much its
outputs depend on the images.

StreamPETR finds an object's image tokens only through attention between a query's position embedding (a 3-D point)
and the tokens' PETR position embeddings (camera rays); nothing ties the two together but training. This script
streams a split through a checkpoint (eval mode, memory carried, as `ftkd predict`) and, per frame, places one query
exactly at the centre of every ground-truth box (a denoising query with no noise), then measures on the last decoder
layer's cross-attention (mean over heads):

- `attention_lift`: the attention mass on the tokens whose viewing ray passes within `radius_m` of the box centre,
  divided by those tokens' share of all tokens (1.0 = no better than uniform; a model that localises scores >> 1);
- `image_dependence`: how far the matching queries' logits move when the frame's images are replaced by uniform grey
  ones (same memory), relative to their spread over queries (~0 = the outputs ignore the images).

    python benchmarks/streampetr_attention.py runs/accuracy/bench/seed0/streampetr/checkpoints/final.pt --out a.json
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_records import write_json  # noqa: E402


def cross_attention_probabilities(attention: torch.nn.Module, inputs: tuple) -> Tensor:
    """[B, Q, S] softmax of a decoder MultiheadAttention's logits for its call `inputs` (query, key, value,
    query_pos, key_pos, bias), averaged over heads: its own `queries_and_keys`, scaled as its forward's attention."""
    query, key, _, query_pos, key_pos, bias = inputs
    q, k = attention.queries_and_keys(query, key, query_pos, key_pos)  # [B, h, Q, C/h], [B, h, S, C/h]
    logits = (q @ k.transpose(-1, -2)).float() / q.shape[-1] ** 0.5  # [B, h, Q, S]
    if bias is not None:
        logits = logits + bias.float()
    return logits.softmax(-1).mean(1)


def attention_geometry(checkpoint: str | Path, split: str | None = None, frames: int = 16, radius_m: float = 2.0,
                       device: str = "auto", dataroot: str | None = None) -> dict[str, Any]:
    """Stream the first `frames` batches of `split` (default: the checkpoint's val split) through the checkpoint and
    return, over the frames with ground truth, the means of `attention_mass_near` (per box query),
    `token_fraction_near` (the share of tokens within `radius_m` of its box centre), `logit_change_grey` and
    `logit_std_over_queries`, and their ratios `attention_lift` and `image_dependence` (module docstring)."""
    from ftkd.data.loader import build_dataloader
    from ftkd.engine.checkpoint import load_model
    from ftkd.models.streampetr.denoising import make_denoising_queries
    from ftkd.models.streampetr.memory import MemoryState
    from ftkd.models.streampetr.position_embedding import ray_distance_bias, token_centres, token_rays

    target = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    model, config = load_model(checkpoint, target)
    if config.model.arch != "streampetr":
        raise ValueError(f"{checkpoint}: expected a StreamPETR checkpoint, got model.arch {config.model.arch!r}")
    data = config.data if dataroot is None else dataclasses.replace(config.data, dataroot=dataroot)
    split = split or data.val_split
    loader = build_dataloader(data, split, train=False, sequential=True, seed=config.train.seed)
    captured: list[Tensor] = []
    last_cross = model.decoder.layers[-1].cross_attn
    hook = last_cross.register_forward_pre_hook(
        lambda module, inputs: captured.append(cross_attention_probabilities(module, inputs)))
    memory = None
    sums = {"attention_mass_near": 0.0, "token_fraction_near": 0.0, "logit_change_grey": 0.0,
            "logit_std_over_queries": 0.0}
    used = 0
    try:
        with torch.no_grad():
            for index, batch in enumerate(loader):
                if index == frames:
                    break
                batch = batch.to(target)
                if memory is None or memory.batch_size != batch.batch_size:
                    memory = MemoryState.empty(batch.batch_size, config.model.memory_len, config.model.embed_dims,
                                               target)
                keep = ~batch.scene_start.to(device=target, dtype=torch.bool)
                frame = (batch.lidar2img[:, 0], batch.intrinsics[:, 0], batch.ego_pose, batch.timestamp, keep, memory)
                dn = make_denoising_queries(batch.gt_boxes, batch.gt_labels, 1, 0.0, 1.0, config.model.num_classes,
                                            model.pc_range)
                captured.clear()
                output, next_memory = model.forward_frame(batch.images[:, 0], *frame, dn)
                grey = torch.full_like(batch.images[:, 0], 128)
                grey_output, _ = model.forward_frame(grey, *frame, None)
                memory = next_memory
                if dn is None:
                    continue
                probabilities = captured[0][:, : dn.num_queries]  # [B, D, S]
                h, w = output.pv_features[model.level_index].shape[-2:]
                stride = batch.images.shape[-1] / w
                origins, directions = token_rays(batch.lidar2img[:, 0].float(), token_centres(h, w, stride, target))
                centres = dn.target_boxes[..., :3].float()  # [B, D, 3] metres (code layout starts with the centre)
                near = -ray_distance_bias(centres, origins, directions, 1.0)[:, 0] < radius_m  # [B, D, S]
                valid = dn.valid
                mass = (probabilities * near).sum(-1)[valid]
                fraction = near.float().mean(-1)[valid]
                sums["attention_mass_near"] += float(mass.mean())
                sums["token_fraction_near"] += float(fraction.mean())
                logits, grey_logits = output.pred_logits.float(), grey_output.pred_logits.float()  # [B, Q, K]
                sums["logit_std_over_queries"] += float(logits.std(dim=1).mean())
                sums["logit_change_grey"] += float((logits - grey_logits).abs().mean())
                used += 1
    finally:
        hook.remove()
    if used == 0:
        raise ValueError(f"{checkpoint}: none of the first {frames} frames of split {split!r} has ground truth")
    means = {key: value / used for key, value in sums.items()}
    return {"checkpoint": str(checkpoint), "split": split, "frames": used, "radius_m": radius_m,
            "device": torch.cuda.get_device_name(target) if target.type == "cuda" else "cpu",
            "attention_lift": means["attention_mass_near"] / max(means["token_fraction_near"], 1e-9),
            "image_dependence": means["logit_change_grey"] / max(means["logit_std_over_queries"], 1e-9), **means}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--split", default=None, help="default: the checkpoint's val split")
    parser.add_argument("--dataroot", default=None, help="default: the checkpoint's")
    parser.add_argument("--frames", type=int, default=16, help="streamed batches (default 16)")
    parser.add_argument("--radius-m", type=float, default=2.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None, help="JSON file (default: print only)")
    args = parser.parse_args(argv)
    result = attention_geometry(args.checkpoint, args.split, args.frames, args.radius_m, args.device, args.dataroot)
    for key in ("attention_lift", "attention_mass_near", "token_fraction_near", "image_dependence"):
        print(f"{key:<22} {result[key]:.3f}")
    if args.out:
        write_json(result, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
