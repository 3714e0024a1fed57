"""Tests for the dense-detector backbones: the C3-C5 contract and check_feature_maps."""

from collections import OrderedDict

import pytest
import torch

from coursepkg.models.backbones import (
    ConvBackbone,
    MultiScaleBackbone,
    check_feature_maps,
    conv_body,
    resnet50_backbone,
)


@pytest.mark.parametrize("image_size", [(128, 128), (100, 130), (33, 65)])
def test_multiscale_backbone_contract(image_size):
    torch.manual_seed(0)
    backbone = MultiScaleBackbone().eval()
    features = backbone(torch.rand(2, 3, *image_size))
    assert isinstance(features, OrderedDict) and list(features) == ["c3", "c4", "c5"]
    assert backbone.strides == {"c3": 8, "c4": 16, "c5": 32}
    assert backbone.out_channels == {"c3": 32, "c4": 64, "c5": 128}
    height, width = image_size
    for name, stride in backbone.strides.items():
        assert features[name].shape == (
            2,
            backbone.out_channels[name],
            -(-height // stride),
            -(-width // stride),
        )
    check_feature_maps(features, image_size, backbone.strides, backbone.out_channels)


def test_multiscale_backbone_is_small_and_learns():
    backbone = MultiScaleBackbone(channels=(8, 16, 24), stem_channels=8)
    assert backbone.out_channels["c5"] == 24
    assert sum(p.numel() for p in backbone.parameters()) < 20_000
    out = backbone(torch.rand(1, 3, 64, 64))
    out["c5"].sum().backward()
    assert backbone.stem[0][0].weight.grad.abs().sum() > 0


def test_resnet50_backbone_contract():
    backbone = resnet50_backbone(pretrained=False).eval()
    assert backbone.out_channels == {"c3": 512, "c4": 1024, "c5": 2048}
    with torch.no_grad():
        features = backbone(torch.rand(1, 3, 100, 130))
    assert [tuple(f.shape[-2:]) for f in features.values()] == [(13, 17), (7, 9), (4, 5)]
    check_feature_maps(features, (100, 130), backbone.strides, backbone.out_channels)
    assert not any(isinstance(m, torch.nn.Linear) for m in backbone.modules())


def test_existing_backbones_still_work():
    assert conv_body(4)(torch.rand(1, 3, 32, 32)).shape == (1, 16, 4, 4)
    body = ConvBackbone()
    assert body(torch.rand(1, 3, 33, 33)).shape == (1, 64, 5, 5)
    assert (body.out_channels, body.stride) == (64, 8)


def test_check_feature_maps_names_the_level():
    features = OrderedDict(c3=torch.zeros(1, 4, 16, 16), c4=torch.zeros(1, 4, 7, 8))
    strides = {"c3": 8, "c4": 16}
    with pytest.raises(
        ValueError, match=r"feature map 'c4' must be 8 x 8 for stride 16 .* got 7 x 8"
    ):
        check_feature_maps(features, (128, 128), strides)
    features["c4"] = torch.zeros(1, 4, 8, 8)
    check_feature_maps(features, (128, 128), strides)
    with pytest.raises(ValueError, match="feature map 'c3' must have 8 channels, got 4"):
        check_feature_maps(features, (128, 128), strides, {"c3": 8, "c4": 4})
    with pytest.raises(ValueError, match="'c4' has no stride"):
        check_feature_maps(features, (128, 128), {"c3": 8})
    with pytest.raises(ValueError, match=r"features\['c3'\] must be \[B, C, H, W\]"):
        check_feature_maps({"c3": torch.zeros(4, 16, 16)}, (128, 128), strides)
    with pytest.raises(TypeError, match="features must be a mapping"):
        check_feature_maps([torch.zeros(1, 4, 16, 16)], (128, 128), strides)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: MultiScaleBackbone(channels=(8, 16)), ValueError, "channels must be 3"),
        (lambda: MultiScaleBackbone(stem_channels=0), ValueError, "stem_channels must be"),
        (
            lambda: MultiScaleBackbone()(torch.rand(1, 1, 32, 32)),
            ValueError,
            r"images must be \[B, 3",
        ),
        (lambda: resnet50_backbone(pretrained="yes"), TypeError, "pretrained must be a bool"),
    ],
)
def test_backbone_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
