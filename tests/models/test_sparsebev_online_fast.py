"""OnlineSparseBEV's cache in the FPN's dtype (bf16 under bf16 autocast) gives the same bits as an fp32 cache
(restated naively below), on the CPU; and sample_multiview's level sum keeps its order."""

import math

import pytest
import torch
from sparsebev_fixtures import make_batch
from torch import nn

from ftkd.models.common.config import BackboneConfig
from ftkd.models.sparsebev.config import SparseBEVConfig
from ftkd.models.sparsebev.model import SparseBEV
from ftkd.models.sparsebev.online import OnlineSparseBEV, stack_frames
from ftkd.models.sparsebev.sampling import arrange_features, sample_multiview

T = 3  # frames per sample


def tiny_config(num_queries: int = 9) -> SparseBEVConfig:
    """A tiny online SparseBEV of T frames (ResNet-18 with a 32-channel FPN, 2 decoder layers)."""
    return SparseBEVConfig(
        backbone=BackboneConfig(depth=18, fpn_channels=32, channels_last=False),
        embed_dims=32, num_heads=4, ffn_dims=32, num_queries=num_queries, num_layers=2, num_frames=T,
        num_groups=4, num_points=2, out_points=8, dn_groups=2,
    )  # fmt: skip


def tiny_model(seed: int = 0) -> SparseBEV:
    torch.manual_seed(seed)
    model = SparseBEV(tiny_config()).eval()
    with torch.no_grad():  # zero-initialised generators would hide a wrong weight: give every weight a value
        for module in model.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, 0.2)
    return model


def stream(batch_size: int = 2, steps: int = 4) -> list[tuple]:
    """`steps` consecutive samples of a video, oldest first: sample s sees frames s, s-1, ... (current first)."""
    video = make_batch(batch_size=batch_size, num_frames=T + steps - 1, seed=3)
    samples = []
    for s in range(steps):
        start = steps - 1 - s  # the video's frame 0 is the newest
        batch = video.student_view(num_frames=T)
        batch.images = video.images[:, start : start + T]
        keys = [[(b, start + t) for t in range(T)] for b in range(batch_size)]
        samples.append((batch, keys))
    return samples


def reference_stream(model: SparseBEV, samples: list[tuple], dtype: torch.dtype | None) -> list:
    """The runner as it was before the cache kept the FPN's dtype: fp32 arranged features cached per frame, the
    backbone batched as the runner batches it."""
    G = model.config.num_groups
    autocast = torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None, cache_enabled=False)
    cache, outputs = {}, []
    for batch, keys in samples:
        B = batch.images.shape[0]
        missing = [(b, t) for b in range(B) for t in range(T) if keys[b][t] not in cache]
        if [t for _, t in missing] == [0] * B:
            new_images = batch.images[:, :1]
        else:
            new_images = torch.stack([batch.images[b, t] for b, t in missing])[None]
        with torch.no_grad(), autocast:
            levels = [arrange_features(level, G) for level in model.extract_features(new_images)]
        for i, (b, t) in enumerate(missing):
            cache[keys[b][t]] = [level[i * G : (i + 1) * G] for level in levels]
        arranged = [torch.cat([cache[keys[b][t]][lv] for b in range(B) for t in range(T)]) for lv in range(len(levels))]
        with torch.no_grad(), autocast:
            outputs.append(model.decode_arranged(arranged, batch.lidar2img, batch.time_offsets, (32, 96)))
    return outputs


def assert_same_bits(got, expected) -> None:
    for name in ("pred_logits", "pred_boxes", "query_features"):
        assert torch.equal(getattr(got, name), getattr(expected, name)), name
    for a, b in zip(got.aux_logits + got.aux_boxes, expected.aux_logits + expected.aux_boxes, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_bf16_runner_equals_per_call_casts_bit_for_bit(batch_size):
    model = tiny_model()
    samples = stream(batch_size)
    expected = reference_stream(model, samples, torch.bfloat16)
    runner = OnlineSparseBEV(model, max_cached_frames=4 * T, autocast_dtype=torch.bfloat16)
    for (batch, keys), reference in zip(samples, expected):
        assert_same_bits(runner(batch, keys), reference)
    assert runner.last_backbone_frames == batch_size  # the steady state: one new frame per sample
    assert all(entry.dtype == torch.bfloat16 for frame in runner.cache.values() for entry in frame)


def test_fp32_runner_is_unchanged_and_caches_fp32():
    model = tiny_model()
    samples = stream(2)
    runner = OnlineSparseBEV(model, max_cached_frames=4 * T)
    for (batch, keys), reference in zip(samples, reference_stream(model, samples, None)):
        assert_same_bits(runner(batch, keys), reference)
    assert all(entry.dtype == torch.float32 for frame in runner.cache.values() for entry in frame)


def test_stack_frames_widens_exactly():
    frames = [torch.randn(2, 3, 5, 4).to(torch.bfloat16) for _ in range(3)]
    stacked = stack_frames(frames)
    assert stacked.dtype == torch.float32 and stacked.shape == (6, 3, 5, 4)
    assert torch.equal(stacked, torch.cat([f.float() for f in frames]))
    out = torch.empty(6, 3, 5, 4)
    assert stack_frames(frames, out=out) is out and torch.equal(out, stacked)


def test_sampled_levels_are_summed_in_order_bit_for_bit():
    """sample_multiview = ((p_0 + p_1) + p_2), p_l = the level-l term alone (one-level call): the same order and
    values as the former 0 + p_0 + p_1 + p_2, without the pass over the largest tensor that adding 0 took."""
    torch.manual_seed(0)
    B, Q, T, G, P, C, H, W = 1, 5, 2, 2, 3, 4, 32, 96
    model_batch = make_batch(batch_size=B, num_frames=T, image_size=(H, W))
    sizes = [(8, 24), (4, 12), (2, 6)]
    features = [arrange_features(torch.randn(B, T, 6, C, h, w), G) for h, w in sizes]
    angle = torch.rand(B, Q, T, G, P) * 2 * math.pi
    radius = 3 + torch.rand(B, Q, T, G, P) * 15
    points = torch.stack([radius * angle.cos(), radius * angle.sin(), torch.rand(B, Q, T, G, P)], dim=-1)
    level_weights = torch.rand(B, Q, G, P, len(sizes)).softmax(-1)
    all_levels = sample_multiview(features, points, level_weights, model_batch.lidar2img, (H, W))
    terms = [
        sample_multiview([f], points, level_weights[..., level : level + 1], model_batch.lidar2img, (H, W))
        for level, f in enumerate(features)
    ]
    assert torch.equal(all_levels, (terms[0] + terms[1]) + terms[2])
    assert all_levels.abs().max() > 0 and not torch.equal(all_levels, (terms[0] + terms[2]) + terms[1])
