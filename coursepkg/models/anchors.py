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

Dense detectors (YOLO, RetinaNet, FCOS) reuse the same grid of centres on every level of a feature
pyramid. :func:`location_grid` is the one source of those centres: :func:`generate_anchors` tiles
its base anchors around them, :func:`multilevel_anchors` does so on every pyramid level
(RetinaNet: sizes 32 to 512 on P3 to P7, three ratios times three scales, A = 9), and
:func:`multilevel_points` returns the bare points (FCOS, YOLO). FCOS maps location ``(x, y)`` of a
stride-``s`` map to ``(floor(s / 2) + x s, floor(s / 2) + y s)``; for even strides that is exactly
``offset=0.5``: location ``(23, 30)`` of stride 8 sits at ``(188, 244)``.

Shapes::

    location_grid((H, W), stride)                   [H * W, 2]       (x, y), row by row
    generate_anchors((H, W), stride)                [H * W * A, 4]   xyxy, A = len(ratios) * len(scales)
    multilevel_anchors(feature_sizes, strides)      L x [H_l * W_l * A, 4]
    multilevel_points(feature_sizes, strides)       L x [H_l * W_l, 2]
    anchors_inside(anchors, (h, w))                 [N] bool

Chapter: book/07_faster_rcnn (section "Anchors"); book/10_retinanet (anchors on every level);
book/08_yolo (points).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from coursepkg.ops.validation import check_boxes, check_image_size, check_int, check_number

__all__ = [
    "location_grid",
    "generate_anchors",
    "multilevel_anchors",
    "multilevel_points",
    "anchors_inside",
]


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



def _feature_size(feature_size: Sequence[int], name: str = "feature_size") -> tuple[int, int]:
    """``(H, W)`` of a feature map: two non-negative integers."""
    if not isinstance(feature_size, Sequence | torch.Size) or len(feature_size) != 2:
        raise ValueError(f"{name} must be (H, W) with non-negative integers, got {feature_size!r}")
    height, width = (check_int(s, name, low=0) for s in feature_size)
    return height, width


def _check_dtype(dtype: torch.dtype) -> None:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")


def _grid(
    height: int, width: int, stride_h: float, stride_w: float, offset: float, dtype: torch.dtype
) -> Tensor:
    """``[H * W, 2]`` centres ``((j + offset) * stride_w, (i + offset) * stride_h)``, row-major."""
    c_y = (torch.arange(height, dtype=dtype) + offset) * stride_h  # [H]
    c_x = (torch.arange(width, dtype=dtype) + offset) * stride_w  # [W]
    grid_y, grid_x = torch.meshgrid(c_y, c_x, indexing="ij")  # [H, W] each
    return torch.stack((grid_x, grid_y), dim=-1).reshape(-1, 2)  # [H * W, 2]


