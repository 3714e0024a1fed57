"""Anchor boxes of Faster R-CNN: a fixed set of reference boxes tiled over the feature map.

At every feature-map location ``(i, j)`` (row ``i``, column ``j``) the RPN predicts one objectness
score and one box per anchor. The anchors there share the centre

    c_x = (j + offset) * stride_w,    c_y = (i + offset) * stride_h

and take every (ratio, scale) pair: ``h = base_size * scale * sqrt(ratio)``,
``w = base_size * scale / sqrt(ratio)``, so ``w * h = (base_size * scale)^2`` and ``h / w = ratio``.
The paper's defaults (ratios 0.5, 1, 2; scales 8, 16, 32 on a 16-pixel base) give A = 9 anchors of
sizes 128, 256 and 512.

Two centre conventions are in use, and they change which anchors lie inside the image:

* ``offset=0.5`` (the course default, the lecture notes): centres in the middle of each stride
  cell, ``(8, 8), (24, 8), ...`` for stride 16. An 800×800 image (50×50 map) has 22,500 anchors,
  8,940 of them fully inside — the notes' number.
* ``offset=0`` (torchvision's ``AnchorGenerator``): centres on the cell corners ``(0, 0), (16, 0),
  ...``; 9,321 anchors fully inside. torchvision also rounds the zero-centred base anchors to
  integer corners; ``round_base_anchors=True`` reproduces that, and then ``generate_anchors``
  equals ``AnchorGenerator(sizes=((128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),))`` element
  for element (rounding does not change the 9,321).

Ordering (the same as torchvision's, and the order of the RPN head's flattened outputs): locations
row by row (``i`` outer, ``j`` inner), then ratios, then scales inside a location, i.e. anchor
``(i * W + j) * A + r * len(scales) + s``.

Shapes::

    generate_anchors((H, W), stride)   [H * W * A, 4]   xyxy, A = len(ratios) * len(scales)
    anchors_inside(anchors, (h, w))    [N] bool

Chapter: book/07_faster_rcnn (section "Anchors").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from coursepkg.ops.validation import check_boxes, check_image_size, check_int, check_number


def _pair(name: str, value: int | float | Sequence[int | float]) -> tuple[float, float]:
    """A positive number or a ``(height, width)`` pair of them, as a pair of floats."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2:
        raise ValueError(f"{name} must be a number or a pair (height, width), got {value!r}")
    return tuple(check_number(v, name, low=0.0, low_open=True) for v in values)  # type: ignore[return-value]


def _positive_values(name: str, values: Sequence[float]) -> tuple[float, ...]:
    if not isinstance(values, (tuple, list)) or not values:
        raise ValueError(f"{name} must be a non-empty sequence of positive numbers, got {values!r}")
    return tuple(
        check_number(v, f"{name}[{i}]", low=0.0, low_open=True) for i, v in enumerate(values)
    )


