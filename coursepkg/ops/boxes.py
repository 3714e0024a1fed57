"""Bounding boxes: formats, areas, IoU, clipping (their validation is in :mod:`coursepkg.ops.validation`).

Shapes used in this module:

* ``boxes``: ``[N, 4]`` floating-point ``(x1, y1, x2, y2)`` in absolute pixels, continuous
  coordinates (width ``x2 - x1``; an image of width ``W`` spans ``[0, W]``). Zero-area boxes are
  legal, ``x2 < x1`` or ``y2 < y1`` is an error.
* ``image_size``: ``(height, width)``, everywhere except :func:`convert_to_absolute_values`, which
  reproduces the lecture notes' function and keeps its ``(width, height)`` order.

The notes' pixel-inclusive convention (every width and height gets ``+ 1``, the PASCAL VOC devkit
habit) is available behind the keyword-only flag ``legacy_plus_one=False``; the rest of the
course uses continuous coordinates, like torchvision, detectron2 and the COCO tools.

Chapter: book/02_boxes_iou
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from coursepkg.ops.validation import as_int, check_boxes, check_image_size, check_number

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert boxes between the ``"xyxy"``, ``"xywh"`` and ``"cxcywh"`` formats.

    ``xyxy`` is ``(x1, y1, x2, y2)``; ``xywh`` is ``(x1, y1, w, h)`` (COCO annotations);
    ``cxcywh`` is ``(cx, cy, w, h)`` (DETR, and YOLO's format before dividing by the image size).
    The names are torchvision's.

    Args:
        boxes: ``[N, 4]`` floating-point tensor in ``in_fmt``.
        in_fmt: format of ``boxes``.
        out_fmt: format of the result.

    Returns:
        ``[N, 4]`` tensor in ``out_fmt``, same dtype and device (a new tensor even if the formats
        are equal).

    Raises:
        ValueError: for an unknown format name, a bad shape, NaN/inf, ``x2 < x1`` (xyxy input)
            or a negative width or height (xywh, cxcywh input).
        TypeError: for a non-tensor or integer input.

    Chapter: book/02_boxes_iou
    """
    for arg, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
        if fmt not in BOX_FORMATS:
            raise ValueError(f"{arg} must be one of {', '.join(BOX_FORMATS)}; got {fmt!r}")
    if in_fmt == "xyxy":
        check_boxes(boxes)
    else:
        check_boxes(boxes, fmt=in_fmt)
    if in_fmt == out_fmt:
        return boxes.clone()
    a, b, c, d = boxes.unbind(dim=1)  # four [N] columns
    if in_fmt == "xyxy":
        x1, y1, x2, y2 = a, b, c, d
    elif in_fmt == "xywh":
        x1, y1, x2, y2 = a, b, a + c, b + d
    else:  # cxcywh
        x1, y1, x2, y2 = a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d
    if out_fmt == "xyxy":
        out = (x1, y1, x2, y2)
    elif out_fmt == "xywh":
        out = (x1, y1, x2 - x1, y2 - y1)
    else:  # cxcywh
        out = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
    return torch.stack(out, dim=1)  # [N, 4]


def yolo_to_xyxy(boxes: Tensor, image_size: Sequence[int]) -> Tensor:
    """Convert YOLO's relative ``(cx, cy, w, h)`` (fractions of the image) to absolute xyxy.

    ``x1 = (cx - w / 2) * W``, ``x2 = (cx + w / 2) * W`` and likewise for ``y`` with ``H``; no
    rounding and no clipping (see :func:`clip_boxes_to_image`). The notes' integer version is
    :func:`convert_to_absolute_values`.

    Args:
        boxes: ``[N, 4]`` floating-point tensor of relative ``(cx, cy, w, h)``.
        image_size: ``(height, width)`` in pixels.

    Returns:
        ``[N, 4]`` xyxy boxes in pixels, same dtype and device.

    Chapter: book/02_boxes_iou
    """
    height, width = check_image_size(image_size)
    xyxy_rel = box_convert(boxes, "cxcywh", "xyxy")  # validates boxes; [N, 4]
    return xyxy_rel * xyxy_rel.new_tensor([width, height, width, height])


