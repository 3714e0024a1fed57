"""The heads shared by the dense detectors: a convolution tower, then one 3 × 3 predictor.

RetinaNet (Lin et al. 2017, §4, Fig. 3) runs two small fully convolutional subnets on every
pyramid level, with weights shared across levels: four 3 × 3 convolutions with ReLU (the tower),
then a 3 × 3 convolution to ``A * K`` class logits (classification) or ``A * 4`` box deltas
(regression). FCOS keeps the design and adds group normalisation to the tower (``norm="group"``);
YOLO-style heads use a single level.

Initialisation (RetinaNet §4.1, "Initialization"): every convolution ``N(0, 0.01)``, bias 0,
except the classification predictor's bias ``b = -log((1 - π) / π)`` with prior ``π = 0.01``
(:func:`prior_bias`, ≈ -4.595): at the start every anchor scores about 0.01 as foreground, so
the ~100,000 easy negatives do not swamp the first steps of the focal loss.

Outputs are flattened in torchvision's order: for each level (finest first) the ``[B, A * D, H,
W]`` map is viewed as ``[B, A, D, H, W]``, permuted to ``[B, H, W, A, D]`` and reshaped to ``[B,
H * W * A, D]``; the levels are concatenated. Row ``(y * W + x) * A + a`` of a level is anchor
``a`` at location ``(x, y)``, the order of ``multilevel_anchors``. The layers are torchvision's
``RetinaNetClassificationHead`` / ``RetinaNetRegressionHead``, so weights copy across (tested).

Shapes::

    features                    L x [B, C, H_l, W_l]
    HeadTower(C, D)             [B, C, H, W] -> [B, D, H, W]
    ClassificationHead(...)     -> [B, sum_l H_l * W_l * A, K]   logits
    RegressionHead(...)         -> [B, sum_l H_l * W_l * A, 4]   deltas (or distances)
    head.forward_levels(...)    -> L x [B, H_l * W_l * A, D]
    head.num_per_level(...)     -> L x int, H_l * W_l * A

Chapter: book/10_retinanet (section "The heads and the prior").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from coursepkg.ops.validation import check_int, check_number, check_tensor

__all__ = ["prior_bias", "HeadTower", "DenseHead", "ClassificationHead", "RegressionHead"]


def prior_bias(prior: float = 0.01) -> float:
    """The classification bias that makes every anchor start at foreground probability ``prior``.

    ``sigmoid(b) = π`` gives ``b = -log((1 - π) / π)`` (RetinaNet §4.1): -4.595 for π = 0.01.

    Args:
        prior: the initial foreground probability π, in (0, 1).

    Returns:
        The bias ``b`` as a float.

    Raises:
        TypeError, ValueError: if ``prior`` is not a number in (0, 1).

    Chapter: book/10_retinanet (section "The heads and the prior").
    """
    prior = check_number(prior, "prior", low=0.0, high=1.0, low_open=True, high_open=True)
    return -math.log((1 - prior) / prior)


def _normal_init(conv: nn.Conv2d, bias: float = 0.0) -> nn.Conv2d:
    """RetinaNet's initialisation: weights ``N(0, 0.01)``, constant bias."""
    nn.init.normal_(conv.weight, std=0.01)
    if conv.bias is not None:
        nn.init.constant_(conv.bias, bias)
    return conv


def _flatten_level(out: Tensor, num_anchors: int, out_dim: int) -> Tensor:
    """One level's predictor map ``[B, A * D, H, W]`` as rows ``[B, H * W * A, D]`` (torchvision's order)."""
    batch, _, height, width = out.shape
    out = out.view(batch, num_anchors, out_dim, height, width)
    out = out.permute(0, 3, 4, 1, 2)  # [B, H, W, A, D]
    return out.reshape(batch, height * width * num_anchors, out_dim)


class HeadTower(nn.Sequential):
    """``num_convs`` times (3 × 3 conv, optional GroupNorm(32), ReLU), shared across levels.

    Args:
        in_channels: channels of the input feature maps.
        channels: channels of every convolution of the tower (256 in the papers).
        num_convs: number of convolutions (4 in RetinaNet and FCOS).
        norm: None (RetinaNet) or ``"group"`` (FCOS: GroupNorm with 32 groups; the convolutions
            then have no bias, as the norm's shift replaces it).

    Shapes:
        ``[B, in_channels, H, W]`` -> ``[B, channels, H, W]``.

    Chapter: book/10_retinanet (section "The heads and the prior").
    """

    def __init__(
        self, in_channels: int, channels: int = 256, num_convs: int = 4, norm: str | None = None
    ) -> None:
        in_channels = check_int(in_channels, "in_channels", low=1)
        channels = check_int(channels, "channels", low=1)
        num_convs = check_int(num_convs, "num_convs", low=0)
        if norm not in (None, "group"):
            raise ValueError(f"norm must be None or 'group', got {norm!r}")
        if norm == "group" and channels % 32 != 0:
            raise ValueError(f"channels must be a multiple of 32 for norm='group', got {channels}")
        layers: list[nn.Module] = []
        previous = in_channels
        for _ in range(num_convs):
            conv = nn.Conv2d(previous, channels, 3, padding=1, bias=norm is None)
            block = [_normal_init(conv)]
            if norm == "group":
                block.append(nn.GroupNorm(32, channels))
            block.append(nn.ReLU(inplace=True))
            layers.append(nn.Sequential(*block))
            previous = channels
        super().__init__(*layers)
        self.in_channels = in_channels
        self.out_channels = previous


