"""Tests for coursepkg.models.fpn: equal to torchvision's FPN + LastLevelP6P7 with copied weights."""

from collections import OrderedDict

import pytest
import torch
from torch.testing import assert_close
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from coursepkg.models.backbones import MultiScaleBackbone
from coursepkg.models.fpn import FPN, fpn_level_sizes


def torchvision_copy(ours: FPN) -> FeaturePyramidNetwork:
    """torchvision's FPN with our weights. Its LastLevelP6P7 reads P5 when in == out channels."""
    in_channels = list(ours.in_channels.values())
    p6_in = in_channels[-1] if ours.p6_input == "c5" else ours.out_channels
    theirs = FeaturePyramidNetwork(
        in_channels, ours.out_channels, extra_blocks=LastLevelP6P7(p6_in, ours.out_channels)
    )
    assert theirs.extra_blocks.use_P5 == (ours.p6_input == "p5")
    state = {}
    for i in range(len(in_channels)):
        for theirs_name, module in (
            ("inner_blocks", ours.lateral[i]),
            ("layer_blocks", ours.output[i]),
        ):
            state[f"{theirs_name}.{i}.0.weight"] = module.weight
            state[f"{theirs_name}.{i}.0.bias"] = module.bias
    for level in ("p6", "p7"):
        state[f"extra_blocks.{level}.weight"] = getattr(ours, level).weight
        state[f"extra_blocks.{level}.bias"] = getattr(ours, level).bias
    theirs.load_state_dict(state)
    return theirs


@pytest.mark.parametrize("p6_input", ["c5", "p5"])
@pytest.mark.parametrize(
    "seed, image_size", [(0, (64, 64)), (1, (100, 130)), (2, (97, 33)), (3, (800, 56))]
)
def test_equals_torchvision(p6_input, seed, image_size):
    torch.manual_seed(seed)
    # With P6 on P5 torchvision needs in == out channels on C5 for use_P5; on C5 they must differ.
    in_channels = {"c3": 8, "c4": 12, "c5": 16}
    out_channels = 16 if p6_input == "p5" else 10
    if p6_input == "c5":
        in_channels["c5"] = 20
    ours = FPN(in_channels, out_channels, p6_input=p6_input)
    theirs = torchvision_copy(ours)
    height, width = image_size
    sizes = fpn_level_sizes(image_size, (8, 16, 32))
    features = OrderedDict(
        (name, torch.randn(2, c, *size))
        for (name, c), size in zip(in_channels.items(), sizes, strict=True)
    )
    out, expected = ours(features), theirs(features)
    assert list(out) == ["p3", "p4", "p5", "p6", "p7"]
    assert [tuple(p.shape[-2:]) for p in out.values()] == fpn_level_sizes(image_size)
    for ours_level, theirs_level in zip(out.values(), expected.values(), strict=True):
        assert_close(ours_level, theirs_level, rtol=0, atol=1e-5)


def test_initialisation_like_torchvision():
    torch.manual_seed(0)
    fpn = FPN([64, 64, 64], 64)
    for conv in [*fpn.lateral, *fpn.output, fpn.p6, fpn.p7]:
        assert conv.bias.abs().max() == 0
        # kaiming_uniform(a=1): bound sqrt(6 / ((1 + a^2) fan_in)) = sqrt(3 / fan_in)
        bound = (3 / (conv.weight[0].numel())) ** 0.5
        assert conv.weight.abs().max() <= bound
        assert conv.weight.abs().max() > 0.9 * bound


def test_level_sizes_800():
    assert fpn_level_sizes((800, 800)) == [(100, 100), (50, 50), (25, 25), (13, 13), (7, 7)]
    assert fpn_level_sizes((600, 1000)) == [(75, 125), (38, 63), (19, 32), (10, 16), (5, 8)]


def test_real_forward_800_gives_the_level_sizes():
    backbone = MultiScaleBackbone(channels=(8, 8, 8), stem_channels=4, convs_per_stage=1).eval()
    fpn = FPN(backbone.out_channels, 8)
    with torch.no_grad():
        pyramid = fpn(backbone(torch.rand(1, 3, 800, 800)))
    assert [p.shape[-1] for p in pyramid.values()] == [100, 50, 25, 13, 7]
    assert [tuple(p.shape[-2:]) for p in pyramid.values()] == fpn_level_sizes((800, 800))


def test_without_extra_blocks_and_sequence_inputs():
    fpn = FPN([4, 6], 8, extra_blocks=None)
    out = fpn([torch.randn(1, 4, 9, 9), torch.randn(1, 6, 5, 5)])
    assert list(out) == ["p3", "p4"]
    assert out["p3"].shape == (1, 8, 9, 9)


def test_top_down_reaches_the_finest_level():
    """P3 depends on C5 through the top-down path (nearest upsampling, then addition)."""
    torch.manual_seed(0)
    fpn = FPN([4, 4, 4], 8, extra_blocks=None)
    features = [
        torch.randn(1, 4, 8, 8),
        torch.randn(1, 4, 4, 4),
        torch.zeros(1, 4, 2, 2, requires_grad=True),
    ]
    fpn(features)["p3"].sum().backward()
    assert features[2].grad.abs().sum() > 0


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: FPN({"c3": 4, "x4": 8}), ValueError, "keys must be 'c<level>'"),
        (lambda: FPN({"c3": 4, "c5": 8}), ValueError, "consecutive levels"),
        (lambda: FPN([4, 0]), ValueError, r"in_channels\['c4'\] must be an int >= 1"),
        (lambda: FPN([4], extra_blocks="p6"), ValueError, "extra_blocks must be"),
        (lambda: FPN([4], p6_input="c4"), ValueError, "p6_input must be"),
        (lambda: FPN([4], out_channels=0), ValueError, "out_channels must be"),
        (
            lambda: FPN({"c3": 4, "c4": 8}, 8)(
                {"c3": torch.zeros(1, 4, 8, 8), "c4": torch.zeros(1, 6, 4, 4)}
            ),
            ValueError,
            r"features\['c4'\] must be \[B, 8, H, W\], got \[1, 6, 4, 4\]",
        ),
        (
            lambda: FPN({"c3": 4, "c4": 8}, 8)({"c4": torch.zeros(1, 8, 4, 4)}),
            ValueError,
            r"features must have levels \['c3', 'c4'\]",
        ),
        (lambda: FPN([4, 8], 8)([torch.zeros(1, 4, 8, 8)]), ValueError, "must have 2 levels"),
        (lambda: fpn_level_sizes((0, 10)), ValueError, "image_size must be positive"),
        (lambda: fpn_level_sizes((10, 10), (8, 0)), ValueError, r"strides\[1\] must be"),
    ],
)
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
