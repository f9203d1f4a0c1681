"""ResNet-FPN backbone: shapes and strides, freezing, checkpointing, channels_last and checkpoint loading."""

import logging

import pytest
import torch
import torchvision

from ftkd.models.common.backbone import ResNetFPN
from ftkd.models.common.config import BackboneConfig


def test_shapes_strides_and_levels():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 96)
    backbone = ResNetFPN(BackboneConfig(depth=18, fpn_channels=16, channels_last=False)).eval()
    outputs = backbone(images)
    assert backbone.strides == (4, 8, 16, 32)
    assert [tuple(o.shape) for o in outputs] == [(2, 16, 64 // s, 96 // s) for s in (4, 8, 16, 32)]
    top = ResNetFPN(BackboneConfig(depth=18, fpn_channels=16, out_levels=(2, 3), channels_last=False)).eval()
    assert [tuple(o.shape) for o in top(images)] == [(2, 16, 4, 6), (2, 16, 2, 3)]
    with pytest.raises(ValueError, match="out_levels"):
        ResNetFPN(BackboneConfig(depth=18, out_levels=(0, 2)))


def test_frozen_stages_and_norm_eval():
    backbone = ResNetFPN(BackboneConfig(depth=18, frozen_stages=1, norm_eval=True, channels_last=False)).train()
    assert not backbone.conv1.weight.requires_grad and not backbone.layer1[0].conv1.weight.requires_grad
    assert backbone.layer2[0].conv1.weight.requires_grad and backbone.layer2[0].bn1.weight.requires_grad
    assert not any(m.training for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert backbone.lateral_convs[0].training
    free = ResNetFPN(BackboneConfig(depth=18, frozen_stages=0, norm_eval=False, channels_last=False)).train()
    assert free.conv1.weight.requires_grad and free.bn1.training


def test_checkpointing_and_channels_last_give_the_same_result():
    torch.manual_seed(0)
    config = BackboneConfig(depth=18, fpn_channels=16, channels_last=False)
    reference = ResNetFPN(config).train()
    checkpointed = ResNetFPN(BackboneConfig(depth=18, fpn_channels=16, channels_last=False, with_checkpoint=True)).train()
    channels_last = ResNetFPN(BackboneConfig(depth=18, fpn_channels=16, channels_last=True)).train()
    checkpointed.load_state_dict(reference.state_dict())
    channels_last.load_state_dict(reference.state_dict())
    images = torch.randn(2, 3, 64, 64)
    out_reference, out_checkpointed, out_channels_last = reference(images), checkpointed(images), channels_last(images)
    for a, b, c in zip(out_reference, out_checkpointed, out_channels_last):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-4)  # other conv algorithms
    sum(o.sum() for o in out_reference).backward()
    sum(o.sum() for o in out_checkpointed).backward()
    torch.testing.assert_close(reference.layer3[0].conv1.weight.grad, checkpointed.layer3[0].conv1.weight.grad)


def test_load_torchvision_checkpoint(tmp_path, caplog):
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(resnet.state_dict(), path)
    backbone = ResNetFPN(BackboneConfig(depth=18, pretrained=str(path), channels_last=False))
    torch.testing.assert_close(backbone.layer3[1].conv2.weight, resnet.layer3[1].conv2.weight)
    torch.testing.assert_close(backbone.bn1.running_var, resnet.bn1.running_var)
    report = backbone.load_pretrained(str(path))
    assert report.missing == [] and report.unexpected == []  # fc.* is dropped silently


def test_load_mmdet_checkpoint_with_neck(tmp_path, caplog):
    torch.manual_seed(0)
    source = ResNetFPN(BackboneConfig(depth=18, fpn_channels=16, channels_last=False))
    state = {f"img_backbone.{k}": v for k, v in source.state_dict().items() if not k.startswith(("lateral", "fpn"))}
    for i, (lateral, out) in enumerate(zip(source.lateral_convs, source.fpn_convs)):
        state[f"img_neck.lateral_convs.{i}.conv.weight"] = lateral.weight
        state[f"img_neck.lateral_convs.{i}.conv.bias"] = lateral.bias
        state[f"img_neck.fpn_convs.{i}.conv.weight"] = out.weight
        state[f"img_neck.fpn_convs.{i}.conv.bias"] = out.bias
    state["pts_bbox_head.cls_branch.weight"] = torch.zeros(3)
    path = tmp_path / "mmdet.pth"
    torch.save({"meta": {"epoch": 24}, "state_dict": state}, path)
    target = ResNetFPN(BackboneConfig(depth=18, fpn_channels=16, channels_last=False))
    with caplog.at_level(logging.WARNING):
        report = target.load_pretrained(str(path))  # backbone only, as the official recipes
    assert report.missing == [] and "img_neck.fpn_convs.0.conv.weight" in report.unexpected
    assert "pts_bbox_head.cls_branch.weight" in report.unexpected
    torch.testing.assert_close(target.layer4[0].conv1.weight, source.layer4[0].conv1.weight)
    assert not torch.equal(target.fpn_convs[0].weight, source.fpn_convs[0].weight)
    report = target.load_pretrained(str(path), include_neck=True)
    assert report.unexpected == ["pts_bbox_head.cls_branch.weight"]
    images = torch.randn(1, 3, 64, 64)
    for a, b in zip(source.eval()(images), target.eval()(images)):
        torch.testing.assert_close(a, b)
    wrong = ResNetFPN(BackboneConfig(depth=34, fpn_channels=16, channels_last=False))
    torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(1, 1, 1, 1)}}, path)
    with pytest.raises(ValueError, match="conv1.weight"):
        wrong.load_pretrained(str(path))
