"""The course's small convolutional backbones, trained from scratch in minutes on a CPU.

* :func:`conv_body` — R-CNN's and Fast R-CNN's feature CNN (the stand-in for AlexNet / VGG-16's
  convolutional layers), output stride 8;
* :class:`ConvBackbone` — Faster R-CNN's VGG-like stack of conv-BN-ReLU stages, with the
  ``out_channels`` and ``stride`` attributes a detection backbone describes itself with;
* :class:`MultiScaleBackbone` and :func:`resnet50_backbone` — backbones of the dense detectors
  (YOLO, RetinaNet, FCOS), which return several feature maps.

The dense-detector contract: ``forward(images)`` returns an ``OrderedDict`` ``{"c3": ..., "c4":
..., "c5": ...}``, finest first, and the module has ``strides: dict[str, int]`` (``{"c3": 8,
"c4": 16, "c5": 32}``) and ``out_channels: dict[str, int]``. Every stride-2 convolution with
kernel 3 and padding 1 (or kernel 1, padding 0) maps a side ``n`` to ``ceil(n / 2)``, so level
``c_k`` has side ``ceil(H / 2^k)``; :func:`check_feature_maps` holds a backbone to that.

Shapes::

    conv_body(width)                [B, 3, H, W] -> [B, 4 * width, H / 8, W / 8]
    ConvBackbone(channels)          [B, 3, H, W] -> [B, channels[-1], ceil(H / 2^S), ceil(W / 2^S)]
    MultiScaleBackbone(channels)    [B, 3, H, W] -> {"c3": [B, channels[0], ceil(H / 8), ceil(W / 8)],
                                                     "c4": [B, channels[1], ceil(H / 16), ...],
                                                     "c5": [B, channels[2], ceil(H / 32), ...]}
    resnet50_backbone()             [B, 3, H, W] -> {"c3": [B, 512, H / 8, ...], "c4": [B, 1024, ...],
                                                     "c5": [B, 2048, H / 32, ...]}

Chapter: book/05_rcnn, book/06_fast_rcnn, book/07_faster_rcnn; book/10_retinanet (multi-scale).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from coursepkg.ops.validation import check_image_size, check_int, check_tensor

__all__ = [
    "PIXEL_MEAN",
    "conv_body",
    "ConvBackbone",
    "MultiScaleBackbone",
    "resnet50_backbone",
    "check_feature_maps",
]

#: Mean pixel value subtracted by the feature CNN; out-of-image context is filled with it, so the
#: padding is zero after the subtraction, as in the paper (Appendix A fills with the image mean).
PIXEL_MEAN = 0.5


def conv_body(width: int = 16) -> nn.Sequential:
    """Three conv-BN-ReLU-maxpool blocks: ``[B, 3, H, W] -> [B, 4 * width, H / 8, W / 8]``.

    The course's stand-in for AlexNet's (R-CNN) and VGG16's (Fast R-CNN) convolutional layers:
    small enough to train from scratch on a CPU, with an output stride of 8. Batch normalisation
    (which neither network had; AlexNet used local response normalisation) is what makes training
    from scratch in a few hundred steps work. R-CNN runs the body on every warped region, Fast
    R-CNN once on the whole image; the chapters compare the two with the same body, so the
    speed-up they measure is the idea's, not the architecture's.

    Chapter: book/05_rcnn (section "The feature CNN"); book/06_fast_rcnn.
    """
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    layers: list[nn.Module] = []
    channels = 3
    for out_channels in (width, 2 * width, 4 * width):
        layers += [
            nn.Conv2d(channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ]
        channels = out_channels
    return nn.Sequential(*layers)


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ConvBackbone(nn.Sequential):
    """A plain stack of conv-BN-ReLU stages; each stage halves the resolution.

    Stage ``s`` is one stride-2 3 × 3 convolution to ``channels[s]`` followed by
    ``convs_per_stage - 1`` stride-1 ones: a VGG-like design, with batch norm so that it trains
    from scratch. ``out_channels`` and ``stride`` describe the output, as torchvision's detection
    models expect of a backbone.

    Shapes:
        ``[B, 3, H, W]`` -> ``[B, channels[-1], ceil(H / 2^S), ceil(W / 2^S)]`` for ``S`` stages.

    Chapter: book/07_faster_rcnn (section "The second stage and end-to-end training").
    """

    def __init__(self, channels: Sequence[int] = (24, 48, 64), convs_per_stage: int = 2) -> None:
        layers: list[nn.Module] = []
        previous = 3
        for width in channels:
            layers.append(_conv_bn_relu(previous, width, stride=2))
            layers += [_conv_bn_relu(width, width, stride=1) for _ in range(convs_per_stage - 1)]
            previous = width
        super().__init__(*layers)
        self.out_channels = previous
        self.stride = 2 ** len(channels)


def check_feature_maps(
    features: Mapping[str, Tensor],
    image_size: Sequence[int],
    strides: Mapping[str, int],
    out_channels: Mapping[str, int] | None = None,
) -> None:
    """Raise unless every feature map has the size its stride gives: ``ceil(H / s), ceil(W / s)``.

    Anchors and points are laid out from the strides (``location_grid``); a map of another size
    would pair predictions with the wrong locations without any error downstream. This check
    names the level instead.

    Args:
        features: ``{name: [B, C, H_l, W_l]}`` feature maps.
        image_size: ``(H, W)`` of the (padded) image batch the maps were computed from.
        strides: ``{name: stride}``, one entry per feature map.
        out_channels: ``{name: C}`` to check the channels too, or None.

    Raises:
        TypeError: if ``features`` is not a mapping of tensors.
        ValueError: if a level has no stride, is not 4-D, or has the wrong size or channel
            count, for example ``"feature map 'c4' must be 16 x 16 for stride 16 and image
            256 x 256, got 15 x 16"``.

    Chapter: book/10_retinanet (section "The feature pyramid").
    """
    if not isinstance(features, Mapping):
        raise TypeError(f"features must be a mapping name -> Tensor, got {type(features).__name__}")
    height, width = check_image_size(image_size)
    for name, feature in features.items():
        check_tensor(feature, f"features[{name!r}]", shape=("B", "C", "H", "W"))
        if name not in strides:
            raise ValueError(f"feature map {name!r} has no stride, strides has {sorted(strides)}")
        stride = check_int(strides[name], f"strides[{name!r}]", low=1)
        want = (math.ceil(height / stride), math.ceil(width / stride))
        got = tuple(feature.shape[-2:])
        if got != want:
            raise ValueError(
                f"feature map {name!r} must be {want[0]} x {want[1]} for stride {stride} and "
                f"image {height} x {width}, got {got[0]} x {got[1]}"
            )
        if out_channels is not None and feature.shape[1] != out_channels[name]:
            raise ValueError(
                f"feature map {name!r} must have {out_channels[name]} channels, "
                f"got {feature.shape[1]}"
            )


class MultiScaleBackbone(nn.Module):
    """A small conv-BN-ReLU backbone returning C3, C4, C5 at strides 8, 16, 32.

    A stem of two stride-2 convolutions (stride 4), then one stage per output level: a stride-2
    3 × 3 convolution followed by ``convs_per_stage - 1`` stride-1 ones. Small enough to train
    from scratch on a CPU in minutes on 128 × 128 images, and it keeps the contract of
    ResNet-50's C3 to C5, so the dense detectors run unchanged on either.

    Args:
        channels: output channels of C3, C4, C5.
        stem_channels: channels of the stride-4 stem.
        convs_per_stage: 3 × 3 convolutions per stage (the first has stride 2).

    Shapes:
        ``[B, 3, H, W]`` -> ``{"c3": [B, channels[0], ceil(H / 8), ceil(W / 8)], "c4": [...,
        ceil(H / 16), ...], "c5": [..., ceil(H / 32), ...]}``.

    Chapter: book/10_retinanet (section "The feature pyramid").
    """

    def __init__(
        self,
        channels: Sequence[int] = (32, 64, 128),
        stem_channels: int = 16,
        convs_per_stage: int = 2,
    ) -> None:
        super().__init__()
        if not isinstance(channels, Sequence) or len(channels) != 3:
            raise ValueError(f"channels must be 3 channel counts (C3, C4, C5), got {channels!r}")
        channels = [check_int(c, "channels", low=1) for c in channels]
        stem_channels = check_int(stem_channels, "stem_channels", low=1)
        convs_per_stage = check_int(convs_per_stage, "convs_per_stage", low=1)
        self.stem = nn.Sequential(
            _conv_bn_relu(3, stem_channels, stride=2), _conv_bn_relu(stem_channels, stem_channels, stride=2)
        )
        self.stages = nn.ModuleDict()
        previous = stem_channels
        for level, width in zip((3, 4, 5), channels, strict=True):
            layers = [_conv_bn_relu(previous, width, stride=2)]
            layers += [_conv_bn_relu(width, width, stride=1) for _ in range(convs_per_stage - 1)]
            self.stages[f"c{level}"] = nn.Sequential(*layers)
            previous = width
        self.strides = {"c3": 8, "c4": 16, "c5": 32}
        self.out_channels = dict(zip(("c3", "c4", "c5"), channels, strict=True))

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        """``[B, 3, H, W]`` -> ``OrderedDict(c3=..., c4=..., c5=...)``, finest first."""
        check_tensor(images, "images", shape=("B", 3, "H", "W"), dtype="float")
        x = self.stem(images)  # [B, stem, H / 4, W / 4]
        features = OrderedDict()
        for name, stage in self.stages.items():
            x = stage(x)  # [B, C_l, H / s_l, W / s_l]
            features[name] = x
        return features


class _ResNetC3C5(nn.Module):
    """A torchvision ResNet's stem and layer1..4, returning layer2..4 as C3..C5."""

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer1, self.layer2 = resnet.layer1, resnet.layer2
        self.layer3, self.layer4 = resnet.layer3, resnet.layer4
        self.strides = {"c3": 8, "c4": 16, "c5": 32}
        self.out_channels = {"c3": 512, "c4": 1024, "c5": 2048}

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        """``[B, 3, H, W]`` -> ``OrderedDict(c3=..., c4=..., c5=...)``, finest first."""
        check_tensor(images, "images", shape=("B", 3, "H", "W"), dtype="float")
        c2 = self.layer1(self.stem(images))  # [B, 256, H / 4, W / 4]
        c3 = self.layer2(c2)  # [B, 512, H / 8, W / 8]
        c4 = self.layer3(c3)  # [B, 1024, H / 16, W / 16]
        c5 = self.layer4(c4)  # [B, 2048, H / 32, W / 32]
        return OrderedDict(c3=c3, c4=c4, c5=c5)


