"""The course's small convolutional backbones, trained from scratch in minutes on a CPU.

* :func:`conv_body` — R-CNN's and Fast R-CNN's feature CNN (the stand-in for AlexNet / VGG-16's
  convolutional layers), output stride 8;
* :class:`ConvBackbone` — Faster R-CNN's VGG-like stack of conv-BN-ReLU stages, with the
  ``out_channels`` and ``stride`` attributes a detection backbone describes itself with.

Shapes::

    conv_body(width)          [B, 3, H, W] -> [B, 4 * width, H / 8, W / 8]
    ConvBackbone(channels)    [B, 3, H, W] -> [B, channels[-1], ceil(H / 2^S), ceil(W / 2^S)]

Chapter: book/05_rcnn, book/06_fast_rcnn, book/07_faster_rcnn.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["PIXEL_MEAN", "conv_body", "ConvBackbone"]

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

    Chapter: book/07_faster_rcnn (section "A backbone trained from scratch").
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