def generate_anchors(
    feature_size: Sequence[int],
    stride: int | float | Sequence[int | float],
    scales: Sequence[float] = (8, 16, 32),
    ratios: Sequence[float] = (0.5, 1, 2),
    base_size: float = 16,
    offset: float = 0.5,
    *,
    round_base_anchors: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """All anchors of one feature map, in image pixels (Faster R-CNN, §3.1.1).

    Height ``base_size * scale * sqrt(ratio)``, width ``base_size * scale / sqrt(ratio)``, centre
    ``((j + offset) * stride_w, (i + offset) * stride_h)``.

    Args:
        feature_size: ``(H, W)`` of the feature map (for example ``(50, 50)`` for 800×800 and stride 16).
        stride: pixels between neighbouring locations, one number or ``(stride_h, stride_w)``.
        scales: anchor sizes in units of ``base_size`` (8, 16, 32 → 128, 256, 512 pixels).
        ratios: height / width of the anchors.
        base_size: the size that ``scales`` multiply (16, the VGG-16 stride, in the paper).
        offset: where the centre sits inside a stride cell: 0.5 (middle, the notes) or 0
            (corner, torchvision).
        round_base_anchors: round the zero-centred anchor corners to integers before shifting them,
            as torchvision's ``AnchorGenerator`` does.
        dtype: floating dtype of the result.
        device: device of the result (the CPU if None).

    Returns:
        Anchors, [H * W * A, 4] xyxy in pixels, ordered location-major (row by row), then ratio,
        then scale.

    Raises:
        ValueError: if ``feature_size`` is not two non-negative integers, or a stride, scale,
            ratio or base size is not positive, or ``offset`` is not finite.
        TypeError: if ``dtype`` is not a floating dtype.

    Chapter: book/07_faster_rcnn (section "Anchors").
    """
    if not isinstance(feature_size, Sequence | torch.Size) or len(feature_size) != 2:
        raise ValueError(
            f"feature_size must be (H, W) with non-negative integers, got {feature_size!r}"
        )
    height, width = (check_int(s, "feature_size", low=0) for s in feature_size)
    stride_h, stride_w = _pair("stride", stride)
    scales = _positive_values("scales", scales)
    ratios = _positive_values("ratios", ratios)
    base_size = check_number(base_size, "base_size", low=0.0, low_open=True)
    offset = check_number(offset, "offset")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")

    # Zero-centred base anchors, one per (ratio, scale): [A, 4].
    scale_t = torch.tensor(scales, dtype=torch.float64) * base_size  # [S] sizes in pixels
    sqrt_r = torch.tensor(ratios, dtype=torch.float64).sqrt()  # [R]
    heights = (sqrt_r[:, None] * scale_t[None, :]).reshape(-1)  # [R * S], ratio-major
    widths = (scale_t[None, :] / sqrt_r[:, None]).reshape(-1)
    base = torch.stack((-widths, -heights, widths, heights), dim=1) / 2  # [A, 4]
    if round_base_anchors:
        base = base.round()

    # Centres of every location, row-major.
    c_y = (torch.arange(height, dtype=torch.float64) + offset) * stride_h  # [H]
    c_x = (torch.arange(width, dtype=torch.float64) + offset) * stride_w  # [W]
    grid_y, grid_x = torch.meshgrid(c_y, c_x, indexing="ij")  # [H, W] each
    # [H * W, 1, 4] as (c_x, c_y, c_x, c_y)
    shifts = torch.stack((grid_x, grid_y, grid_x, grid_y), dim=-1).reshape(-1, 1, 4)

    anchors = (shifts + base[None]).reshape(-1, 4)  # [H * W * A, 4]
    return anchors.to(dtype=dtype, device=device)


def anchors_inside(anchors: Tensor, image_size: Sequence[int]) -> Tensor:
    """Which anchors lie fully inside the image: ``x1 >= 0, y1 >= 0, x2 <= W, y2 <= H``.

    Faster R-CNN trains the RPN only on these (the notes' ``index_inside``); anchors crossing the
    border are ignored during training and clipped at test time. A box touching the border counts
    as inside (continuous coordinates: the image spans ``[0, W] x [0, H]``).

    Args:
        anchors: [N, 4] float xyxy in pixels.
        image_size: ``(height, width)`` of the image in pixels.

    Returns:
        [N] bool mask, True for anchors fully inside.

    Raises:
        TypeError: if ``anchors`` is not a floating tensor or ``image_size`` not two integers.
        ValueError: if ``anchors`` is not valid [N, 4] xyxy boxes or a side of ``image_size`` is
            not positive.

    Chapter: book/07_faster_rcnn (section "Anchors").
    """
    check_boxes(anchors, "anchors")
    height, width = check_image_size(image_size)
    return (
        (anchors[:, 0] >= 0)
        & (anchors[:, 1] >= 0)
        & (anchors[:, 2] <= width)
        & (anchors[:, 3] <= height)
    )
