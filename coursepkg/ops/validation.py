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

import math
import numbers
import operator
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor

__all__ = [
    "as_int",
    "check_boxes",
    "check_finite",
    "check_image_size",
    "check_int",
    "check_labels",
    "check_number",
    "check_positive_size",
    "check_probability",
    "check_target",
    "check_tensor",
]


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
    # One bool() for the whole test: on a GPU each read of a value is a host-device sync.
    if bool(_boxes_look_valid(boxes)):
        return
    # A width can overflow to inf for huge finite coordinates; the slow path accepts those.
    _raise_first_bad_row(boxes, name, "xyxy")


def _boxes_look_valid(boxes: Tensor, *, positive: bool = False) -> Tensor:
    """The fast test of :func:`check_boxes`, as a 0-d bool tensor (no host synchronisation).

    True when every width and height of a ``[N, 4]`` float xyxy tensor (``N >= 1``, structure
    already checked) is ``>= 0`` (``> 0`` with ``positive``) and finite. One reduction: NaN
    propagates through ``aminmax`` and fails the test, and so does any infinite coordinate
    (``inf - x = inf``, ``inf - inf = NaN``). False for a width that overflows to inf although
    its coordinates are finite: :func:`check_boxes`' slow path accepts those.
    """
    smallest, largest = torch.aminmax(boxes[:, 2:] - boxes[:, :2])  # over all widths, heights
    low_ok = smallest > 0 if positive else smallest >= 0
    return low_ok & (largest <= torch.finfo(boxes.dtype).max)


def _is_box_tensor(boxes: object) -> bool:
    """The structure :func:`check_boxes` requires: a floating ``[N, 4]`` tensor (no sync)."""
    return (
        isinstance(boxes, Tensor)
        and boxes.is_floating_point()
        and boxes.dim() == 2
        and boxes.shape[1] == 4
    )


def _boxes_flag(boxes: object, *, positive: bool = False) -> Tensor | bool:
    """:func:`check_boxes` (xyxy) as one flag, without a host sync: False for a wrong type, dtype
    or shape, True for ``[0, 4]``, else :func:`_boxes_look_valid` (read it with :func:`_all_true`)."""
    if not _is_box_tensor(boxes):
        return False
    if boxes.shape[0] == 0:
        return True
    return _boxes_look_valid(boxes, positive=positive)


def _all_true(flags: Iterable[Tensor | bool]) -> bool:
    """Whether every flag holds, with at most one host synchronisation for all of them.

    ``flags`` mixes Python bools (decided on the host) and 0-d bool tensors (decided on the
    device); the tensors are stacked and read once. Tensors on different devices give False, so
    that the caller's slow path decides.
    """
    tensors = []
    for flag in flags:
        if isinstance(flag, bool):
            if not flag:
                return False
        else:
            tensors.append(flag)
    if not tensors:
        return True
    if len({t.device for t in tensors}) > 1:
        return False
    return bool(torch.stack(tensors).all())


def _target_looks_valid(
    target: object,
    *,
    num_classes: int | None = None,
    image_size: Sequence[int] | None = None,
    positive_size: bool = False,
) -> Tensor | bool:
    """Every test of :func:`check_target` as one flag, without a host synchronisation.

    A Python bool where the host can decide (False on any wrong type, key, dtype or shape; True
    for a target without boxes), else a 0-d bool tensor that is True when the values pass too.
    A batch reads all its flags at once with :func:`_all_true`; only when that fails does the
    caller run :func:`check_target` target by target, which names the first problem. A False
    never passes bad input: :func:`check_target` decides.
    """
    if not isinstance(target, Mapping) or "boxes" not in target or "labels" not in target:
        return False
    boxes, labels = target["boxes"], target["labels"]
    if not _is_box_tensor(boxes):
        return False
    if not isinstance(labels, Tensor) or labels.dtype != torch.int64:
        return False
    if labels.shape != (boxes.shape[0],) or labels.device != boxes.device:
        return False
    if boxes.shape[0] == 0:
        return True
    flag = _boxes_look_valid(boxes, positive=positive_size)
    low, high = torch.aminmax(labels)
    flag = flag & (low >= 0)
    if num_classes is not None:
        flag = flag & (high < num_classes)
    if image_size is not None:
        try:
            height, width = check_image_size(image_size)
        except (TypeError, ValueError):
            return False
        inside = (boxes[:, :2].amin() >= 0) & (boxes[:, 2].amax() <= width)
        flag = flag & inside & (boxes[:, 3].amax() <= height)
    return flag


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


