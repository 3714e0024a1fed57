"""Feature Pyramid Network: one map per scale, each with the semantics of the deepest one.

Lin et al. (2017, "Feature Pyramid Networks for Object Detection", §3) build the pyramid in two
passes over the backbone's C3, C4, C5:

    lateral_l = conv1x1(C_l)                              (256 channels on every level)
    M_5 = lateral_5,   M_l = lateral_l + upsample_2x(M_{l+1})   (nearest neighbour, top down)
    P_l = conv3x3(M_l)                                    (smooths the upsampling's aliasing)

RetinaNet (Lin et al. 2017, §4) adds two coarser levels for large objects: ``P6 = conv3x3/2(C5)``
and ``P7 = conv3x3/2(ReLU(P6))``; FCOS takes P6 from P5 instead (``p6_input="p5"``). The
upsampling goes to the lateral's exact size (``interpolate(size=...)``), so odd sides work: a
25 × 25 C5 of an 800 × 800 image meets a 50 × 50 C4. Level ``l`` has side ``ceil(H / 2^l)``,
which :func:`fpn_level_sizes` computes without running the network (100, 50, 25, 13, 7 for 800).

The layers and their initialisation (``kaiming_uniform_(a=1)``, bias 0) are torchvision's
``FeaturePyramidNetwork`` with ``LastLevelP6P7``, so weights copy across; the tests check that
the outputs agree.

Shapes::

    features   {"c3": [B, C3, H / 8, W / 8], "c4": [B, C4, H / 16, ...], "c5": [B, C5, H / 32, ...]}
    FPN(...)   {"p3": [B, D, H / 8, W / 8], ..., "p7": [B, D, H / 128, W / 128]}   D = out_channels
    fpn_level_sizes((H, W))   [(ceil(H / 8), ceil(W / 8)), ..., (ceil(H / 128), ceil(W / 128))]

Chapter: book/10_retinanet (section "The feature pyramid").
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from coursepkg.ops.validation import check_image_size, check_int, check_tensor

__all__ = ["FPN", "fpn_level_sizes"]


def fpn_level_sizes(
    image_size: Sequence[int], strides: Sequence[int] = (8, 16, 32, 64, 128)
) -> list[tuple[int, int]]:
    """The ``(h, w)`` of every pyramid level: ``(ceil(H / s), ceil(W / s))``.

    Each stride-2, kernel-3, padding-1 convolution maps a side ``n`` to ``floor((n - 1) / 2) + 1
    = ceil(n / 2)``, and nested ceilings of halvings are one ceiling: ``ceil(ceil(n / 2) / 2) =
    ceil(n / 4)``. An 800 × 800 image gives 100, 50, 25, 13 and 7.

    Args:
        image_size: ``(H, W)`` of the (padded) input in pixels.
        strides: stride of each level.

    Returns:
        One ``(h, w)`` per stride.

    Raises:
        TypeError, ValueError: if ``image_size`` is not two positive integers or a stride is not
            a positive integer.

    Chapter: book/10_retinanet (section "The feature pyramid").
    """
    height, width = check_image_size(image_size)
    sizes = []
    for i, stride in enumerate(strides):
        stride = check_int(stride, f"strides[{i}]", low=1)
        sizes.append((math.ceil(height / stride), math.ceil(width / stride)))
    return sizes


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    """A convolution initialised as torchvision's FPN: ``kaiming_uniform_(a=1)``, bias 0."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    nn.init.constant_(conv.bias, 0)
    return conv


def _level_names(in_channels: Mapping[str, int] | Sequence[int]) -> tuple[list[str], list[int]]:
    """Input names ``c<k>`` and channels; a sequence is numbered from ``c3``."""
    if isinstance(in_channels, Mapping):
        names, channels = list(in_channels), list(in_channels.values())
    elif isinstance(in_channels, Sequence) and not isinstance(in_channels, str):
        names, channels = [f"c{3 + i}" for i in range(len(in_channels))], list(in_channels)
    else:
        raise TypeError(f"in_channels must be a mapping or a sequence, got {in_channels!r}")
    if not names:
        raise ValueError("in_channels must name at least one level, got none")
    levels = []
    for name in names:
        match = re.fullmatch(r"c(\d+)", str(name))
        if match is None:
            raise ValueError(f"in_channels keys must be 'c<level>' like 'c3', got {name!r}")
        levels.append(int(match.group(1)))
    if levels != list(range(levels[0], levels[0] + len(levels))):
        raise ValueError(f"in_channels must be consecutive levels, finest first, got {names}")
    channels = [
        check_int(c, f"in_channels[{n!r}]", low=1) for n, c in zip(names, channels, strict=True)
    ]
    return names, channels