def xyxy_to_yolo(boxes: Tensor, image_size: Sequence[int]) -> Tensor:
    """Inverse of :func:`yolo_to_xyxy`: absolute xyxy to relative ``(cx, cy, w, h)``.

    Args:
        boxes: ``[N, 4]`` xyxy boxes in pixels.
        image_size: ``(height, width)`` in pixels.

    Returns:
        ``[N, 4]`` relative ``(cx, cy, w, h)``, same dtype and device.

    Chapter: book/02_boxes_iou
    """
    height, width = check_image_size(image_size)
    check_boxes(boxes)
    scale = boxes.new_tensor([width, height, width, height])
    return box_convert(boxes, "xyxy", "cxcywh") / scale


def convert_to_absolute_values(
    size: Sequence[int], box: Sequence[float]
) -> tuple[int, int, int, int]:
    """The lecture notes' ``convertToAbsoluteValues`` (from Padilla et al.'s metrics code), exactly.

    Converts one relative YOLO box ``(cx, cy, w, h)`` to integer pixel corners::

        x_in  = round((2 * cx - w) * W / 2)      x_end = x_in + round(w * W)
        y_in  = round((2 * cy - h) * H / 2)      y_end = y_in + round(h * H)

    then clips ``x_in, y_in`` at 0 and ``x_end, y_end`` at ``W - 1, H - 1``. The convention is
    mixed: ``x_end - x_in`` is the width (a continuous box), but the clip puts the far corner at the
    last pixel's index, as the pixel-inclusive ("+1") convention would (see ``legacy_plus_one``).
    ``round`` is Python's, which rounds halves to even (``round(0.5) == 0``, ``round(1.5) == 2``).

    ``size`` is ``(width, height)``: this is the one place in the course where the order is
    width first, because the notes (and PIL's ``Image.size``) pass it that way. Everywhere else,
    ``image_size`` is ``(height, width)``.

    Example from the notes: ``convert_to_absolute_values((640, 480),
    (0.572656, 0.523958, 0.698438, 0.589583)) == (143, 110, 590, 393)``.

    Args:
        size: ``(width, height)`` in pixels, positive integers.
        box: relative ``(cx, cy, w, h)``, four finite numbers, ``w, h >= 0``.

    Returns:
        ``(x_in, y_in, x_end, y_end)`` as Python ints.

    Raises:
        TypeError, ValueError: for a malformed ``size`` or ``box`` (NaN, inf, a negative width or
            height).

    Chapter: book/02_boxes_iou
    """
    try:
        width, height = size
    except (TypeError, ValueError):
        raise TypeError(f"size must be a (width, height) pair, got {size!r}") from None
    width, height = as_int(width, "size", size), as_int(height, "size", size)
    if width <= 0 or height <= 0:
        raise ValueError(f"size must be positive (width, height), got {(width, height)}")
    if not isinstance(box, Sequence | Tensor) or len(box) != 4:
        raise ValueError(f"box must be 4 numbers (cx, cy, w, h), got {box!r}")
    cx, cy = (check_number(v, f"box[{i}]") for i, v in enumerate(box[:2]))
    # A negative width would give x_end < x_in: an inverted box, not an error, without this.
    w, h = (check_number(v, f"box[{i}]", low=0.0) for i, v in zip((2, 3), box[2:], strict=True))
    x_in = round((2 * cx - w) * width / 2)
    y_in = round((2 * cy - h) * height / 2)
    x_end = x_in + round(w * width)
    y_end = y_in + round(h * height)
    x_in, y_in = max(x_in, 0), max(y_in, 0)
    x_end, y_end = min(x_end, width - 1), min(y_end, height - 1)
    return x_in, y_in, x_end, y_end


