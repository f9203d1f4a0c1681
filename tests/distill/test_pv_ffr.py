"""PV-FFR: TSA against a hand-written attention loop; loss zero at the target, positive otherwise; gradients."""

import math

import pytest
import torch
from torch import nn

from ftkd.distill.pv_ffr import PVFeatureReconstruction, TemporalSelfAttention, masked_generation_loss


def naive_tsa(query_maps, key_maps, all_cameras=False):
    """sum_j softmax(q k^T / sqrt(C)) v, with explicit loops over batch, frames, cameras and locations."""
    B, Ti, N, C, H, W = query_maps.shape
    Tj = key_maps.shape[1]
    out = torch.zeros(B, Ti, N, C, H, W, dtype=torch.float64)
    for b in range(B):
        for i in range(Ti):
            for j in range(Tj):
                for n in range(N):
                    cams = range(N) if all_cameras else [n]
                    keys = [key_maps[b, j, m, :, y, x].double() for m in cams for y in range(H) for x in range(W)]
                    for y in range(H):
                        for x in range(W):
                            q = query_maps[b, i, n, :, y, x].double()
                            logits = torch.stack([q @ k / math.sqrt(C) for k in keys])
                            weights = logits.softmax(0)
                            out[b, i, n, :, y, x] += sum(w * k for w, k in zip(weights, keys))
    return out


@pytest.mark.parametrize("keys", ["same_camera", "all_cameras"])
def test_tsa_matches_hand_written_attention(keys):
    torch.manual_seed(0)
    query_maps = torch.randn(2, 2, 2, 4, 2, 3)  # [B, Ti, N, C, H, W]
    key_maps = torch.randn(2, 3, 2, 4, 2, 3)  # [B, Tj, N, C, H, W]
    expected = naive_tsa(query_maps, key_maps, all_cameras=keys == "all_cameras")
    fixed = TemporalSelfAttention(4, "fixed", keys)(query_maps, key_maps)
    torch.testing.assert_close(fixed.double(), expected, rtol=1e-5, atol=1e-5)
    learned = TemporalSelfAttention(4, "learned", keys)  # identity-initialised projections
    torch.testing.assert_close(learned(query_maps, key_maps).double(), expected, rtol=1e-5, atol=1e-5)
    mean = TemporalSelfAttention(4, "fixed", keys)(query_maps, key_maps, reduce="mean")
    torch.testing.assert_close(mean.double(), expected / 3, rtol=1e-5, atol=1e-5)


def test_generation_loss_zero_at_target_positive_otherwise():
    torch.manual_seed(0)
    target = torch.randn(2, 3, 6, 8, 4, 5)  # [B, T, N, C, H, W]
    identity = nn.Identity()
    zero = masked_generation_loss(target.clone(), target, identity, identity, 0.0, "pixel", "images")
    assert zero.item() == 0.0
    off = masked_generation_loss(target + 0.1, target, identity, identity, 0.0, "pixel", "images")
    # every entry is off by 0.1: sum of squares / (B * T * N) images
    assert off.item() == pytest.approx(0.01 * target.numel() / 36, rel=1e-4)
    per_element = masked_generation_loss(target + 0.1, target, identity, identity, 0.0, "pixel", "elements")
    assert per_element.item() == pytest.approx(0.01, rel=1e-4)
    masked = masked_generation_loss(target.clone(), target, identity, identity, 0.5, "pixel", "images")
    assert masked.item() > 0


def test_pv_ffr_target_is_future_aggregation_and_loss_zero_at_it():
    torch.manual_seed(0)
    module = PVFeatureReconstruction(8, 8, mask_ratio=0.0)
    module.generator = nn.Identity()
    teacher = torch.randn(1, 5, 2, 8, 3, 4)  # 3 past/current frames, then 2 future frames
    target = module.target(teacher, num_teacher_frames=3, num_query_frames=3)
    expected = naive_tsa(teacher[:, :3], teacher[:, 3:])
    torch.testing.assert_close(target.double(), expected, rtol=1e-5, atol=1e-5)
    assert module(target.clone(), teacher, num_teacher_frames=3).item() == pytest.approx(0.0, abs=1e-10)
    assert module(target + 0.5, teacher, num_teacher_frames=3).item() > 0
    # the student may hold fewer frames (StreamPETR: the current one only)
    assert module(target[:, :1].clone(), teacher, num_teacher_frames=3).item() == pytest.approx(0.0, abs=1e-10)
    # "no future" teacher: the keys are its own frames
    no_future = module.target(teacher[:, :3], num_teacher_frames=3, num_query_frames=2)
    torch.testing.assert_close(no_future.double(), naive_tsa(teacher[:, :2], teacher[:, :3]), rtol=1e-5, atol=1e-5)


def test_pv_ffr_adapters_and_gradients():
    torch.manual_seed(0)
    module = PVFeatureReconstruction(4, 8, tsa_mode="learned")  # channel adapter, resolution adapter
    assert isinstance(module.adapter, nn.Conv2d)
    with torch.no_grad():
        teacher = torch.randn(2, 4, 2, 8, 4, 6)  # 2 frames + 2 future, 4 x 6 maps (student maps are 8 x 12)
    student = torch.randn(2, 3, 2, 4, 8, 12, requires_grad=True)
    loss = module(student, teacher, num_teacher_frames=2)
    loss.backward()
    assert student.grad is not None and student.grad[:, :2].abs().sum() > 0
    assert student.grad[:, 2].abs().sum() == 0  # the teacher has no third frame: not distilled
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.adapter.parameters())
    assert all(p.grad is not None for p in module.generator.parameters())
    assert module.tsa.query_proj.weight.grad is not None  # learned TSA is trained by L_pv through the target
    assert teacher.grad is None and not teacher.requires_grad
    fixed = PVFeatureReconstruction(8, 8, frames="current")
    assert list(fixed.tsa.parameters()) == [] and isinstance(fixed.adapter, nn.Identity)
