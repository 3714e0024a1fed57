"""Evaluating detectors: true and false positives, precision and recall, AP and mAP (VOC and COCO).

A detector is scored one class at a time. Its detections are sorted by score and matched to the
ground truth (GT) greedily: a detection that overlaps an unclaimed GT enough (IoU >= a threshold)
is a true positive (TP) and claims it, any other detection is a false positive (FP). Walking down
the sorted list gives one (recall, precision) point per detection; average precision (AP) is the
area under that curve after making precision non-increasing, and mAP is the mean AP over classes.
The benchmarks differ in the details, and each detail changes the number:

====================  ================  ===================  ===============================
                      PASCAL VOC 2007   VOC 2010+, Padilla   COCO (pycocotools)
====================  ================  ===================  ===============================
AP from the curve     11 recall points  all points (area)    101 recall points
IoU threshold         0.5               0.5                  mean over 0.50:0.05:0.95
best GT already used  FP                FP                   try the next-best free GT
IoU convention        "+1" pixels       "+1" pixels          continuous
crowd regions         ("difficult")     none                 ignored, absorb many detections
detections per image  all               all                  best 1 / 10 / 100 per class
====================  ================  ===================  ===============================

Shapes and formats used in this module::

    recall, precision    [N]  one point per detection, descending score (recall non-decreasing)
    one image's preds    {"boxes": [D, 4] xyxy float, "scores": [D] float, "labels": [D] int}
    one image's targets  {"boxes": [G, 4] xyxy float, "labels": [G] int,
                          "iscrowd": [G] bool or 0/1 int (optional), "area": [G] float (optional)}

Boxes follow the course convention (continuous coordinates, width ``x2 - x1``); the lecture notes'
pixel-inclusive IoU is available to the VOC functions behind ``legacy_plus_one=False``. Labels are
non-negative class ids; the classes evaluated are those seen in the targets or the predictions.
Reference oracles (pycocotools) appear only in the tests and ``benchmarks/bench_map.py``.

Chapter: book/04_evaluation
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from coursepkg.boxes import box_iou, check_boxes

AP_METHODS = ("all-point", "11-point", "101-point")

# COCO's evaluation parameters, built exactly as pycocotools builds them (``Params.setDetParams``):
# np.linspace rather than arange or torch.linspace, so every threshold has the same bits.
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # [T] = 0.50, 0.55, ..., 0.95
COCO_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)  # [R] = 0.00, 0.01, ..., 1.00
COCO_MAX_DETECTIONS = (1, 10, 100)  # [M] detections kept per image and class, by score
# Object areas in pixels^2; both bounds inclusive, so an area of exactly 32^2 is small AND medium.
COCO_AREA_RANGES = {
    "all": (0.0, 1e5**2),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e5**2),
}
VOC_RECALL_POINTS = np.linspace(0.0, 1.0, 11)  # VOC 2007's 0.0, 0.1, ..., 1.0

COCO_STAT_NAMES = (
    "map",  # AP averaged over IoU 0.50:0.95, all areas, 100 detections per image
    "map_50",  # AP at IoU 0.50
    "map_75",  # AP at IoU 0.75
    "map_small",  # area <= 32^2
    "map_medium",  # 32^2 <= area <= 96^2
    "map_large",  # area >= 96^2
    "mar_1",  # average recall (max recall, mean over IoU 0.50:0.95) with 1 detection per image
    "mar_10",
    "mar_100",
    "mar_small",
    "mar_medium",
    "mar_large",
)


# --------------------------------------------------------------------------------------------
# Average precision of one precision/recall curve
# --------------------------------------------------------------------------------------------


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


def _hundred_one_point_ap(recall: Tensor, precision: Tensor) -> Tensor:
    """COCO: mean over 101 recall thresholds of the envelope at the first point with recall >= r.

    No sentinels: a threshold beyond the largest recall contributes 0.
    """
    points = torch.as_tensor(COCO_RECALL_THRESHOLDS, dtype=recall.dtype, device=recall.device)
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
    (a detector that reaches more recall at better precision further down the list gets credit
    for it). Then, by ``method``:

    * ``"all-point"`` (PASCAL VOC 2010 and later; Padilla et al.'s ``CalculateAveragePrecision``,
      the lecture notes' code): append the sentinels (recall 0, precision 0) and (recall 1,
      precision 0) and sum the rectangles ``(r_n - r_{n-1}) * p_interp(r_n)`` wherever recall
      changes: the exact area under the step curve.
    * ``"11-point"`` (VOC 2007): ``(1/11) * sum_{r in {0, 0.1, ..., 1}} p_interp(r)``, where
      ``p_interp(r)`` is the largest precision at recall ``>= r`` and 0 when recall ``r`` is never
      reached. No sentinels.
    * ``"101-point"`` (COCO, per IoU threshold): for each ``r`` in ``{0, 0.01, ..., 1}`` take the
      interpolated precision at the *first* point with recall ``>= r`` (``searchsorted``, side
      left) and 0 when ``r`` is beyond the largest recall; average the 101 values.

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


# --------------------------------------------------------------------------------------------
# PASCAL VOC: greedy matching and per-class AP
# --------------------------------------------------------------------------------------------


class DetectionMatch(NamedTuple):
    """Result of :func:`match_detections` (every field in descending score order)."""

    order: Tensor  # [D] int64: input index of each detection, highest score first
    tp: Tensor  # [D] bool: true positive
    matched_gt: Tensor  # [D] int64: GT index claimed by each TP, -1 for a false positive
    ious: Tensor  # [D]: IoU with the best-overlapping GT (0 when there is no GT)


def _check_scores(scores: Tensor, name: str, length: int, length_name: str) -> None:
    if not isinstance(scores, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(scores).__name__}")
    if not scores.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {scores.dtype}")
    if scores.dim() != 1 or scores.shape[0] != length:
        raise ValueError(f"{name} must be [{length}] like {length_name}, got {list(scores.shape)}")
    if not bool(torch.isfinite(scores).all()):
        raise ValueError(f"{name} must be finite")


def _check_iou_threshold(iou_threshold: float) -> float:
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, (int, float)):
        raise TypeError(f"iou_threshold must be a number, got {type(iou_threshold).__name__}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    return float(iou_threshold)


def match_detections(
    pred_boxes: Tensor,
    pred_scores: Tensor,
    gt_boxes: Tensor,
    iou_threshold: float = 0.5,
    *,
    legacy_plus_one: bool = False,
) -> DetectionMatch:
    """Label the detections of ONE image and ONE class as true or false positives, VOC style.

    Detections are visited in descending score order (ties keep their input order). Each one
    looks only at the GT it overlaps most (the first one on an IoU tie): it is a true positive if
    that IoU is ``>= iou_threshold`` and the GT is still free, and then claims it; otherwise it is
    a false positive. A detection whose best GT was already claimed does NOT fall back to its
    second-best GT. This is the PASCAL VOC devkit's rule and Padilla et al.'s
    (``GetPascalVOCMetrics``); COCO differs (see :class:`MeanAveragePrecision`).

    Args:
        pred_boxes: ``[D, 4]`` xyxy detections.
        pred_scores: ``[D]`` float scores.
        gt_boxes: ``[G, 4]`` xyxy ground truth of this class, same dtype and device as
            ``pred_boxes``.
        iou_threshold: minimum IoU for a true positive, in ``[0, 1]``.
        legacy_plus_one: the lecture notes' pixel-inclusive IoU (``+ 1`` on every side length).

    Returns:
        :class:`DetectionMatch`; its tensors are on ``pred_boxes``' device, ``ious`` in its dtype.

    Raises:
        TypeError, ValueError: for invalid boxes or scores (shape, dtype, NaN, ``x2 < x1``), a
            length mismatch, or an ``iou_threshold`` outside ``[0, 1]``.

    Chapter: book/04_evaluation
    """
    check_boxes(pred_boxes, "pred_boxes")
    check_boxes(gt_boxes, "gt_boxes")
    _check_scores(pred_scores, "pred_scores", pred_boxes.shape[0], "pred_boxes")
    if gt_boxes.dtype != pred_boxes.dtype or gt_boxes.device != pred_boxes.device:
        raise TypeError(
            f"gt_boxes must have pred_boxes' dtype and device ({pred_boxes.dtype}, "
            f"{pred_boxes.device}), got {gt_boxes.dtype}, {gt_boxes.device}"
        )
    threshold = _check_iou_threshold(iou_threshold)
    num_dets, num_gts = pred_boxes.shape[0], gt_boxes.shape[0]
    order = torch.sort(pred_scores, descending=True, stable=True).indices  # [D]
    if num_gts == 0:
        best_iou = pred_boxes.new_zeros(num_dets)
        best_gt = torch.full((num_dets,), -1, dtype=torch.int64, device=pred_boxes.device)
    else:
        ious = box_iou(pred_boxes[order], gt_boxes, legacy_plus_one=legacy_plus_one)  # [D, G]
        best_gt = ious.argmax(dim=1)  # [D]; argmax returns the first index on ties
        best_iou = ious.gather(1, best_gt[:, None]).squeeze(1)  # [D]
    # The greedy pass is sequential: whether a detection is a TP depends on the earlier ones.
    claimed: set[int] = set()
    matched = []
    for iou, gt in zip(best_iou.tolist(), best_gt.tolist(), strict=True):
        is_tp = gt >= 0 and iou >= threshold and gt not in claimed
        matched.append(gt if is_tp else -1)
        if is_tp:
            claimed.add(gt)
    matched_gt = torch.tensor(matched, dtype=torch.int64, device=pred_boxes.device)  # [D]
    return DetectionMatch(order=order, tp=matched_gt >= 0, matched_gt=matched_gt, ious=best_iou)


@dataclass(frozen=True)
class VOCResult:
    """Result of :func:`voc_average_precision`; row ``k`` of every field is class ``classes[k]``."""

    classes: Tensor  # [K] int64, sorted class ids (every label seen in targets or predictions)
    ap: Tensor  # [K] float64 AP per class, -1 for a class without ground truth
    num_gt: Tensor  # [K] int64 ground-truth objects per class
    precision: list[Tensor]  # K curves [D_k] float64, descending score (empty without GT)
    recall: list[Tensor]  # K curves [D_k] float64
    scores: list[Tensor]  # K [D_k] sorted detection scores (the thresholds along each curve)
    map: float  # mean AP over the classes that have ground truth (-1 if none has)


def voc_average_precision(
    preds: Sequence[Mapping[str, Tensor]],
    targets: Sequence[Mapping[str, Tensor]],
    iou_threshold: float = 0.5,
    method: str = "all-point",
    *,
    legacy_plus_one: bool = False,
) -> VOCResult:
    """Per-class AP and mAP with PASCAL VOC's (and Padilla et al.'s) rules.

    For each class: every image's detections are matched with :func:`match_detections`; all the
    class's detections are then ranked by score (ties: earlier image first, then the per-image
    order), precision and recall follow from the running TP and FP counts
    (:func:`precision_recall`, recall over all the class's GT objects) and the AP from
    :func:`average_precision`. mAP is the mean over classes with ground truth. Crowd flags and
    areas in the targets are ignored (VOC has neither; its "difficult" objects are not modelled).

    Args:
        preds: one dict per image, ``{"boxes": [D, 4], "scores": [D], "labels": [D]}``.
        targets: one dict per image, ``{"boxes": [G, 4], "labels": [G]}`` (the boxes are cast
            to the predictions' dtype and device).
        iou_threshold: minimum IoU for a true positive (VOC: 0.5).
        method: ``"all-point"`` (VOC 2010+), ``"11-point"`` (VOC 2007) or ``"101-point"``.
        legacy_plus_one: the notes' pixel-inclusive IoU, as in the VOC devkit and Padilla's code.

    Returns:
        :class:`VOCResult`. With no images, or no labels at all, every field is empty and ``map``
        is -1.

    Raises:
        TypeError, ValueError: for malformed images (see :class:`MeanAveragePrecision`), an
            unknown method or a threshold outside ``[0, 1]``.

    Chapter: book/04_evaluation
    """
    if method not in _AP_FUNCTIONS:
        raise ValueError(f"method must be one of {', '.join(AP_METHODS)}; got {method!r}")
    _check_iou_threshold(iou_threshold)
    _images_from_dicts(preds, targets)  # validation only
    labels = [p["labels"] for p in preds] + [t["labels"] for t in targets]
    classes = sorted({c for x in labels for c in x.tolist()})
    num_gt = dict.fromkeys(classes, 0)
    scores: dict[int, list[Tensor]] = {c: [] for c in classes}  # per image, in score order
    tps: dict[int, list[Tensor]] = {c: [] for c in classes}
    for pred, target in zip(preds, targets, strict=True):
        for c in sorted(set(pred["labels"].tolist()) | set(target["labels"].tolist())):
            gt_boxes = target["boxes"][target["labels"] == c].to(pred["boxes"])
            keep = pred["labels"] == c
            match = match_detections(
                pred["boxes"][keep],
                pred["scores"][keep],
                gt_boxes,
                iou_threshold,
                legacy_plus_one=legacy_plus_one,
            )
            num_gt[c] += gt_boxes.shape[0]
            scores[c].append(pred["scores"][keep][match.order].cpu().to(torch.float64))
            tps[c].append(match.tp.cpu())
    aps, precisions, recalls, ranked_scores = [], [], [], []
    for c in classes:
        # Rank all images' detections together; the stable sort keeps image order on ties.
        ranked, ranking = torch.sort(torch.cat(scores[c]), descending=True, stable=True)
        ranked_scores.append(ranked)
        if num_gt[c] == 0:
            aps.append(-1.0)
            precisions.append(torch.zeros(0, dtype=torch.float64))
            recalls.append(torch.zeros(0, dtype=torch.float64))
            continue
        curve = precision_recall(torch.cat(tps[c])[ranking], num_gt[c])
        aps.append(float(average_precision(curve.recall, curve.precision, method)))
        precisions.append(curve.precision)
        recalls.append(curve.recall)
    valid = [ap for ap, c in zip(aps, classes, strict=True) if num_gt[c] > 0]
    return VOCResult(
        classes=torch.tensor(classes, dtype=torch.int64),
        ap=torch.tensor(aps, dtype=torch.float64),
        num_gt=torch.tensor([num_gt[c] for c in classes], dtype=torch.int64),
        precision=precisions,
        recall=recalls,
        scores=ranked_scores,
        map=sum(valid) / len(valid) if valid else -1.0,
    )


# --------------------------------------------------------------------------------------------
# Checking and flattening lists of per-image dicts
# --------------------------------------------------------------------------------------------


class _Images(NamedTuple):
    """A batch of images flattened into numpy arrays (detections and GTs of all images)."""

    det_image: np.ndarray  # [N] int64 image index
    det_boxes: np.ndarray  # [N, 4] float64 xyxy
    det_scores: np.ndarray  # [N] float64
    det_labels: np.ndarray  # [N] int64
    gt_image: np.ndarray  # [G] int64
    gt_boxes: np.ndarray  # [G, 4] float64 xyxy
    gt_labels: np.ndarray  # [G] int64
    gt_crowd: np.ndarray  # [G] bool
    gt_area: np.ndarray  # [G] float64: "area" if given, else the box area


def _check_field(image: Mapping, key: str, name: str, kind: str, length: int | None) -> Tensor:
    """Type, dtype and shape of one field of one image dict (cheap: no pass over the values)."""
    value = image[key]
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}[{key!r}] must be a torch.Tensor, got {type(value).__name__}")
    floating = value.is_floating_point()
    if kind == "float" and not floating:
        raise TypeError(f"{name}[{key!r}] must be a floating-point tensor, got {value.dtype}")
    if kind == "int" and (floating or value.is_complex() or value.dtype == torch.bool):
        raise TypeError(f"{name}[{key!r}] must be an integer tensor, got {value.dtype}")
    if kind == "flag" and (floating or value.is_complex()):
        raise TypeError(f"{name}[{key!r}] must be a bool or integer tensor, got {value.dtype}")
    if length is None:  # boxes
        if value.dim() != 2 or value.shape[1] != 4:
            raise ValueError(f"{name}[{key!r}] must be [N, 4], got {list(value.shape)}")
    elif value.dim() != 1 or value.shape[0] != length:
        raise ValueError(
            f"{name}[{key!r}] must be [{length}] like its boxes, got {list(value.shape)}"
        )
    return value


def _cat(tensors: list[Tensor], dtype: torch.dtype, shape: tuple[int, ...]) -> Tensor:
    """Concatenate on the CPU (one copy for all images), detached, in ``dtype``."""
    if not tensors:
        return torch.zeros(shape, dtype=dtype)
    return torch.cat(tensors).detach().cpu().to(dtype)


def _check_values(bad: Tensor, counts: list[int], names: list[str], what: str) -> None:
    """Raise naming the first image with a bad value; ``bad`` flags the concatenated values."""
    if not bool(bad.any()):
        return
    first_bad = int(torch.nonzero(bad)[0, 0])
    image = int(np.searchsorted(np.cumsum(counts), first_bad, side="right"))
    row = first_bad - sum(counts[:image])
    raise ValueError(f"{names[image]} must be {what} (row {row} is not)")


def _images_from_dicts(preds: object, targets: object, first: int = 0) -> _Images:
    """Validate lists of per-image prediction and target dicts and flatten them.

    Structure (types, dtypes, shapes) is checked image by image; values (finite, ``x2 >= x1``,
    labels >= 0, ...) once on the concatenation of all images, so that 5,000 images cost
    milliseconds; an error still names the first bad image (``preds[3]['boxes']``). Image ``i``
    of the lists gets index ``first + i``.
    """
    for arg, value in (("preds", preds), ("targets", targets)):
        if isinstance(value, (Mapping, str, Tensor)) or not isinstance(value, Sequence):
            kind = type(value).__name__
            raise TypeError(f"{arg} must be a list of dicts (one per image), got {kind}")
    if len(preds) != len(targets):
        raise ValueError(
            f"preds and targets must have one entry per image, got {len(preds)} and {len(targets)}"
        )
    det_boxes, det_scores, det_labels, gt_boxes, gt_labels = [], [], [], [], []
    optional: dict[str, list[Tensor]] = {"iscrowd": [], "area": []}
    given: dict[str, list[bool]] = {"iscrowd": [], "area": []}  # per image
    for i, (pred, target) in enumerate(zip(preds, targets, strict=True)):
        for arg, image, keys in (
            ("preds", pred, ("boxes", "scores", "labels")),
            ("targets", target, ("boxes", "labels")),
        ):
            if not isinstance(image, Mapping):
                raise TypeError(f"{arg}[{i}] must be a dict, got {type(image).__name__}")
            if any(k not in image for k in keys):
                missing = [k for k in keys if k not in image]
                raise ValueError(f"{arg}[{i}] is missing {missing}; it needs {list(keys)}")
        det_boxes.append(_check_field(pred, "boxes", f"preds[{i}]", "float", None))
        num = len(det_boxes[-1])
        det_scores.append(_check_field(pred, "scores", f"preds[{i}]", "float", num))
        det_labels.append(_check_field(pred, "labels", f"preds[{i}]", "int", num))
        gt_boxes.append(_check_field(target, "boxes", f"targets[{i}]", "float", None))
        num = len(gt_boxes[-1])
        gt_labels.append(_check_field(target, "labels", f"targets[{i}]", "int", num))
        for key, kind in (("iscrowd", "flag"), ("area", "float")):
            given[key].append(target.get(key) is not None)
            if given[key][-1]:
                optional[key].append(_check_field(target, key, f"targets[{i}]", kind, num))

    num_dets, num_gts = [len(b) for b in det_boxes], [len(b) for b in gt_boxes]
    boxes = {
        "preds": _cat(det_boxes, torch.float64, (0, 4)),
        "targets": _cat(gt_boxes, torch.float64, (0, 4)),
    }
    for arg, counts in (("preds", num_dets), ("targets", num_gts)):
        try:
            check_boxes(boxes[arg], f"{arg} boxes")
        except ValueError:  # find the image, and let check_boxes name it
            for i, chunk in enumerate(boxes[arg].split(counts)):
                check_boxes(chunk, f"{arg}[{i}]['boxes']")
            raise
    scores = _cat(det_scores, torch.float64, (0,))
    names = [f"preds[{i}]['scores']" for i in range(len(preds))]
    _check_values(~torch.isfinite(scores), num_dets, names, "finite")
    labels = {
        "preds": _cat(det_labels, torch.int64, (0,)),
        "targets": _cat(gt_labels, torch.int64, (0,)),
    }
    for arg, counts in (("preds", num_dets), ("targets", num_gts)):
        names = [f"{arg}[{i}]['labels']" for i in range(len(preds))]
        _check_values(labels[arg] < 0, counts, names, "a class id >= 0")

    # Optional fields. Where an image does not give them: not crowd, and the box's area.
    b = boxes["targets"]
    gt_crowd = torch.zeros(len(b), dtype=torch.bool)  # [G]
    gt_area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # [G]
    for key, out in (("iscrowd", gt_crowd), ("area", gt_area)):
        if not optional[key]:
            continue
        values = _cat(optional[key], torch.float64, (0,))
        counts = [n for n, g in zip(num_gts, given[key], strict=True) if g]
        names = [f"targets[{i}][{key!r}]" for i, g in enumerate(given[key]) if g]
        if key == "iscrowd":
            _check_values((values != 0) & (values != 1), counts, names, "0 or 1")
        else:
            _check_values(~(torch.isfinite(values) & (values >= 0)), counts, names, "finite, >= 0")
        per_gt = torch.repeat_interleave(torch.tensor(given[key]), torch.tensor(num_gts))  # [G]
        out[per_gt] = values.to(out.dtype)

    image = np.arange(first, first + len(preds))
    return _Images(
        det_image=np.repeat(image, num_dets),
        det_boxes=boxes["preds"].numpy(),
        det_scores=scores.numpy(),
        det_labels=labels["preds"].numpy(),
        gt_image=np.repeat(image, num_gts),
        gt_boxes=boxes["targets"].numpy(),
        gt_labels=labels["targets"].numpy(),
        gt_crowd=gt_crowd.numpy(),
        gt_area=gt_area.numpy(),
    )


# --------------------------------------------------------------------------------------------
# COCO: MeanAveragePrecision, vectorised over images
# --------------------------------------------------------------------------------------------


class MeanAveragePrecision:
    """COCO's box mAP and mAR, equal to pycocotools' ``COCOeval`` (``iouType="bbox"``).

    Usage::

        metric = MeanAveragePrecision()
        for images, targets in loader:
            metric.update(detector(images), targets)
        stats = metric.compute()  # {"map": 0.41, "map_50": 0.63, ...}

    ``compute()`` returns the twelve numbers of ``COCOeval.summarize()`` as Python floats, under
    the names in ``COCO_STAT_NAMES`` (``map``, ``map_50``, ``map_75``, ``map_small``,
    ``map_medium``, ``map_large``, ``mar_1``, ``mar_10``, ``mar_100``, ``mar_small``,
    ``mar_medium``, ``mar_large``), plus ``"classes"`` (``[K]`` int64 tensor) and
    ``"map_per_class"`` (``[K]`` float64 tensor, AP@[.50:.95] of each class). A number that has
    nothing to average (no ground truth in that class or area range) is -1, as in pycocotools.

    COCO's rules, reproduced exactly (Lin et al. 2014; ``pycocotools/cocoeval.py``):

    1. Per image and class, detections sorted by score (stable: ties keep input order), at most
       100 kept.
    2. IoU in continuous coordinates; for a crowd GT the union is replaced by the detection's
       area (``IoU = |D ∩ G| / |D|``).
    3. For each IoU threshold in ``0.50:0.05:0.95`` and each area range (all, small ``<= 32²``,
       medium ``32²..96²``, large ``>= 96²``; bounds inclusive): GTs that are crowd or outside the
       range are *ignored*. Each detection, in score order, takes the free GT with the highest
       IoU ``>= t`` (the later GT on a tie), preferring regular GTs over ignored ones; a crowd GT
       is never used up. Unlike VOC, a detection whose best GT is taken moves on to the next one.
       Detections matched to an ignored GT, and unmatched detections outside the area range, are
       ignored (neither TP nor FP).
    4. Per class, area range and maxDets in ``(1, 10, 100)``: the top-maxDets detections of every
       image are ranked by score (ties: earlier image first), precision
       ``TP / (TP + FP + eps)`` with ``eps = np.spacing(1)``, recall ``TP / #non-ignored GTs``;
       precision is made non-increasing from the right and read at the first point with recall
       ``>= r`` for ``r`` in ``0:0.01:1`` (0 beyond the largest recall).
    5. AP averages that over recall thresholds, IoU thresholds and classes; AR averages the final
       recall over IoU thresholds and classes.

    The classes are every label seen in the targets or the predictions (sorted). This equals
    pycocotools when the COCO ground truth registers exactly those category ids; a class with
    predictions but no ground truth counts as -1 (left out of the means), a class with ground
    truth but no predictions as AP 0. Images keep the order in which they were passed to
    :meth:`update` (pycocotools sorts image ids; give it ids in the same order for equal tie
    breaks). Boxes are converted to float64 for the computation; float32 inputs give bit-for-bit
    the IoUs pycocotools computes from the same boxes in ``[x, y, w, h]`` form.

    The implementation never loops over images: it builds every (detection, GT) pair of the same
    image and class with IoU >= 0.5 at once, runs the greedy matching for all 10 IoU thresholds
    and 4 area ranges together, looping only over the detections' rank within their image
    (<= 100 steps), and accumulates each class with cumulative sums over one sorted array.

    Chapter: book/04_evaluation
    """

    def __init__(self) -> None:
        self._batches: list[_Images] = []
        self._num_images = 0

    def reset(self) -> None:
        """Forget every image passed to :meth:`update`."""
        self._batches = []
        self._num_images = 0

    def update(
        self, preds: Sequence[Mapping[str, Tensor]], targets: Sequence[Mapping[str, Tensor]]
    ) -> None:
        """Add a batch of images.

        Args:
            preds: one dict per image: ``"boxes"`` ``[D, 4]`` xyxy float, ``"scores"`` ``[D]``
                float, ``"labels"`` ``[D]`` integer class ids.
            targets: one dict per image: ``"boxes"`` ``[G, 4]`` xyxy float, ``"labels"`` ``[G]``
                integer, optionally ``"iscrowd"`` ``[G]`` bool/0-1 int and ``"area"`` ``[G]`` float
                (the object's area for the small/medium/large ranges, e.g. COCO's mask area;
                default: the box area).

        Raises:
            TypeError: if an argument is not a list of dicts of tensors, or a tensor has the
                wrong dtype (integer boxes, float labels).
            ValueError: for mismatched lengths, missing keys, wrong shapes, NaN/inf, ``x2 < x1``,
                negative labels or areas, or crowd flags other than 0/1. The message names the
                image and the field (``preds[3]['boxes']``).
        """
        self._batches.append(_images_from_dicts(preds, targets, self._num_images))
        self._num_images += len(preds)

    def compute(self) -> dict[str, float | Tensor]:
        """The twelve COCO numbers, plus ``classes`` and ``map_per_class`` (see the class doc).

        With no images (or no ground truth at all) every number is -1 and ``classes`` lists only
        the predicted labels.
        """
        if self._batches:
            images = _Images(*map(np.concatenate, zip(*self._batches, strict=True)))
        else:
            images = _images_from_dicts([], [])
        precision, recall, classes = _coco_evaluate(images)
        stats = _coco_summarize(precision, recall)
        result: dict[str, float | Tensor] = dict(zip(COCO_STAT_NAMES, stats, strict=True))
        result["classes"] = torch.from_numpy(classes)
        result["map_per_class"] = torch.from_numpy(_coco_per_class_ap(precision))
        return result


def _coco_evaluate(images: _Images) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COCOeval's ``evaluate()`` and ``accumulate()`` on flattened images.

    Returns:
        ``precision`` ``[T, R, K, A, M]`` and ``recall`` ``[T, K, A, M]`` as in pycocotools
        (``-1`` where a class has no non-ignored GT), and the ``[K]`` class ids.
    """
    classes = np.unique(np.concatenate([images.gt_labels, images.det_labels]))
    num_classes = len(classes)
    # Group key of every detection and GT: (image, class). GTs sorted by it, input order kept.
    gt_group = images.gt_image * num_classes + np.searchsorted(classes, images.gt_labels)
    gt_order = np.argsort(gt_group, kind="stable")
    gt_group, gt_boxes = gt_group[gt_order], images.gt_boxes[gt_order]
    gt_crowd, gt_area = images.gt_crowd[gt_order], images.gt_area[gt_order]
    gt_class = gt_group % num_classes if num_classes else gt_group

    det_group, det_order, det_rank = _rank_detections(images, classes)
    det_boxes, det_scores = images.det_boxes[det_order], images.det_scores[det_order]
    det_area = (det_boxes[:, 2] - det_boxes[:, 0]) * (det_boxes[:, 3] - det_boxes[:, 1])

    ranges = np.array(list(COCO_AREA_RANGES.values()))  # [A, 2]
    # A GT is ignored if crowd or outside the area range; a detection may be ignored if outside.
    gt_ignore = gt_crowd[None, :] | _outside(gt_area, ranges)  # [A, G]
    det_outside = _outside(det_area, ranges)  # [A, N]

    pair_det, pair_gt, pair_iou = _candidate_pairs(
        det_group, det_boxes, gt_group, gt_boxes, gt_crowd
    )
    # Only these "candidate" detections can ever match; every other detection is unmatched at
    # every threshold (a false positive, or ignored when outside the area range).
    candidates, pair_candidate = np.unique(pair_det, return_inverse=True)  # [C], [P]
    matched, tp = _greedy_match(
        pair_candidate, pair_gt, pair_iou, det_rank[candidates], gt_crowd, gt_ignore
    )  # [A, T, C] each

    num_regular = np.stack(  # [K, A] non-ignored GTs per class ("npig" in pycocotools)
        [np.bincount(gt_class[~ignore], minlength=num_classes) for ignore in gt_ignore], axis=1
    )
    det_class = det_group % num_classes if num_classes else det_group
    precision, recall = _accumulate(
        matched, tp, candidates, det_outside, det_class, det_scores, det_rank, num_regular
    )
    return precision, recall, classes


def _outside(area: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """``[A, N]``: area outside each inclusive range ``[lo, hi]``."""
    return (area[None, :] < ranges[:, :1]) | (area[None, :] > ranges[:, 1:])


def _rank_detections(images: _Images, classes: np.ndarray) -> tuple[np.ndarray, ...]:
    """Sort detections by (image, class, descending score) and keep the top 100 of each group.

    Returns the group key ``image * K + class``, the indices kept (into the flat arrays) and each
    kept detection's rank in its group (0 = highest score), all ``[N']``.
    """
    det_group = images.det_image * len(classes) + np.searchsorted(classes, images.det_labels)
    order = np.lexsort((-images.det_scores, det_group))  # lexsort is stable: ties keep input order
    group = det_group[order]
    new_group = np.r_[True, group[1:] != group[:-1]] if len(group) else np.zeros(0, bool)
    position = np.arange(len(group))
    rank = position - np.maximum.accumulate(np.where(new_group, position, 0))  # [N]
    keep = rank < max(COCO_MAX_DETECTIONS)
    return group[keep], order[keep], rank[keep]


def _candidate_pairs(
    det_group: np.ndarray,
    det_boxes: np.ndarray,
    gt_group: np.ndarray,
    gt_boxes: np.ndarray,
    gt_crowd: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (detection, GT) pair of the same image and class whose IoU could match (>= 0.5).

    Returns ``[P]`` detection indices, GT indices and IoUs (crowd GTs: intersection over the
    detection's area), computed like pycocotools' ``bbIou`` in float64.
    """
    first = np.searchsorted(gt_group, det_group, side="left")  # [N] first GT of the same group
    count = np.searchsorted(gt_group, det_group, side="right") - first  # [N]
    pair_det = np.repeat(np.arange(len(det_group)), count)  # [P]
    start = np.cumsum(count) - count  # [N] where each detection's pairs begin
    pair_gt = np.repeat(first - start, count) + np.arange(len(pair_det))  # [P] first, first + 1, ..
    d, g = det_boxes[pair_det], gt_boxes[pair_gt]  # [P, 4] each
    inter_w = np.minimum(d[:, 2], g[:, 2]) - np.maximum(d[:, 0], g[:, 0])
    inter_h = np.minimum(d[:, 3], g[:, 3]) - np.maximum(d[:, 1], g[:, 1])
    overlaps = (inter_w > 0) & (inter_h > 0)
    inter = np.where(overlaps, inter_w * inter_h, 0.0)
    det_area = (d[:, 2] - d[:, 0]) * (d[:, 3] - d[:, 1])
    gt_area = (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1])
    union = np.where(gt_crowd[pair_gt], det_area, det_area + gt_area - inter)
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=overlaps)
    keep = iou >= COCO_IOU_THRESHOLDS[0]
    return pair_det[keep], pair_gt[keep], iou[keep]


def _greedy_match(
    pair_det: np.ndarray,
    pair_gt: np.ndarray,
    pair_iou: np.ndarray,
    det_rank: np.ndarray,
    gt_crowd: np.ndarray,
    gt_ignore: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """COCO's greedy matching, for every area range and IoU threshold at once.

    Within one image and class the matching is sequential (a GT taken by a detection is not free
    for the next one), so we loop over the detections' rank; all images, classes, thresholds and
    area ranges advance together. Each detection takes, among its free candidates with
    IoU >= t, the best by (regular before ignored, higher IoU, later GT) — pycocotools' loop.

    Args:
        pair_det, pair_gt, pair_iou: ``[P]`` candidate pairs: detection index (into the ``C``
            detections that have a candidate), GT index and IoU.
        det_rank: ``[C]`` each detection's rank by score within its image and class.
        gt_crowd: ``[G]`` bool; ``gt_ignore``: ``[A, G]`` bool, per area range.

    Returns:
        ``matched`` and ``tp`` (matched to a regular GT), both ``[A, T, C]`` bool.
    """
    num_areas, num_dets = gt_ignore.shape[0], len(det_rank)
    thresholds = np.minimum(COCO_IOU_THRESHOLDS, 1 - 1e-10)[None, :, None]  # [1, T, 1]
    matched = np.zeros((num_areas, len(COCO_IOU_THRESHOLDS), num_dets), dtype=bool)
    tp = np.zeros_like(matched)
    used = np.zeros((num_areas, len(COCO_IOU_THRESHOLDS), len(gt_crowd)), dtype=bool)  # [A, T, G]
    # Sort by rank, then detection, then (IoU, GT index): a detection's best candidate comes last.
    order = np.lexsort((pair_gt, pair_iou, pair_det, det_rank[pair_det]))
    pair_det, pair_gt, pair_iou = pair_det[order], pair_gt[order], pair_iou[order]
    bounds = np.searchsorted(det_rank[pair_det], np.arange(max(COCO_MAX_DETECTIONS) + 1))
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        if start == stop:
            continue
        det, gt, iou = pair_det[start:stop], pair_gt[start:stop], pair_iou[start:stop]  # [n]
        segment = np.flatnonzero(np.r_[True, det[1:] != det[:-1]])  # first pair of each detection
        free = ~used[:, :, gt] | gt_crowd[gt]  # [A, T, n]: crowd GTs are never used up
        candidate = free & (iou >= thresholds)  # [A, T, n]
        position = np.arange(len(gt))
        regular = candidate & ~gt_ignore[:, None, gt]
        best_regular = np.maximum.reduceat(np.where(regular, position, -1), segment, axis=2)
        best_any = np.maximum.reduceat(np.where(candidate, position, -1), segment, axis=2)
        best = np.where(best_regular >= 0, best_regular, best_any)  # [A, T, n_det]
        a, t, j = np.nonzero(best >= 0)
        chosen_gt, chosen_det = gt[best[a, t, j]], det[segment[j]]
        used[a, t, chosen_gt] = True
        matched[a, t, chosen_det] = True
        tp[a, t, chosen_det] = ~gt_ignore[a, chosen_gt]
    return matched, tp


def _accumulate(
    matched: np.ndarray,
    tp: np.ndarray,
    candidates: np.ndarray,
    det_outside: np.ndarray,
    det_class: np.ndarray,
    det_scores: np.ndarray,
    det_rank: np.ndarray,
    num_regular: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval's ``accumulate()``: precision ``[T, R, K, A, M]`` and recall ``[T, K, A, M]``.

    ``matched`` and ``tp`` (``[A, T, C]``) describe the candidate detections ``candidates``
    (``[C]`` indices into the ``N`` detections); ``det_outside`` is ``[A, N]``.
    """
    num_thresholds, num_areas = len(COCO_IOU_THRESHOLDS), tp.shape[0]
    num_classes = num_regular.shape[0]
    shape = (num_thresholds, len(COCO_RECALL_THRESHOLDS), num_classes, num_areas)
    precision = -np.ones(shape + (len(COCO_MAX_DETECTIONS),))
    recall = -np.ones((num_thresholds, num_classes, num_areas, len(COCO_MAX_DETECTIONS)))
    candidate_of = np.full(len(det_rank), -1)
    candidate_of[candidates] = np.arange(len(candidates))
    # One ranking for everything: class, then descending score, then image, then rank in image.
    # The detections arrive sorted by (image, class, rank), so a stable sort keeps that on ties.
    ranking = np.lexsort((-det_scores, det_class))  # [N]
    ranked_rank, ranked_class = det_rank[ranking], det_class[ranking]
    ranked_candidate, ranked_counted = candidate_of[ranking], ~det_outside[:, ranking]  # [A, N]
    tp_needed = _tp_needed_for_recall(num_regular)  # [K, A, R]
    for m, max_dets in enumerate(COCO_MAX_DETECTIONS):
        kept = np.flatnonzero(ranked_rank < max_dets)  # each image's top max_dets, still ranked
        at = np.flatnonzero(ranked_candidate[kept] >= 0)  # [c] positions of the candidates
        columns = ranked_candidate[kept[at]]  # [c]
        kept_tp, kept_matched = tp[:, :, columns], matched[:, :, columns]  # [A, T, c]
        kept_class, kept_counted = ranked_class[kept], ranked_counted[:, kept]  # [n], [A, n]
        for a in range(num_areas):
            p, r = _precision_at_recall(
                kept_tp[a],
                kept_matched[a],
                at,
                kept_counted[a],
                kept_class,
                num_regular[:, a],
                tp_needed[:, a],
            )
            precision[..., a, m], recall[..., a, m] = p, r
    return precision, recall


def _tp_needed_for_recall(num_regular: np.ndarray) -> np.ndarray:
    """``[K, A, R]``: the fewest TPs ``n`` with ``n / num_regular >= r``, in float64 arithmetic.

    This is where ``np.searchsorted(tp / npig, recThrs, side="left")`` lands in pycocotools.
    """
    total = np.maximum(num_regular, 1)[..., None].astype(np.float64)  # [K, A, 1]
    n = np.ceil(COCO_RECALL_THRESHOLDS * total)
    # The product can round either way; fix n with the same division pycocotools performs.
    n = np.where((n >= 1) & ((n - 1) / total >= COCO_RECALL_THRESHOLDS), n - 1, n)
    n = np.where(n / total < COCO_RECALL_THRESHOLDS, n + 1, n)
    return n.astype(np.int64)


def _precision_at_recall(
    tp: np.ndarray,
    matched: np.ndarray,
    at: np.ndarray,
    counted: np.ndarray,
    det_class: np.ndarray,
    num_regular: np.ndarray,
    tp_needed: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Precision at the 101 recall thresholds and final recall, every class and IoU threshold.

    Args:
        tp, matched: ``[T, c]`` for the candidate detections, which sit at positions ``at``
            (``[c]``) of the ranked list (ranked by class, then score).
        counted: ``[n]`` whether each ranked detection counts as an FP when unmatched (it is
            inside the area range).
        det_class: ``[n]`` class index of each ranked detection (sorted).
        num_regular: ``[K]`` non-ignored GTs per class; ``tp_needed``: ``[K, R]``.

    Returns:
        Precision ``[T, R, K]`` and recall ``[T, K]``.

    Only the true positives matter: precision peaks at each TP and drops at FPs, so the
    interpolated precision at recall ``>= r`` is the best precision at or after the TP that first
    reaches ``r``. A class's running counts are differences of running counts over the whole
    ranked list.
    """
    num_t, num_k = tp.shape[0], len(num_regular)
    start = np.searchsorted(det_class, np.arange(num_k))  # [K] first position of each class
    candidate_start = np.searchsorted(at, start)  # [K] first candidate column of each class
    plain_fp = counted.copy()
    plain_fp[at] = False  # the others are unmatched at every threshold
    plain_fp_count = np.r_[0, np.cumsum(plain_fp)]  # [n + 1]
    zeros = np.zeros((num_t, 1), dtype=np.int64)
    tp_cum = np.concatenate([zeros, np.cumsum(tp, axis=1)], axis=1)  # [T, c + 1]
    fp_cum = np.concatenate([zeros, np.cumsum(~matched & counted[at], axis=1)], axis=1)
    t, j = np.nonzero(tp)  # every TP, ordered by (threshold, class, score)
    k = det_class[at[j]]
    first = candidate_start[k]
    tp_count = tp_cum[t, j + 1] - tp_cum[t, first]  # [E] TPs so far in its class: 1, 2, ...
    fp_count = (fp_cum[t, j + 1] - fp_cum[t, first]) + (
        plain_fp_count[at[j]] - plain_fp_count[start[k]]
    )  # [E] FPs ranked above it in its class
    event_precision = tp_count / (fp_count + tp_count + np.spacing(1))  # pycocotools' formula
    segment = t * num_k + k  # [E] sorted: one segment per (threshold, class)
    envelope = np.append(_segment_suffix_max(event_precision, segment), 0.0)  # [E + 1]
    num_tp = np.bincount(segment, minlength=num_t * num_k).reshape(num_t, num_k)  # [T, K]
    first_event = (np.cumsum(num_tp) - num_tp.ravel()).reshape(num_t, num_k)  # [T, K]
    needed = np.maximum(tp_needed, 1)[None]  # [1, K, R]; r = 0 reads the first TP as well
    reached = needed <= num_tp[:, :, None]  # [T, K, R]
    index = np.where(reached, first_event[:, :, None] + needed - 1, len(envelope) - 1)
    precision = envelope[index]  # [T, K, R]; 0 where recall r is never reached
    has_gt = num_regular > 0
    precision[:, ~has_gt, :] = -1
    recall = np.where(has_gt, num_tp / np.maximum(num_regular, 1), -1.0)  # [T, K]
    return precision.transpose(0, 2, 1), recall


def _segment_suffix_max(values: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """``max(values[i:end of i's segment])`` for sorted segment ids, exactly, without a loop.

    Values are replaced by their rank among the distinct values and offset by segment so that a
    running maximum from the right restarts at every segment boundary.
    """
    if len(values) == 0:
        return values
    distinct, rank = np.unique(values, return_inverse=True)
    offset = (segment.max() - segment) * len(distinct)  # earlier segments get larger offsets
    running = np.maximum.accumulate((offset + rank)[::-1])[::-1]
    return distinct[running - offset]


def _coco_summarize(precision: np.ndarray, recall: np.ndarray) -> list[float]:
    """COCOeval's ``summarize()``: the twelve means, over entries that are not -1."""

    def mean(values: np.ndarray) -> float:
        valid = values[values > -1]
        return float(np.mean(valid)) if valid.size else -1.0

    area = {name: i for i, name in enumerate(COCO_AREA_RANGES)}
    iou_50 = np.where(COCO_IOU_THRESHOLDS == 0.5)[0]
    iou_75 = np.where(COCO_IOU_THRESHOLDS == 0.75)[0]
    last = len(COCO_MAX_DETECTIONS) - 1  # 100 detections
    return [
        mean(precision[:, :, :, area["all"], last]),
        mean(precision[iou_50][:, :, :, area["all"], last]),
        mean(precision[iou_75][:, :, :, area["all"], last]),
        mean(precision[:, :, :, area["small"], last]),
        mean(precision[:, :, :, area["medium"], last]),
        mean(precision[:, :, :, area["large"], last]),
        *(mean(recall[:, :, area["all"], m]) for m in range(len(COCO_MAX_DETECTIONS))),
        mean(recall[:, :, area["small"], last]),
        mean(recall[:, :, area["medium"], last]),
        mean(recall[:, :, area["large"], last]),
    ]


def _coco_per_class_ap(precision: np.ndarray) -> np.ndarray:
    """``[K]`` AP@[.50:.95] of each class (all areas, 100 detections), -1 without ground truth."""
    per_class = precision[:, :, :, 0, -1]  # [T, R, K]
    has_gt = (per_class > -1).all(axis=(0, 1))
    return np.where(has_gt, per_class.mean(axis=(0, 1)), -1.0)
