"""Schedule arithmetic for several world sizes and accumulation, lr scaling rules, optimizer groups."""

import math

import pytest
from torch import nn
from torch.utils.data import BatchSampler, DistributedSampler

from ftkd.config import load_config
from ftkd.engine.optim import (
    WarmupCosine,
    batches_per_epoch,
    build_optimizer,
    lr_multiplier,
    make_schedule,
    parameter_groups,
    plan_batches,
    scaled_lr,
)


def train_config(*overrides):
    return load_config(None, list(overrides)).train


def loader_length(num_samples, per_device_batch, world_size):
    """What a DataLoader over a DistributedSampler (rank 0) yields per epoch: the real thing, not our formula."""
    sampler = DistributedSampler(range(num_samples), num_replicas=world_size, rank=0, shuffle=True)
    return len(BatchSampler(sampler, per_device_batch, drop_last=False))


@pytest.mark.parametrize("num_samples", [100, 101, 28130])
def test_fixed_global_batch_gives_the_same_schedule_on_any_world_size(num_samples):
    train = train_config("train.global_batch=8", "train.epochs=24")
    schedules = []
    for world_size in (1, 2, 4):
        for grad_accum in (1, 2):
            t = train_config("train.global_batch=8", "train.epochs=24", f"train.grad_accum={grad_accum}")
            plan = plan_batches(t, data_batch_size=3, world_size=world_size)
            assert plan.global_batch == 8 and plan.per_device_batch == 8 // (world_size * grad_accum)
            micro = loader_length(num_samples, plan.per_device_batch, world_size)
            assert micro == batches_per_epoch(num_samples, plan.per_device_batch, world_size)
            schedules.append(make_schedule(t, plan, micro))
    reference = schedules[0]
    # one epoch = ceil(N / 8) optimiser steps, whatever the split over processes and accumulation
    assert reference.steps_per_epoch == math.ceil(num_samples / 8)
    assert reference.total_steps == 24 * math.ceil(num_samples / 8)
    assert reference.warmup_steps == 500  # 500 iterations at the reference batch 8
    assert reference.base_lr == pytest.approx(train.lr)
    for schedule in schedules[1:]:
        assert (schedule.total_steps, schedule.steps_per_epoch, schedule.warmup_steps) == (
            reference.total_steps,
            reference.steps_per_epoch,
            reference.warmup_steps,
        )
        for step in (0, 1, 250, 499, 500, 501, reference.total_steps // 2, reference.total_steps):
            assert schedule.lr(step) == reference.lr(step)


@pytest.mark.parametrize("rule, expected", [("linear", [0.25, 0.5, 1.0]), ("sqrt", [0.5, 0.5**0.5, 1.0]), ("none", [1, 1, 1])])
def test_per_device_batch_scales_lr_and_warmup_by_rule(rule, expected):
    num_samples = 64
    for world_size, factor in zip((1, 2, 4), expected):
        t = train_config(f"train.lr_scaling={rule}", "train.lr=2e-4", "train.reference_batch=8", "train.epochs=3")
        plan = plan_batches(t, data_batch_size=2, world_size=world_size)
        assert plan.global_batch == 2 * world_size
        schedule = make_schedule(t, plan, loader_length(num_samples, 2, world_size))
        assert schedule.base_lr == pytest.approx(2e-4 * factor)
        assert schedule.steps_per_epoch == num_samples // plan.global_batch
        assert schedule.total_steps == 3 * num_samples // plan.global_batch
        # the warmup always covers 500 x 8 = 4000 samples
        assert schedule.warmup_steps * plan.global_batch == 4000


def test_lr_curve_matches_hand_computed_values():
    t = train_config("train.global_batch=8", "train.epochs=1", "train.warmup_iters=10")
    schedule = make_schedule(t, plan_batches(t, 8, 1), 100)  # 100 steps, 10 warmup steps
    base, r, w = 2e-4, 1e-3, 1 / 3
    assert schedule.lr(0) == pytest.approx(base * w)  # cosine(0) = 1, warmup starts at 1/3
    assert schedule.lr(5) == pytest.approx(base * (r + (1 - r) * 0.5 * (1 + math.cos(math.pi * 0.05))) * (1 - (1 - w) * 0.5))
    assert schedule.lr(10) == pytest.approx(base * (r + (1 - r) * 0.5 * (1 + math.cos(math.pi * 0.1))))
    assert schedule.lr(50) == pytest.approx(base * (r + (1 - r) * 0.5))
    assert schedule.lr(100) == pytest.approx(base * r)


def test_fractional_epochs_and_grad_accum_remainder():
    t = train_config("train.epochs=1.5", "train.grad_accum=4")
    plan = plan_batches(t, data_batch_size=2, world_size=1)
    schedule = make_schedule(t, plan, micro_batches_per_epoch=10)  # groups of 4, 4, 2 -> 3 steps per epoch
    assert schedule.steps_per_epoch == 3
    assert schedule.total_steps == 5  # ceil(1.5 * 3)


def test_indivisible_global_batch_is_an_error_that_names_the_values():
    t = train_config("train.global_batch=8", "train.grad_accum=3")
    with pytest.raises(ValueError, match=r"global_batch=8 cannot be split over 2 process\(es\) x train.grad_accum=3"):
        plan_batches(t, 1, world_size=2)


def test_scaled_lr_rules():
    assert scaled_lr(2e-4, 16, 8, "linear") == pytest.approx(4e-4)  # StreamPETR's table: 16 -> 4e-4
    assert scaled_lr(2e-4, 32, 8, "sqrt") == pytest.approx(4e-4)
    with pytest.raises(ValueError, match="lr_scaling"):
        scaled_lr(2e-4, 8, 8, "cubic")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.img_backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.ModuleDict({"sampling_offset": nn.Linear(4, 4), "norm": nn.LayerNorm(4), "out": nn.Linear(4, 2)})
        self.frozen = nn.Linear(2, 2).requires_grad_(False)


def test_lr_multipliers_longest_key_wins():
    multipliers = {"backbone": 0.1, "img_backbone": 0.5, "offset": 0.2}
    assert lr_multiplier("model.img_backbone.0.weight", multipliers) == 0.5
    assert lr_multiplier("head.sampling_offset.bias", multipliers) == 0.2
    assert lr_multiplier("head.out.weight", multipliers) == 1.0


@pytest.mark.parametrize("decay_norm_and_bias", [True, False])
def test_parameter_groups_against_a_naive_loop(decay_norm_and_bias):
    net = Net()
    t = train_config(
        "train.lr_multipliers={backbone: 0.1, sampling_offset: 0.25}",
        f"train.decay_norm_and_bias={str(decay_norm_and_bias).lower()}",
    )
    groups = parameter_groups(net, t)
    got = {name: (group["lr_mult"], group["weight_decay"]) for group in groups for name in group["names"]}
    norm_params = {"img_backbone.1.weight", "img_backbone.1.bias", "head.norm.weight", "head.norm.bias"}
    expected = {}
    for name, param in net.named_parameters():
        if not param.requires_grad:
            continue
        mult = 0.1 if "backbone" in name else 0.25 if "sampling_offset" in name else 1.0
        no_decay = not decay_norm_and_bias and (name in norm_params or name.endswith(".bias"))
        expected[name] = (mult, 0.0 if no_decay else 0.01)
    assert got == expected
    assert "frozen.weight" not in got

    optimizer = build_optimizer(net, t, base_lr=1e-3)
    t2 = train_config("train.global_batch=8", "train.epochs=1", "train.warmup_iters=0")
    schedule = make_schedule(t2, plan_batches(t2, 8, 1), 4)
    scheduler = WarmupCosine(optimizer, schedule)
    scheduler.step()
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(schedule.lr(1) * group["lr_mult"])
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(expected)


def test_bad_multiplier_is_rejected():
    t = train_config("train.lr_multipliers={backbone: fast}")
    with pytest.raises(ValueError, match=r"lr_multipliers\['backbone'\]"):
        parameter_groups(Net(), t)