def _describe_range(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    """``[0, 1]``, ``(0, inf)``, ``>= 0`` ...: the allowed range, as the messages print it."""
    if low is None and high is None:
        return "finite"
    if high is None:
        return f"{'>' if low_open else '>='} {low:g}"
    if low is None:
        return f"{'<' if high_open else '<='} {high:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def check_number(
    value: object,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a finite ``float`` in the given range, or raise naming ``name``.

    Accepts Python and NumPy numbers and 0-d tensors; never bools. NaN and infinities are always
    refused (no threshold, weight or size of the course is meaningful at infinity).

    Args:
        value: the argument to check.
        name: the argument's name, for the message.
        low, high: bounds (None: unbounded on that side).
        low_open, high_open: exclude the bound itself (``(0, 1]`` is ``low_open=True``).

    Returns:
        ``float(value)``.

    Raises:
        TypeError: if ``value`` is not a real number.
        ValueError: if it is NaN, infinite or out of range; for example
            ``"score_thresh must be a number in [0, 1], got nan"``.

    Chapter: book/data_and_conventions
    """
    if isinstance(value, Tensor) and value.dim() == 0 and not value.dtype == torch.bool:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    number = float(value)
    ok = math.isfinite(number)
    if ok and low is not None:
        ok = number > low if low_open else number >= low
    if ok and high is not None:
        ok = number < high if high_open else number <= high
    if not ok:
        what = _describe_range(low, high, low_open, high_open)
        what = "" if what == "finite" else f" {what}"
        raise ValueError(f"{name} must be a finite number{what}, got {number!r}")
    return number


def check_probability(value: object, name: str) -> float:
    """A number in ``[0, 1]`` (a threshold on IoU or on a score, a fraction): see :func:`check_number`."""
    return check_number(value, name, low=0.0, high=1.0)


def check_int(value: object, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an ``int`` in ``[low, high]`` (ints, NumPy ints, 0-d integer tensors).

    Raises:
        TypeError: for floats (even ``2.0``), bools and non-numbers.
        ValueError: if it is out of range, for example ``"num_anchors must be an int >= 1, got 0"``.

    Chapter: book/data_and_conventions
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None
    if (low is not None and number < low) or (high is not None and number > high):
        what = _describe_range(low, high, False, False)
        raise ValueError(f"{name} must be an int {what}, got {number}")
    return number


_KINDS = {
    "float": (Tensor.is_floating_point, "a floating-point"),
    "int": (
        lambda t: not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool),
        "an integer",
    ),
    "bool": (lambda t: t.dtype == torch.bool, "a bool"),
}


def check_tensor(
    value: object,
    name: str,
    *,
    shape: Sequence[int | str | None] | None = None,
    dtype: str | torch.dtype | None = None,
) -> Tensor:
    """Raise unless ``value`` is a tensor of the given shape and dtype kind; return it.

    Args:
        value: the argument to check.
        name: its name, for the message.
        shape: one entry per dimension: an int (that size exactly), or a letter or None (any
            size); ``("N", 4)`` accepts ``[7, 4]`` and refuses ``[7, 5]`` and ``[7]``.
        dtype: ``"float"``, ``"int"`` or ``"bool"`` (a kind), a ``torch.dtype`` (exactly that),
            or None (any).

    Raises:
        TypeError: if it is not a tensor or has the wrong dtype (``"labels must be an integer
            tensor, got torch.float32"``).
        ValueError: if the shape differs (``"deltas must be [N, 4], got [3, 5]"``).

    Chapter: book/data_and_conventions
    """
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if shape is not None:
        fits = value.dim() == len(shape) and all(
            not isinstance(want, int) or got == want
            for want, got in zip(shape, value.shape, strict=True)
        )
        if not fits:
            expected = ", ".join("?" if want is None else str(want) for want in shape)
            raise ValueError(f"{name} must be [{expected}], got {list(value.shape)}")
    if isinstance(dtype, torch.dtype):
        if value.dtype != dtype:
            short = str(dtype).removeprefix("torch.")
            article = "an" if short[0] in "aeio" else "a"
            raise TypeError(f"{name} must be {article} {short} tensor, got {value.dtype}")
    elif dtype is not None:
        test, words = _KINDS[dtype]
        if not test(value):
            raise TypeError(f"{name} must be {words} tensor, got {value.dtype}")
    return value


def check_finite(value: Tensor, name: str) -> None:
    """Raise naming the first NaN or infinite element of ``value`` (one host sync if all finite).

    Chapter: book/data_and_conventions
    """
    if value.numel() == 0 or not value.is_floating_point() or bool(torch.isfinite(value).all()):
        return
    index = tuple(int(i) for i in torch.nonzero(~torch.isfinite(value))[0])
    where = index[0] if len(index) == 1 else list(index)
    raise ValueError(
        f"{name} must be finite (no NaN or inf), element {where} is {value[index].item()}"
    )


def check_labels(
    labels: object, name: str, length: int, *, num_classes: int | None = None
) -> Tensor:
    """Raise unless ``labels`` is an int64 ``[length]`` tensor of dataset labels ``0..K-1``.

    The one label check of the course: datasets' targets, the detector contract, R-CNN's and the
    RoI head's ground truths all use it.

    Args:
        labels: the tensor to check.
        name: its name, for the message (``"targets[0]['labels']"``).
        length: the number of boxes it labels.
        num_classes: ``K`` if known (labels must then be below it); else only ``>= 0`` is checked.

    Raises:
        TypeError: if it is not an int64 tensor.
        ValueError: on a wrong shape or a label outside ``0..K-1`` (naming the first one).

    Chapter: book/data_and_conventions
    """
    check_tensor(labels, name, dtype=torch.int64)
    if labels.shape != (length,):
        raise ValueError(f"{name} must be [{length}] (one label per box), got {list(labels.shape)}")
    if length == 0:
        return labels
    low, high = torch.aminmax(labels)
    ok = low >= 0 if num_classes is None else (low >= 0) & (high < num_classes)
    if not bool(ok):  # one host sync for both bounds
        bad = (labels < 0) if num_classes is None else (labels < 0) | (labels >= num_classes)
        i = int(torch.nonzero(bad)[0, 0])
        allowed = ">= 0" if num_classes is None else f"in 0..{num_classes - 1}"
        raise ValueError(
            f"{name} must be {allowed} (dataset labels 0..K-1), label {i} is {int(labels[i])}"
        )
    return labels


def check_positive_size(boxes: Tensor, name: str) -> None:
    """Raise unless every box of a checked ``[G, 4]`` tensor has positive width and height.

    A zero-width ground truth has no regression target (``t_w = log(0 / p_w)``).

    Chapter: book/data_and_conventions
    """
    if boxes.shape[0] == 0:
        return
    wh = boxes[:, 2:] - boxes[:, :2]  # [G, 2]
    if bool((wh <= 0).any()):
        row = int(torch.nonzero((wh <= 0).any(dim=1))[0, 0])
        raise ValueError(
            f"{name} must have positive widths and heights (drop zero-area boxes first; log(0) "
            f"has no regression target), row {row} is {boxes[row].tolist()}"
        )


def check_target(
    target: object,
    name: str = "target",
    *,
    num_classes: int | None = None,
    image_size: Sequence[int] | None = None,
    positive_size: bool = False,
) -> None:
    """Raise unless ``target`` is a ground-truth dict: ``"boxes"`` ``[G, 4]``, ``"labels"`` ``[G]``.

    The one target check of the course (datasets, the detector contract, the training losses).

    Args:
        target: the mapping to check; keys other than ``"boxes"`` and ``"labels"`` are ignored.
        name: its name, for the message (``"targets[2]"``).
        num_classes: ``K`` if known; labels must be in ``0..K-1``.
        image_size: ``(height, width)`` if the boxes must lie inside ``[0, W] x [0, H]``.
        positive_size: refuse zero-width or zero-height boxes (they have no regression target,
            ``log(0)``).

    Raises:
        TypeError: if ``target`` is not a mapping, or a field has the wrong type or dtype.
        ValueError: on a missing key, a wrong shape, a bad box or label; the message names
            ``name['boxes']`` or ``name['labels']`` and the first offending row.

    Chapter: book/data_and_conventions
    """
    flag = _target_looks_valid(
        target, num_classes=num_classes, image_size=image_size, positive_size=positive_size
    )
    if _all_true([flag]):  # one host sync for every test; the steps below name a failure
        return
    if not isinstance(target, Mapping):
        raise TypeError(f"{name} must be a dict, got {type(target).__name__}")
    missing = [key for key in ("boxes", "labels") if key not in target]
    if missing:
        raise ValueError(f"{name} is missing key(s) {missing}; it has {sorted(target)}")
    boxes = target["boxes"]
    check_boxes(boxes, f"{name}['boxes']")
    check_labels(target["labels"], f"{name}['labels']", boxes.shape[0], num_classes=num_classes)
    if boxes.shape[0] == 0:
        return
    if positive_size:
        check_positive_size(boxes, f"{name}['boxes']")
    if image_size is not None:
        height, width = check_image_size(image_size)
        inside = (boxes[:, :2] >= 0).all(dim=1) & (boxes[:, 2] <= width) & (boxes[:, 3] <= height)
        if not bool(inside.all()):
            i = int(torch.nonzero(~inside)[0, 0])
            raise ValueError(
                f"{name}['boxes'] must lie inside the image [0, {width}] x [0, {height}] "
                f"(image_size {(height, width)}), box {i} is {boxes[i].tolist()}"
            )
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
