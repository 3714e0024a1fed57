"""Tests for coursepkg.models.dense_heads: torchvision's RetinaNet heads with copied weights."""

import math
from collections import OrderedDict

import pytest
import torch
from torch.testing import assert_close
from torchvision.models.detection.retinanet import (
    RetinaNetClassificationHead,
    RetinaNetRegressionHead,
)

from coursepkg.models.dense_heads import (
    ClassificationHead,
    DenseHead,
    HeadTower,
    RegressionHead,
    prior_bias,
)


def copy_into(ours: DenseHead, theirs: torch.nn.Module, predictor: str) -> None:
    state = {}
    for i, block in enumerate(ours.tower):
        state[f"conv.{i}.0.weight"] = block[0].weight
        state[f"conv.{i}.0.bias"] = block[0].bias
    state[f"{predictor}.weight"] = ours.predictor.weight
    state[f"{predictor}.bias"] = ours.predictor.bias
    theirs.load_state_dict(state)


def random_levels(generator, batch, channels, sizes):
    return [torch.randn(batch, channels, h, w, generator=generator) for h, w in sizes]


def test_prior_bias():
    assert abs(prior_bias() - (-4.59512)) < 1e-5
    assert prior_bias(0.5) == 0.0
    assert abs(1 / (1 + math.exp(-prior_bias(0.2))) - 0.2) < 1e-12


@pytest.mark.parametrize(
    "seed, num_anchors, num_classes, sizes",
    [
        (0, 9, 5, [(8, 6), (4, 3), (2, 2), (1, 1), (1, 1)]),
        (1, 1, 1, [(5, 7)]),
        (2, 3, 20, [(9, 4), (5, 2)]),
    ],
)
def test_equals_torchvision(seed, num_anchors, num_classes, sizes):
    torch.manual_seed(seed)
    channels = 16
    cls = ClassificationHead(channels, num_anchors, num_classes)
    reg = RegressionHead(channels, num_anchors)
    # Random biases too, so that a mix-up of the columns would show.
    for module in (cls, reg):
        for p in module.parameters():
            p.data.normal_(0, 0.1)
    theirs_cls = RetinaNetClassificationHead(channels, num_anchors, num_classes)
    theirs_reg = RetinaNetRegressionHead(channels, num_anchors)
    copy_into(cls, theirs_cls, "cls_logits")
    copy_into(reg, theirs_reg, "bbox_reg")
    features = random_levels(torch.Generator().manual_seed(seed), 2, channels, sizes)
    logits, deltas = cls(features), reg(features)
    total = sum(h * w for h, w in sizes) * num_anchors
    assert logits.shape == (2, total, num_classes) and deltas.shape == (2, total, 4)
    assert_close(logits, theirs_cls(features), rtol=0, atol=1e-6)
    assert_close(deltas, theirs_reg(features), rtol=0, atol=1e-6)
    assert cls.num_per_level(features) == [h * w * num_anchors for h, w in sizes]
    per_level = cls.forward_levels(features)
    assert_close(torch.cat(per_level, 1), logits)
    assert_close(list(logits.split(cls.num_per_level(features), 1)), per_level)


def test_order_is_location_then_anchor_then_class():
    """Row (y * W + x) * A + a, column k: channel a * K + k of the predictor at (y, x)."""
    torch.manual_seed(0)
    head = ClassificationHead(4, num_anchors=3, num_classes=2, num_convs=0)
    x = torch.randn(1, 4, 2, 5)
    raw = head.predictor(x)  # [1, A * K, H, W]
    out = head([x])  # [1, H * W * A, K]
    y, col, a, k = 1, 3, 2, 1
    assert out[0, (y * 5 + col) * 3 + a, k] == raw[0, a * 2 + k, y, col]


def test_initialisation():
    torch.manual_seed(0)
    head = ClassificationHead(64, 9, 3)
    assert_close(head.predictor.bias, torch.full((27,), prior_bias(0.01)))
    assert abs(head.predictor.weight.std().item() - 0.01) < 1e-3
    for block in head.tower:
        assert block[0].bias.abs().max() == 0
        assert abs(block[0].weight.std().item() - 0.01) < 1e-3
    reg = RegressionHead(64, 9)
    assert reg.predictor.bias.abs().max() == 0
    # At the start every anchor scores about the prior.
    probs = head([torch.randn(1, 64, 4, 4)]).sigmoid()
    assert (probs - 0.01).abs().max() < 0.005


def test_group_norm_tower_and_mapping_input():
    tower = HeadTower(16, 32, num_convs=2, norm="group")
    assert isinstance(tower[0][1], torch.nn.GroupNorm) and tower[0][1].num_groups == 32
    assert tower[0][0].bias is None
    assert tower(torch.randn(2, 16, 5, 5)).shape == (2, 32, 5, 5)
    head = RegressionHead(32, 1, num_convs=2, norm="group")
    out = head(OrderedDict(p3=torch.randn(2, 32, 4, 4), p4=torch.randn(2, 32, 2, 2)))
    assert out.shape == (2, 20, 4)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: prior_bias(0.0), ValueError, r"prior must be a finite number in \(0, 1\)"),
        (lambda: prior_bias(1.0), ValueError, "prior must be"),
        (lambda: HeadTower(16, norm="batch"), ValueError, "norm must be None or 'group'"),
        (lambda: HeadTower(16, 48, norm="group"), ValueError, "multiple of 32"),
        (lambda: ClassificationHead(16, 9, 0), ValueError, "num_classes must be an int >= 1"),
        (lambda: RegressionHead(16, 0), ValueError, "num_anchors must be"),
        (
            lambda: ClassificationHead(16, 9, 3)(
                [torch.zeros(1, 16, 4, 4), torch.zeros(1, 8, 2, 2)]
            ),
            ValueError,
            r"features\[1\] must be \[B, 16, H, W\], got \[1, 8, 2, 2\]",
        ),
        (
            lambda: RegressionHead(16, 9)({"p3": torch.zeros(16, 4, 4)}),
            ValueError,
            r"features\['p3'\] must be \[B, 16, H, W\]",
        ),
        (lambda: RegressionHead(16, 9)([]), TypeError, "non-empty list"),
    ],
)
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