def resnet50_backbone(pretrained: bool = False) -> nn.Module:
    """torchvision's ResNet-50 as a dense-detector backbone: C3, C4, C5 = layer2, layer3, layer4.

    RetinaNet's and FCOS's backbone (He et al. 2016; Lin et al. 2017, §4). With
    ``pretrained=True`` it loads torchvision's ImageNet weights (a download on first use) and,
    as torchvision's detectors do, freezes the batch-norm statistics (``FrozenBatchNorm2d``);
    otherwise it starts from random weights with ordinary batch norm. The fully connected
    classifier is dropped.

    Args:
        pretrained: load the ImageNet weights (``ResNet50_Weights.IMAGENET1K_V1``).

    Returns:
        A module with the dense-detector contract: ``forward(images)`` -> ``OrderedDict`` c3, c4,
        c5; ``strides = {"c3": 8, "c4": 16, "c5": 32}``; ``out_channels = {"c3": 512, "c4":
        1024, "c5": 2048}``.

    Raises:
        ImportError: if torchvision is not installed.
        TypeError: if ``pretrained`` is not a bool.

    Chapter: book/10_retinanet (section "The feature pyramid").
    """
    if not isinstance(pretrained, bool):
        raise TypeError(f"pretrained must be a bool, got {pretrained!r}")
    try:
        from torchvision.models import ResNet50_Weights, resnet50
        from torchvision.ops.misc import FrozenBatchNorm2d
    except ImportError as error:  # torchvision is needed by the book and tests, not the package
        raise ImportError(
            "resnet50_backbone needs torchvision: pip install torchvision"
        ) from error
    if pretrained:
        resnet = resnet50(weights=ResNet50_Weights.IMAGENET1K_V1, norm_layer=FrozenBatchNorm2d)
    else:
        resnet = resnet50(weights=None)
    return _ResNetC3C5(resnet)
