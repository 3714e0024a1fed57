"""Input checks shared by every public function of the course: boxes, image sizes, integers.

Every public function validates its inputs once, at its boundary, with these checks, and raises a
``TypeError`` (wrong type or dtype) or ``ValueError`` (wrong shape or value) whose message names
the argument and says what was expected and what came instead, for example
``"boxes1 must be [N, 4], got [3, 5]"``. Private helpers called by a function that has already
checked its inputs do not check again (each check of a value costs a host-device round trip on a
GPU).

Chapter: book/data_and_conventions
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["check_boxes", "check_image_size", "as_int"]


def _check_box_tensor(boxes: object, name: str) -> None:
    """Type, shape and finiteness checks shared by every box format."""
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(boxes).__name__}")
    if not boxes.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor, got {boxes.dtype}; "
            f"convert integer boxes with {name}.float()"
        )
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must be [N, 4], got {list(boxes.shape)}")


def _raise_first_bad_row(boxes: Tensor, name: str, fmt: str) -> None:
    """Slow path of the checks: find the first offending row and raise, or return if none."""
    finite = torch.isfinite(boxes).all(dim=1)
    if not bool(finite.all()):
        row = int(torch.nonzero(~finite)[0, 0])
        raise ValueError(f"{name} must be finite, row {row} is {boxes[row].tolist()}")
    if fmt == "xyxy":
        bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
        what = "x2 >= x1 and y2 >= y1"
    else:
        bad = (boxes[:, 2] < 0) | (boxes[:, 3] < 0)
        what = "non-negative width and height"
    if bool(bad.any()):
        row = int(torch.nonzero(bad)[0, 0])
        raise ValueError(f"{name} ({fmt}) must have {what}, row {row} is {boxes[row].tolist()}")


def check_boxes(boxes: Tensor, name: str = "boxes", *, fmt: str = "xyxy") -> None:
    """Raise a clear error unless ``boxes`` is a valid ``[N, 4]`` float tensor of boxes in ``fmt``.

    Every public function of the course that takes boxes calls this first. An empty ``[0, 4]``
    tensor is valid.

    Args:
        boxes: ``[N, 4]`` floating-point tensor, ``(x1, y1, x2, y2)`` (or ``fmt``).
        name: the argument's name, used in the error messages.
        fmt: ``"xyxy"`` (the course's format: ``x2 >= x1``, ``y2 >= y1``), or ``"xywh"`` /
            ``"cxcywh"`` (non-negative width and height).

    Raises:
        TypeError: if ``boxes`` is not a tensor or not floating point (integer boxes must be
            converted with ``.float()`` first).
        ValueError: if the shape is not ``[N, 4]``, a value is NaN or infinite, or a row has
            ``x2 < x1`` or ``y2 < y1`` (the message names the first such row).

    Chapter: book/02_boxes_iou
    """
    _check_box_tensor(boxes, name)
    if boxes.shape[0] == 0:
        return
    if fmt != "xyxy":
        _raise_first_bad_row(boxes, name, fmt)
        return
    # Fast path, one reduction: widths and heights must be >= 0 and finite. NaN propagates
    # through aminmax and fails the test, and so does any infinite coordinate (inf - x = inf,
    # inf - inf = NaN).
    smallest, largest = torch.aminmax(boxes[:, 2:] - boxes[:, :2])  # over all widths, heights
    # One bool() for both bounds: on a GPU each read of a value is a host-device synchronisation.
    if bool((smallest >= 0) & (largest <= torch.finfo(boxes.dtype).max)):
        return
    # A width can overflow to inf for huge finite coordinates; the slow path accepts those.
    _raise_first_bad_row(boxes, name, "xyxy")


def as_int(value: object, name: str, whole: object) -> int:
    """``value`` as an ``int`` (ints, numpy and 0-d integer tensors; never floats or bools)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must hold ints, got {whole!r}")
    try:
        return operator.index(value)  # int, numpy and 0-d integer tensors; never floats
    except TypeError:
        raise TypeError(f"{name} must hold ints, got {whole!r}") from None


def check_image_size(image_size: Sequence[int], name: str = "image_size") -> tuple[int, int]:
    """Validate an ``(height, width)`` pair of positive integers and return it as a tuple.

    Raises:
        TypeError: if it is not a pair of integers.
        ValueError: if a side is not positive.

    Chapter: book/data_and_conventions
    """
    try:
        height, width = image_size
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a (height, width) pair, got {image_size!r}") from None
    height, width = as_int(height, name, image_size), as_int(width, name, image_size)
    if height <= 0 or width <= 0:
        raise ValueError(f"{name} must be positive (height, width), got {(height, width)}")
    return height, width


REDUCTIONS = ("none", "mean", "sum")


def check_reduction(reduction: object) -> str:
    """Validate a loss's ``reduction``, one of ``"none"``, ``"mean"``, ``"sum"`` as in
    ``torch.nn.functional``, and return it.

    Raises:
        ValueError: for anything else (the message names ``reduction``).

    Chapter: book/glossary
    """
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction
