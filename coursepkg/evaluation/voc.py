"""PASCAL VOC evaluation: greedy matching of detections to ground truth, and per-class AP.

Shapes::

    boxes, gt_boxes      [D, 4], [G, 4]  xyxy float
    scores               [D]

Chapter: book/04_evaluation
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from coursepkg.evaluation.ap import AP_METHODS, average_precision, precision_recall
from coursepkg.evaluation.inputs import images_from_dicts
from coursepkg.ops.boxes import box_iou
from coursepkg.ops.validation import check_boxes


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
    (``GetPascalVOCMetrics``); COCO differs (see :class:`MeanAveragePrecision`). The chapter
    builds it step by step (section "True and false positives" of book/04_evaluation) and checks
    it equals this function; its TP flags feed Eq. (eq-precision-recall) there.

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
    (:func:`precision_recall`, recall over all the class's GT objects; Eq. (eq-precision-recall)
    of book/04_evaluation) and the AP from :func:`average_precision`. With
    ``iou_threshold=0.3`` and ``legacy_plus_one=True`` it gives the numbers of the notes' ``AP``
    function (the chapter checks it on random datasets). mAP is the mean over classes with ground truth. Crowd flags and
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
    if method not in AP_METHODS:
        raise ValueError(f"method must be one of {', '.join(AP_METHODS)}; got {method!r}")
    _check_iou_threshold(iou_threshold)
    images_from_dicts(preds, targets)  # validation only
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


