"""Average precision of one precision/recall curve: all-point, 11-point and 101-point.

Shapes::

    tp                   [N]  bool, one flag per detection in descending score order
    recall, precision    [N]  one point per detection (recall non-decreasing)

Chapter: book/04_evaluation
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

AP_METHODS = ("all-point", "11-point", "101-point")
VOC_RECALL_POINTS = np.linspace(0.0, 1.0, 11)  # VOC 2007's 0.0, 0.1, ..., 1.0
# COCO's 101 recall thresholds, built exactly as pycocotools builds them (np.linspace).
COCO_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # [R] = 0.00, 0.01, ..., 1.00


def _as_curve(values: object, name: str) -> Tensor:
    """A 1-D float tensor with values in [0, 1] (array-likes become float64)."""
    if isinstance(values, Tensor):
        if not values.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {values.dtype}")
    else:
        try:
            values = torch.as_tensor(values, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{name} must be a tensor or a sequence of numbers") from None
    if values.dim() != 1:
        raise ValueError(f"{name} must be 1-D [N], got {list(values.shape)}")
    if bool(torch.isnan(values).any()):
        raise ValueError(f"{name} must not contain NaN")
    if values.numel() and not bool(((values >= 0) & (values <= 1)).all()):
        raise ValueError(
            f"{name} must lie in [0, 1], got values from {values.min().item()} "
            f"to {values.max().item()}"
        )
    return values


def _precision_envelope(precision: Tensor) -> Tensor:
    """``p_interp[i] = max(precision[i:])``: the curve made non-increasing, from the right."""
    return precision.flip(0).cummax(0).values.flip(0)


def _all_point_ap(recall: Tensor, precision: Tensor) -> Tensor:
    """VOC 2010+: the exact area under the envelope, sum_n (r_n - r_{n-1}) * p_interp(r_n)."""
    zero, one = recall.new_zeros(1), recall.new_ones(1)
    r = torch.cat([zero, recall, one])  # [N + 2]: sentinels at recall 0 and recall 1
    p = _precision_envelope(torch.cat([zero, precision, zero]))  # [N + 2]
    steps = torch.nonzero(r[1:] != r[:-1]).flatten() + 1  # indices where recall moves
    return ((r[steps] - r[steps - 1]) * p[steps]).sum()


def _eleven_point_ap(recall: Tensor, precision: Tensor) -> Tensor:
    """VOC 2007: (1/11) sum over r in {0, 0.1, ..., 1} of max(precision where recall >= r), or 0."""
    if recall.numel() == 0:
        return recall.new_zeros(())
    points = torch.as_tensor(VOC_RECALL_POINTS, dtype=recall.dtype, device=recall.device)  # [11]
    reached = recall[None, :] >= points[:, None]  # [11, N]
    best = torch.where(reached, precision[None, :], 0.0).amax(dim=1)  # [11], 0 if never reached
    return best.sum() / len(points)


def _hundred_one_point_ap(
    recall: Tensor, precision: Tensor, thresholds: np.ndarray = COCO_RECALL_THRESHOLDS
) -> Tensor:
    """COCO: mean over 101 recall thresholds of the envelope at the first point with recall >= r.

    No sentinels: a threshold beyond the largest recall contributes 0. ``thresholds`` lets TIDE's
    error analysis sample at ``i / 100`` instead of pycocotools' ``np.linspace`` (last-bit apart).
    """
    points = torch.as_tensor(thresholds, dtype=recall.dtype, device=recall.device)
    if recall.numel() == 0:
        return recall.new_zeros(())
    envelope = _precision_envelope(precision)  # [N]
    first = torch.searchsorted(recall, points, side="left")  # [101], N where never reached
    reached = first < recall.numel()
    sampled = torch.where(reached, envelope[first.clamp(max=recall.numel() - 1)], 0.0)
    return sampled.mean()


_AP_FUNCTIONS = {
    "all-point": _all_point_ap,
    "11-point": _eleven_point_ap,
    "101-point": _hundred_one_point_ap,
}


def average_precision(recall: Tensor, precision: Tensor, method: str = "all-point") -> Tensor:
    """Average precision: the area under a precision/recall curve after interpolation.

    The curve is first made non-increasing from the right, ``p_interp(r) = max_{r' >= r} p(r')``
    (Eq. (eq-interp) of book/04_evaluation; a detector that reaches more recall at better precision further down the list gets credit
    for it). Then, by ``method``:

    * ``"all-point"`` (PASCAL VOC 2010 and later; Padilla et al.'s ``CalculateAveragePrecision``,
      the lecture notes' code): append the sentinels (recall 0, precision 0) and (recall 1,
      precision 0) and sum the rectangles ``(r_n - r_{n-1}) * p_interp(r_n)`` wherever recall
      changes: the exact area under the step curve. Implements Eq. (eq-ap-all-point) of
      book/04_evaluation.
    * ``"11-point"`` (VOC 2007): ``(1/11) * sum_{r in {0, 0.1, ..., 1}} p_interp(r)``, where
      ``p_interp(r)`` is the largest precision at recall ``>= r`` and 0 when recall ``r`` is never
      reached. No sentinels. Implements Eq. (eq-ap-11-point) of book/04_evaluation.
    * ``"101-point"`` (COCO, per IoU threshold): for each ``r`` in ``{0, 0.01, ..., 1}`` take the
      interpolated precision at the *first* point with recall ``>= r`` (``searchsorted``, side
      left) and 0 when ``r`` is beyond the largest recall; average the 101 values. Implements
      Eq. (eq-ap-101-point) of book/04_evaluation.

    The lecture notes' example, recall ``[0.25, 0.5, 0.75]`` at precision ``[1, 1, 1]``, gives
    0.75, 8/11 = 0.7273 and 76/101 = 0.7525 with the three methods.

    Args:
        recall: ``[N]`` recall after each detection, descending score order, non-decreasing, in
            ``[0, 1]``. A float tensor, or any sequence of numbers (read as float64).
        precision: ``[N]`` precision after each detection, in ``[0, 1]``.
        method: ``"all-point"``, ``"11-point"`` or ``"101-point"``.

    Returns:
        0-d tensor, the AP, in the promoted dtype of the inputs and on their device. An empty
        curve (no detections) has AP 0.

    Raises:
        ValueError: for an unknown method, inputs that are not 1-D, lengths that differ, NaN,
            values outside ``[0, 1]`` or a decreasing recall.
        TypeError: for integer tensors or inputs that are not numbers.

    Chapter: book/04_evaluation
    """
    if method not in _AP_FUNCTIONS:
        raise ValueError(f"method must be one of {', '.join(AP_METHODS)}; got {method!r}")
    recall, precision = _as_curve(recall, "recall"), _as_curve(precision, "precision")
    if recall.shape != precision.shape:
        raise ValueError(
            f"recall and precision must have the same length, got {recall.numel()} and "
            f"{precision.numel()}"
        )
    if recall.device != precision.device:
        raise ValueError(
            f"recall and precision must be on the same device, got {recall.device} and "
            f"{precision.device}"
        )
    if bool((recall[1:] < recall[:-1]).any()):
        raise ValueError("recall must be non-decreasing (points in descending score order)")
    dtype = torch.promote_types(recall.dtype, precision.dtype)
    return _AP_FUNCTIONS[method](recall.to(dtype), precision.to(dtype))


class PrecisionRecall(NamedTuple):
    """Precision and recall after each detection of a ranked list (see :func:`precision_recall`)."""

    precision: Tensor  # [D] float64, TP / (TP + FP) among the first i + 1 detections
    recall: Tensor  # [D] float64, TP / num_gt among the first i + 1 detections


def precision_recall(tp: Tensor, num_gt: int) -> PrecisionRecall:
    """Precision and recall after each detection of a list sorted by descending score.

    ``precision_i = TP_i / (TP_i + FP_i)`` and ``recall_i = TP_i / num_gt``, where ``TP_i`` and
    ``FP_i`` count the true and false positives among the first ``i + 1`` detections.
    Implements Eq. (eq-precision-recall) of book/04_evaluation.

    Args:
        tp: ``[D]`` bool, whether each detection (descending score order) is a true positive.
        num_gt: number of ground-truth objects of the class, ``>= 1``.

    Returns:
        :class:`PrecisionRecall` of two ``[D]`` float64 tensors on ``tp``'s device.

    Raises:
        TypeError: if ``tp`` is not a bool tensor or ``num_gt`` is not an int.
        ValueError: if ``tp`` is not 1-D, ``num_gt < 1`` or ``tp`` has more TPs than ``num_gt``.

    Chapter: book/04_evaluation
    """
    if not isinstance(tp, Tensor) or tp.dtype != torch.bool:
        raise TypeError(f"tp must be a bool tensor, got {getattr(tp, 'dtype', type(tp).__name__)}")
    if tp.dim() != 1:
        raise ValueError(f"tp must be 1-D [D], got {list(tp.shape)}")
    if isinstance(num_gt, bool) or not isinstance(num_gt, (int, np.integer)):
        raise TypeError(f"num_gt must be an int, got {type(num_gt).__name__}")
    if num_gt < 1:
        raise ValueError(
            f"num_gt must be >= 1 (recall is undefined without ground truth), got {num_gt}"
        )
    tp_count = tp.to(torch.float64).cumsum(0)  # [D]
    fp_count = (~tp).to(torch.float64).cumsum(0)  # [D]
    if tp.numel() and tp_count[-1] > num_gt:
        raise ValueError(f"tp has {int(tp_count[-1])} true positives but num_gt is {num_gt}")
    return PrecisionRecall(precision=tp_count / (tp_count + fp_count), recall=tp_count / num_gt)