class FPN(nn.Module):
    """Feature Pyramid Network with RetinaNet's / FCOS's extra levels P6 and P7.

    Args:
        in_channels: channels of each backbone level, finest first: ``{"c3": 512, "c4": 1024,
            "c5": 2048}``, or a sequence numbered from C3.
        out_channels: channels ``D`` of every pyramid level (256 in the papers).
        extra_blocks: ``"p6p7"`` to add P6 and P7 (RetinaNet, FCOS), or None.
        p6_input: what P6 convolves: ``"c5"`` (RetinaNet) or ``"p5"`` (FCOS).

    Shapes:
        ``{"c3": [B, C3, H3, W3], ..., "c5": [B, C5, H5, W5]}`` -> ``OrderedDict`` ``{"p3": [B, D,
        H3, W3], ..., "p5": [B, D, H5, W5], "p6": [B, D, ceil(H5 / 2), ceil(W5 / 2)], "p7": [B, D,
        ceil(H5 / 4), ceil(W5 / 4)]}``.

    Chapter: book/10_retinanet (section "The feature pyramid").
    """

    def __init__(
        self,
        in_channels: Mapping[str, int] | Sequence[int],
        out_channels: int = 256,
        extra_blocks: str | None = "p6p7",
        p6_input: str = "c5",
    ) -> None:
        super().__init__()
        self.in_names, channels = _level_names(in_channels)
        self.in_channels = dict(zip(self.in_names, channels, strict=True))
        self.out_channels = check_int(out_channels, "out_channels", low=1)
        if extra_blocks not in ("p6p7", None):
            raise ValueError(f"extra_blocks must be 'p6p7' or None, got {extra_blocks!r}")
        if p6_input not in ("c5", "p5"):
            raise ValueError(f"p6_input must be 'c5' or 'p5', got {p6_input!r}")
        self.p6_input = p6_input
        self.lateral = nn.ModuleList(_conv(c, self.out_channels, 1) for c in channels)
        self.output = nn.ModuleList(
            _conv(self.out_channels, self.out_channels, 3) for _ in channels
        )
        last = int(self.in_names[-1][1:])
        self.out_names = [f"p{int(name[1:])}" for name in self.in_names]
        if extra_blocks == "p6p7":
            p6_channels = channels[-1] if p6_input == "c5" else self.out_channels
            self.p6 = _conv(p6_channels, self.out_channels, 3, stride=2)
            self.p7 = _conv(self.out_channels, self.out_channels, 3, stride=2)
            self.out_names += [f"p{last + 1}", f"p{last + 2}"]
        else:
            self.p6 = self.p7 = None

    def _inputs(self, features: Mapping[str, Tensor] | Sequence[Tensor]) -> list[Tensor]:
        """The input maps in constructor order, checked for rank and channels."""
        if isinstance(features, Mapping):
            if list(features) != self.in_names:
                raise ValueError(f"features must have levels {self.in_names}, got {list(features)}")
            maps = list(features.values())
        elif isinstance(features, Sequence):
            if len(features) != len(self.in_names):
                raise ValueError(
                    f"features must have {len(self.in_names)} levels, got {len(features)}"
                )
            maps = list(features)
        else:
            raise TypeError(f"features must be a mapping or sequence of tensors, got {features!r}")
        for name, x in zip(self.in_names, maps, strict=True):
            check_tensor(x, f"features[{name!r}]", shape=("B", self.in_channels[name], "H", "W"))
        return maps

    def forward(
        self, features: Mapping[str, Tensor] | Sequence[Tensor]
    ) -> OrderedDict[str, Tensor]:
        """Build P3..P7 from C3..C5: laterals, top-down sum, 3 × 3 smoothing, extra levels."""
        maps = self._inputs(features)
        # Top down: M_l = lateral_l(C_l) + nearest-upsample(M_{l+1}) to lateral_l's exact size.
        merged = self.lateral[-1](maps[-1])  # [B, D, H5, W5]
        results = [self.output[-1](merged)]
        for i in range(len(maps) - 2, -1, -1):
            lateral = self.lateral[i](maps[i])  # [B, D, H_l, W_l]
            merged = lateral + F.interpolate(merged, size=lateral.shape[-2:], mode="nearest")
            results.insert(0, self.output[i](merged))  # P_l, [B, D, H_l, W_l]
        if self.p6 is not None:
            p6 = self.p6(
                maps[-1] if self.p6_input == "c5" else results[-1]
            )  # [B, D, ceil(H5/2), ..]
            p7 = self.p7(F.relu(p6))  # [B, D, ceil(H5 / 4), ceil(W5 / 4)]
            results += [p6, p7]
        return OrderedDict(zip(self.out_names, results, strict=True))
