"""The answers of the usual IoU mistakes, so a failing test can name the mistake it sees.

Chapter: book/exercises
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from coursepkg.ops.boxes import box_iou

PLUS_ONE = (
    "this is the notes' '+1' IoU: the course uses continuous coordinates, width = x2 - x1 "
    "(boxes that only touch have IoU 0)"
)
NO_CLAMP = (
    "for boxes that do not overlap, x2 - x1 of the intersection is negative: clamp its width and "
    "height at 0 separately (two negatives multiply to a positive 'area')"
)
UNION = "the union counts the overlap once: area_a + area_b - intersection"
MIN_AREA = "divide by the union, not by the smaller box's area"
OTHER_AREA = "divide by the union, not by the area of one of the boxes (the notes' NMS overlap)"
ZERO_UNION = (
    "two zero-area boxes have an empty union: their IoU is 0, so guard the division "
    "(e.g. divide by max(union, tiny))"
)


def _parts(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Unclamped intersection sides [N, M] each, and the areas [N, 1], [1, M]."""
    w = torch.minimum(boxes1[:, None, 2], boxes2[None, :, 2]) - torch.maximum(
        boxes1[:, None, 0], boxes2[None, :, 0]
    )
    h = torch.minimum(boxes1[:, None, 3], boxes2[None, :, 3]) - torch.maximum(
        boxes1[:, None, 1], boxes2[None, :, 1]
    )
    area1 = ((boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1]))[:, None]
    area2 = ((boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1]))[None, :]
    return w, h, area1, area2


def iou_mistakes(boxes1: Tensor, boxes2: Tensor) -> Iterator[tuple[str, Callable[[], Tensor]]]:
    """``(hint, wrong [N, M] IoU)`` pairs for :func:`coursepkg.grading.expect.expect_tensor`."""
    w, h, area1, area2 = _parts(boxes1, boxes2)
    inter = w.clamp(min=0) * h.clamp(min=0)
    yield PLUS_ONE, lambda: box_iou(boxes1, boxes2, legacy_plus_one=True)
    yield NO_CLAMP, lambda: (w * h) / (area1 + area2 - w * h)
    yield NO_CLAMP, lambda: (w * h).clamp(min=0) / (area1 + area2 - (w * h).clamp(min=0))
    yield UNION, lambda: inter / (area1 + area2)
    yield MIN_AREA, lambda: inter / torch.minimum(area1, area2)
    yield OTHER_AREA, lambda: inter / area2.expand_as(inter)
    yield OTHER_AREA, lambda: inter / area1.expand_as(inter)
    yield ZERO_UNION, lambda: inter / (area1 + area2 - inter)