def location_grid(
    feature_size: Sequence[int],
    stride: int | float | Sequence[int | float],
    offset: float = 0.5,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """The image-pixel centre of every location of a feature map: the one grid of the course.

    Location ``(i, j)`` (row ``i``, column ``j``) of a map of stride ``s`` sits at
    ``((j + offset) * s_w, (i + offset) * s_h)``. With ``offset=0.5`` (the default) this is the
    middle of the stride cell, which is FCOS's ``(floor(s / 2) + j s, floor(s / 2) + i s)`` for
    even strides (location ``(23, 30)`` at stride 8: ``(188, 244)``); ``offset=0`` is
    torchvision's corner convention. Anchors (:func:`generate_anchors`) and points
    (:func:`multilevel_points`) both come from here.

    Args:
        feature_size: ``(H, W)`` of the feature map.
        stride: pixels between neighbouring locations, one number or ``(stride_h, stride_w)``.
        offset: where the centre sits inside a stride cell, in units of the stride.
        device: device of the result (the CPU if None).
        dtype: floating dtype of the result (float32 if None). The grid is computed in float64
            and rounded once.

    Returns:
        Centres, [H * W, 2] as ``(x, y)`` in pixels, row by row (``i`` outer, ``j`` inner).

    Raises:
        ValueError: if ``feature_size`` is not two non-negative integers, a stride is not
            positive, or ``offset`` is not finite.
        TypeError: if ``dtype`` is not a floating dtype.

    Chapter: book/10_retinanet (section "Anchors on every level"); book/08_yolo (the grid).
    """
    height, width = _feature_size(feature_size)
    stride_h, stride_w = _pair("stride", stride)
    offset = check_number(offset, "offset")
    dtype = torch.float32 if dtype is None else dtype
    _check_dtype(dtype)
    return _grid(height, width, stride_h, stride_w, offset, torch.float64).to(
        dtype=dtype, device=device
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

    Implements equation ``anchor-shape`` of book/07_faster_rcnn.
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
    height, width = _feature_size(feature_size)
    stride_h, stride_w = _pair("stride", stride)
    scales = _positive_values("scales", scales)
    ratios = _positive_values("ratios", ratios)
    base_size = check_number(base_size, "base_size", low=0.0, low_open=True)
    offset = check_number(offset, "offset")
    _check_dtype(dtype)

    # Zero-centred base anchors, one per (ratio, scale): [A, 4].
    scale_t = torch.tensor(scales, dtype=torch.float64) * base_size  # [S] sizes in pixels
    sqrt_r = torch.tensor(ratios, dtype=torch.float64).sqrt()  # [R]
    heights = (sqrt_r[:, None] * scale_t[None, :]).reshape(-1)  # [R * S], ratio-major
    widths = (scale_t[None, :] / sqrt_r[:, None]).reshape(-1)
    base = torch.stack((-widths, -heights, widths, heights), dim=1) / 2  # [A, 4]
    if round_base_anchors:
        base = base.round()

    # The centres, from the one grid of the course: [H * W, 2] (x, y), row by row.
    centres = _grid(height, width, stride_h, stride_w, offset, torch.float64)
    shifts = centres.repeat(1, 2)[:, None, :]  # [H * W, 1, 4] as (c_x, c_y, c_x, c_y)
    anchors = (shifts + base[None]).reshape(-1, 4)  # [H * W * A, 4]
    return anchors.to(dtype=dtype, device=device)



def _levels(
    feature_sizes: Sequence[Sequence[int]], strides: Sequence[int | float | Sequence[int | float]]
) -> int:
    """Number of levels, after checking that ``feature_sizes`` and ``strides`` agree."""
    if not isinstance(feature_sizes, Sequence) or not isinstance(strides, Sequence):
        raise TypeError(
            f"feature_sizes and strides must be sequences, got {type(feature_sizes).__name__} "
            f"and {type(strides).__name__}"
        )
    if len(feature_sizes) != len(strides):
        raise ValueError(
            "feature_sizes and strides must have one entry per level, got "
            f"{len(feature_sizes)} and {len(strides)}"
        )
    return len(strides)


def multilevel_anchors(
    feature_sizes: Sequence[Sequence[int]],
    strides: Sequence[int | float | Sequence[int | float]],
    sizes: Sequence[float] = (32, 64, 128, 256, 512),
    ratios: Sequence[float] = (0.5, 1.0, 2.0),
    scales: Sequence[float] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3)),
    offset: float = 0.5,
    *,
    round_base_anchors: bool = False,
    truncate_sizes: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> list[Tensor]:
    """RetinaNet's anchors: on level ``l``, sizes ``sizes[l] * scales`` times ``ratios``.

    RetinaNet (Lin et al. 2017, §4) puts anchors of area ``32^2`` to ``512^2`` on P3 to P7, and at
    each level three ratios {1:2, 1:1, 2:1} times three scales {2^0, 2^(1/3), 2^(2/3)}: A = 9
    anchors per location, covering 32 to 813 pixels. Level ``l`` is :func:`generate_anchors` with
    ``base_size = 1`` and scales ``sizes[l] * scales``, so the order is torchvision's: location
    outer (row by row), then ratio, then scale.

    torchvision's ``_default_anchorgen`` truncates the sizes to integers (``int(32 * 2^(1/3))
    = 40``, not 40.3), uses ``offset=0`` and rounds the base anchors; ``offset=0,
    round_base_anchors=True, truncate_sizes=True`` reproduces its anchors element for element.
    torchvision also takes each level's stride as ``image_size // feature_size``, which is not the
    nominal stride when the image side is not a multiple of 128 (800 // 13 = 61 on P6): pass
    those strides to compare on such images.

    Args:
        feature_sizes: ``(H_l, W_l)`` of each level, finest first.
        strides: stride of each level, one number or ``(stride_h, stride_w)`` per level.
        sizes: the level's base anchor size in pixels (``sqrt`` of the area at scale 1).
        ratios: height / width of the anchors.
        scales: multipliers of the level's size (octave scales).
        offset: centre inside a stride cell (0.5: the course; 0: torchvision).
        round_base_anchors: round the zero-centred anchors to integer corners (torchvision).
        truncate_sizes: truncate ``sizes[l] * scale`` to an integer (torchvision's RetinaNet).
        dtype: floating dtype of the result.
        device: device of the result (the CPU if None).

    Returns:
        One tensor per level, [H_l * W_l * A, 4] xyxy in pixels, A = len(ratios) * len(scales).

    Raises:
        ValueError: if the numbers of feature sizes, strides and sizes differ, or any entry is
            invalid (as :func:`generate_anchors`).
        TypeError: if ``feature_sizes`` or ``strides`` is not a sequence, or ``dtype`` is not a
            floating dtype.

    Chapter: book/10_retinanet (section "Anchors on every level").
    """
    levels = _levels(feature_sizes, strides)
    sizes = _positive_values("sizes", sizes)
    scales = _positive_values("scales", scales)
    if len(sizes) != levels:
        raise ValueError(f"sizes must have one entry per level ({levels}), got {len(sizes)}")
    anchors = []
    for feature_size, stride, size in zip(feature_sizes, strides, sizes, strict=True):
        level_sizes = [size * scale for scale in scales]
        if truncate_sizes:
            level_sizes = [float(math.floor(s)) for s in level_sizes]
        anchors.append(
            generate_anchors(
                feature_size,
                stride,
                scales=level_sizes,
                ratios=ratios,
                base_size=1.0,
                offset=offset,
                round_base_anchors=round_base_anchors,
                dtype=dtype,
                device=device,
            )
        )
    return anchors


def multilevel_points(
    feature_sizes: Sequence[Sequence[int]],
    strides: Sequence[int | float | Sequence[int | float]],
    offset: float = 0.5,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> list[Tensor]:
    """The location centres of every pyramid level: FCOS's points and YOLO's cells.

    Level ``l`` is :func:`location_grid` of ``feature_sizes[l]`` at ``strides[l]``; with the
    default ``offset=0.5`` these are FCOS's ``floor(s / 2) + x s`` for even strides.

    Args:
        feature_sizes: ``(H_l, W_l)`` of each level, finest first.
        strides: stride of each level, one number or ``(stride_h, stride_w)`` per level.
        offset: centre inside a stride cell.
        dtype: floating dtype of the result.
        device: device of the result (the CPU if None).

    Returns:
        One tensor per level, [H_l * W_l, 2] ``(x, y)`` in pixels, row by row.

    Raises:
        ValueError: if the numbers of feature sizes and strides differ or an entry is invalid.
        TypeError: if an argument is not a sequence or ``dtype`` is not a floating dtype.

    Chapter: book/08_yolo (the grid); book/10_retinanet (points, FCOS).
    """
    _levels(feature_sizes, strides)
    return [
        location_grid(size, stride, offset, device=device, dtype=dtype)
        for size, stride in zip(feature_sizes, strides, strict=True)
    ]


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