def box_area(boxes: Tensor, *, legacy_plus_one: bool = False) -> Tensor:
    """Area of each box: ``(x2 - x1) * (y2 - y1)``, or ``(x2 - x1 + 1) * (y2 - y1 + 1)``.

    Args:
        boxes: ``[N, 4]`` xyxy boxes.
        legacy_plus_one: use the notes' pixel-inclusive convention (a box from column 100 to
            column 200 covers 101 pixels).

    Returns:
        ``[N]`` areas, same dtype and device as ``boxes``.

    Chapter: book/02_boxes_iou
    """
    check_boxes(boxes)
    one = 1.0 if legacy_plus_one else 0.0
    return (boxes[:, 2] - boxes[:, 0] + one) * (boxes[:, 3] - boxes[:, 1] + one)


def _check_pair(boxes1: Tensor, boxes2: Tensor) -> None:
    check_boxes(boxes1, "boxes1")
    check_boxes(boxes2, "boxes2")
    if boxes1.dtype != boxes2.dtype:
        raise TypeError(
            f"boxes1 and boxes2 must have the same dtype, got {boxes1.dtype} and {boxes2.dtype}"
        )
    if boxes1.device != boxes2.device:
        raise ValueError(
            f"boxes1 and boxes2 must be on the same device, got {boxes1.device} and {boxes2.device}"
        )