class DenseHead(nn.Module):
    """A tower and a 3 × 3 predictor of ``num_anchors * out_dim`` channels, run on every level.

    The base of :class:`ClassificationHead` and :class:`RegressionHead`; a detector that needs
    another output (FCOS's centerness, YOLO's objectness) builds one with its own ``out_dim``.

    Args:
        in_channels: channels ``C`` of every feature level (the tower keeps them).
        num_anchors: anchors per location ``A`` (1 for point-based detectors).
        out_dim: outputs per anchor ``D`` (``K`` classes, 4 box values, 1 centerness ...).
        num_convs: convolutions of the tower.
        norm: None or ``"group"`` (see :class:`HeadTower`).
        bias: initial bias of the predictor.

    Shapes:
        ``L x [B, C, H_l, W_l]`` (a list, or a mapping in level order) -> ``[B, sum_l H_l * W_l *
        A, D]``.

    Chapter: book/10_retinanet (section "The heads and the prior").
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        out_dim: int,
        num_convs: int = 4,
        norm: str | None = None,
        bias: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_anchors = check_int(num_anchors, "num_anchors", low=1)
        self.out_dim = check_int(out_dim, "out_dim", low=1)
        self.tower = HeadTower(in_channels, in_channels, num_convs, norm)
        self.predictor = _normal_init(
            nn.Conv2d(in_channels, self.num_anchors * self.out_dim, 3, padding=1), bias
        )

    def _levels(self, features: Sequence[Tensor] | Mapping[str, Tensor]) -> list[Tensor]:
        names = list(features) if isinstance(features, Mapping) else None
        maps = list(features.values()) if isinstance(features, Mapping) else features
        if not isinstance(maps, Sequence) or not maps:
            raise TypeError(
                f"features must be a non-empty list or mapping of tensors, got {features!r}"
            )
        for i, x in enumerate(maps):
            label = f"features[{names[i]!r}]" if names else f"features[{i}]"
            check_tensor(x, label, shape=("B", self.tower.in_channels, "H", "W"), dtype="float")
        return list(maps)

    def forward_levels(self, features: Sequence[Tensor] | Mapping[str, Tensor]) -> list[Tensor]:
        """The outputs of each level, flattened: ``L x [B, H_l * W_l * A, D]``."""
        outputs = []
        for x in self._levels(features):
            out = self.predictor(self.tower(x))  # [B, A * D, H, W]
            outputs.append(_flatten_level(out, self.num_anchors, self.out_dim))
        return outputs

    def forward(self, features: Sequence[Tensor] | Mapping[str, Tensor]) -> Tensor:
        """All levels concatenated, finest first: ``[B, sum_l H_l * W_l * A, D]``."""
        return torch.cat(self.forward_levels(features), dim=1)

    def num_per_level(self, features: Sequence[Tensor] | Mapping[str, Tensor]) -> list[int]:
        """Rows of each level in :meth:`forward`'s output: ``H_l * W_l * A``, to split it back."""
        return [x.shape[-2] * x.shape[-1] * self.num_anchors for x in self._levels(features)]


class ClassificationHead(DenseHead):
    """RetinaNet's classification subnet: ``A * K`` sigmoid logits per location.

    Args:
        in_channels: channels of every feature level.
        num_anchors: anchors per location ``A`` (9 in RetinaNet, 1 in FCOS).
        num_classes: ``K`` foreground classes (no background column: sigmoid outputs).
        prior: initial foreground probability π; the predictor's bias is :func:`prior_bias`.
        num_convs: convolutions of the tower.
        norm: None or ``"group"``.

    Shapes:
        ``L x [B, C, H_l, W_l]`` -> ``[B, sum_l H_l * W_l * A, K]`` logits.

    Chapter: book/10_retinanet (section "The heads and the prior").
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        prior: float = 0.01,
        num_convs: int = 4,
        norm: str | None = None,
    ) -> None:
        num_classes = check_int(num_classes, "num_classes", low=1)
        super().__init__(in_channels, num_anchors, num_classes, num_convs, norm, prior_bias(prior))
        self.num_classes = num_classes


class RegressionHead(DenseHead):
    """RetinaNet's box subnet: ``A * box_dim`` values per location, class-agnostic.

    Args:
        in_channels: channels of every feature level.
        num_anchors: anchors per location ``A``.
        num_convs: convolutions of the tower.
        norm: None or ``"group"``.
        box_dim: values per box (4: deltas ``(d_x, d_y, d_w, d_h)`` or distances ``(l, t, r, b)``).

    Shapes:
        ``L x [B, C, H_l, W_l]`` -> ``[B, sum_l H_l * W_l * A, box_dim]``.

    Chapter: book/10_retinanet (section "The heads and the prior").
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_convs: int = 4,
        norm: str | None = None,
        box_dim: int = 4,
    ) -> None:
        super().__init__(
            in_channels, num_anchors, check_int(box_dim, "box_dim", low=1), num_convs, norm
        )