def box_iou_reference(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU from its definition, one pair at a time: the version the chapter shows.

    ``IoU(A, B) = |A ∩ B| / |A ∪ B| = |A ∩ B| / (|A| + |B| - |A ∩ B|)`` (the Jaccard index;
    PASCAL VOC, Everingham et al. 2010, §4.4). Implements Eq. (eq-iou) of book/02_boxes_iou. The intersection of two boxes is a box whose
    left edge is the larger of the two left edges, and so on; if it has no width or no height,
    the boxes do not overlap. The arithmetic is in Python floats (double precision), so float32
    boxes with huge coordinates do not overflow. The tests check that the fast :func:`box_iou`
    equals this function (and ``torchvision.ops.box_iou``) on seeded random boxes and edge cases.

    Args:
        boxes1: ``[N, 4]`` xyxy boxes.
        boxes2: ``[M, 4]`` xyxy boxes.

    Returns:
        ``[N, M]`` IoUs in ``[0, 1]``, dtype and device of ``boxes1``; 0 for two zero-area boxes.

    Chapter: book/02_boxes_iou
    """
    ious = torch.zeros(len(boxes1), len(boxes2), dtype=torch.float64)
    for i, (ax1, ay1, ax2, ay2) in enumerate(boxes1.tolist()):
        for j, (bx1, by1, bx2, by2) in enumerate(boxes2.tolist()):
            inter_w = max(0.0, min(ax2, bx2) - max(ax1, bx1))  # 0 if they do not overlap in x
            inter_h = max(0.0, min(ay2, by2) - max(ay1, by1))
            inter = inter_w * inter_h
            union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
            ious[i, j] = inter / union if union > 0 else 0.0  # two empty boxes: 0, not 0/0
    return ious.to(boxes1.dtype).to(boxes1.device)


def _overflow_safe_scale(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """A power of two (0-d tensor) that brings every coordinate within ``2^c``; 1 when it is.

    IoU is a ratio of areas, so it does not change when every coordinate is multiplied by the
    same number, and multiplying by a power of two is exact. With ``|x| <= 2^c`` a width is at
    most ``2^(c+1)``, an area ``2^(2c+2)`` and a sum of two areas ``2^(2c+3)``, which the dtype
    holds when ``c = (e - 4) // 2`` with ``max < 2^e`` (62 for float32 and bfloat16, 510 for float64, 6 for
    float16). Without it, float32 boxes with coordinates near 1e30 have areas of inf and IoUs of
    inf / inf = NaN. The scale is computed on the boxes' device (no host synchronisation); boxes
    within the range are multiplied by 1, so their IoUs keep every bit.
    """
    max_exponent = math.frexp(torch.finfo(boxes1.dtype).max)[1]  # max < 2^max_exponent
    c = (max_exponent - 4) // 2
    with torch.no_grad():
        largest = torch.maximum(boxes1.abs().amax(), boxes2.abs().amax())  # []
        exponent = torch.frexp(largest).exponent  # largest < 2^exponent
        return torch.ldexp(largest.new_ones(()), (c - exponent).clamp(max=0))


def _box_iou(boxes1: Tensor, boxes2: Tensor, legacy_plus_one: bool = False) -> Tensor:
    """:func:`box_iou` on boxes already validated (for package code that checked them itself)."""
    if boxes1.numel() == 0 or boxes2.numel() == 0:
        return boxes1.new_zeros(boxes1.shape[0], boxes2.shape[0])
    scale = _overflow_safe_scale(boxes1, boxes2)  # 1 unless a coordinate is beyond 2^c
    boxes1, boxes2 = boxes1 * scale, boxes2 * scale
    one = scale if legacy_plus_one else 0.0  # the "+1" pixel, in the scaled units
    area1 = (boxes1[:, 2] - boxes1[:, 0] + one) * (boxes1[:, 3] - boxes1[:, 1] + one)  # [N]
    area2 = (boxes2[:, 2] - boxes2[:, 0] + one) * (boxes2[:, 3] - boxes2[:, 1] + one)  # [M]
    # Width and height of every intersection, one [N, M] tensor each (columns broadcast). The
    # in-place ops (sub_, clamp_, ...) only save memory traffic; autograd handles them.
    b1, b2 = boxes1[:, None, :], boxes2[None, :, :]  # [N, 1, 4], [1, M, 4]
    inter_w = torch.minimum(b1[..., 2], b2[..., 2]).sub_(torch.maximum(b1[..., 0], b2[..., 0]))
    inter_h = torch.minimum(b1[..., 3], b2[..., 3]).sub_(torch.maximum(b1[..., 1], b2[..., 1]))
    if legacy_plus_one:
        inter_w, inter_h = inter_w.add_(one), inter_h.add_(one)
    inter = inter_w.clamp_(min=0).mul_(inter_h.clamp_(min=0))  # [N, M]
    union = (area1[:, None] + area2[None, :]).sub_(inter)  # [N, M]
    # union == 0 only for two zero-area boxes (then inter == 0 too): 0 / tiny = 0, not NaN.
    # For every other pair union >= tiny, so the clamp changes nothing.
    return inter.div_(union.clamp_(min=torch.finfo(union.dtype).tiny))


def box_iou(boxes1: Tensor, boxes2: Tensor, *, legacy_plus_one: bool = False) -> Tensor:
    """Pairwise intersection over union of two sets of boxes.

    ``IoU(A, B) = |A ∩ B| / (|A| + |B| - |A ∩ B|)``: implements Eq. (eq-iou) of
    book/02_boxes_iou, for all pairs at once by broadcasting. With continuous coordinates
    (the default) this equals ``torchvision.ops.box_iou``, except that the IoU of two zero-area
    boxes is 0 instead of NaN (their union is empty), and that boxes with huge coordinates (beyond
    ``2^62`` in float32) are first scaled by a power of two so that their areas do not overflow
    (torchvision gives NaN). Vectorised over all pairs; tested equal to :func:`box_iou_reference`,
    the pair-by-pair version the chapter shows.

    Args:
        boxes1: ``[N, 4]`` xyxy boxes.
        boxes2: ``[M, 4]`` xyxy boxes, same dtype and device.
        legacy_plus_one: the notes' pixel-inclusive convention: ``+ 1`` on every width and
            height, so boxes that only touch get a small positive IoU.

    Returns:
        ``[N, M]`` IoU values in ``[0, 1]``, same dtype and device as the boxes.

    Chapter: book/02_boxes_iou
    """
    _check_pair(boxes1, boxes2)
    return _box_iou(boxes1, boxes2, legacy_plus_one)


def matched_box_iou(boxes1: Tensor, boxes2: Tensor, *, legacy_plus_one: bool = False) -> Tensor:
    """Element-wise IoU of ``boxes1[i]`` with ``boxes2[i]`` (the diagonal of :func:`box_iou`).

    Implements Eq. (eq-iou) of book/02_boxes_iou for matched pairs, in ``[N]`` memory.

    Args:
        boxes1: ``[N, 4]`` xyxy boxes.
        boxes2: ``[N, 4]`` xyxy boxes, same N, dtype and device.
        legacy_plus_one: the notes' pixel-inclusive convention.

    Returns:
        ``[N]`` IoU values.

    Raises:
        ValueError: if the two sets have different lengths (and every error of :func:`box_iou`).

    Chapter: book/02_boxes_iou
    """
    _check_pair(boxes1, boxes2)
    if boxes1.shape[0] != boxes2.shape[0]:
        raise ValueError(
            f"boxes1 and boxes2 must have the same length, got {boxes1.shape[0]} and "
            f"{boxes2.shape[0]}"
        )
    return _matched_box_iou(boxes1, boxes2, legacy_plus_one)


def _matched_box_iou(boxes1: Tensor, boxes2: Tensor, legacy_plus_one: bool = False) -> Tensor:
    """:func:`matched_box_iou` on boxes already checked (its checks cost host syncs on a GPU)."""
    if boxes1.numel() == 0:
        return boxes1.new_zeros(0)
    scale = _overflow_safe_scale(boxes1, boxes2)  # see box_iou
    boxes1, boxes2 = boxes1 * scale, boxes2 * scale
    one = scale if legacy_plus_one else 0.0
    area1 = (boxes1[:, 2] - boxes1[:, 0] + one) * (boxes1[:, 3] - boxes1[:, 1] + one)  # [N]
    area2 = (boxes2[:, 2] - boxes2[:, 0] + one) * (boxes2[:, 3] - boxes2[:, 1] + one)  # [N]
    lt = torch.maximum(boxes1[:, :2], boxes2[:, :2])  # [N, 2]
    rb = torch.minimum(boxes1[:, 2:], boxes2[:, 2:])  # [N, 2]
    wh = (rb - lt + one).clamp(min=0)  # [N, 2]
    inter = wh[:, 0] * wh[:, 1]  # [N]
    union = area1 + area2 - inter
    return inter / union.clamp(min=torch.finfo(union.dtype).tiny)


def clip_boxes_to_image(boxes: Tensor, image_size: Sequence[int]) -> Tensor:
    """Clip boxes to the image: x into ``[0, W]``, y into ``[0, H]`` (continuous coordinates).

    Args:
        boxes: ``[N, 4]`` xyxy boxes.
        image_size: ``(height, width)``.

    Returns:
        ``[N, 4]`` clipped boxes (a new tensor). A box entirely outside the image becomes a
        zero-area box on the border.

    Chapter: book/02_boxes_iou
    """
    check_boxes(boxes)
    return _clip_boxes_to_image(boxes, check_image_size(image_size))


def _clip_boxes_to_image(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """:func:`clip_boxes_to_image` without the checks, for callers that validated their inputs."""
    height, width = image_size
    x = boxes[:, 0::2].clamp(min=0, max=width)  # [N, 2]: x1, x2
    y = boxes[:, 1::2].clamp(min=0, max=height)  # [N, 2]: y1, y2
    return torch.stack((x[:, 0], y[:, 0], x[:, 1], y[:, 1]), dim=1)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices of the boxes whose width and height are both at least ``min_size``.

    Args:
        boxes: ``[N, 4]`` xyxy boxes.
        min_size: smallest allowed side, in pixels (>= 0).

    Returns:
        ``[K]`` int64 indices into ``boxes``, increasing.

    Raises:
        ValueError: if ``min_size`` is negative or not finite.

    Chapter: book/02_boxes_iou
    """
    check_boxes(boxes)
    return _remove_small_boxes(boxes, check_number(min_size, "min_size", low=0.0))


def _remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """:func:`remove_small_boxes` without the checks, for callers that validated their inputs."""
    wh = boxes[:, 2:] - boxes[:, :2]  # [N, 2]
    return torch.nonzero((wh >= min_size).all(dim=1)).flatten()
