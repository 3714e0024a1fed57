"""COCO box evaluation written to be read: pycocotools' three steps, one image and class at a time.

:class:`~coursepkg.evaluation.coco.MeanAveragePrecision` computes the same twelve numbers fast
(vectorised over images); the tests check that it equals :func:`coco_evaluate_reference`, and
that both equal pycocotools, on seeded random detections and edge cases (crowds, area ranges,
ties, empty images). The steps are named like ``COCOeval``'s methods:

1. :func:`evaluate_image`: greedy matching of one image's detections of one class to its ground
   truth, for one IoU threshold and one area range (``COCOeval.evaluateImg``);
2. :func:`accumulate`: precision at 101 recall points and the final recall, for one class, IoU
   threshold, area range and number of detections per image (``COCOeval.accumulate``);
3. :func:`coco_evaluate_reference`: the means of ``COCOeval.summarize``.

Shapes::

    one image's preds    {"boxes": [D, 4] xyxy float, "scores": [D] float, "labels": [D] int}
    one image's targets  {"boxes": [G, 4] xyxy float, "labels": [G] int,
                          "iscrowd": [G] (optional), "area": [G] (optional)}

Chapter: book/04_evaluation
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from coursepkg.evaluation.ap import COCO_RECALL_THRESHOLDS
from coursepkg.evaluation.coco import (
    COCO_AREA_RANGES,
    COCO_IOU_THRESHOLDS,
    COCO_MAX_DETECTIONS,
    COCO_STAT_NAMES,
)


def _iou(det: list[float], gt: list[float], crowd: bool) -> float:
    """IoU of two xyxy boxes; for a crowd GT, the intersection over the detection's area."""
    inter_w = max(0.0, min(det[2], gt[2]) - max(det[0], gt[0]))
    inter_h = max(0.0, min(det[3], gt[3]) - max(det[1], gt[1]))
    inter = inter_w * inter_h
    det_area = (det[2] - det[0]) * (det[3] - det[1])
    union = det_area if crowd else det_area + (gt[2] - gt[0]) * (gt[3] - gt[1]) - inter
    return inter / union if inter > 0 else 0.0


def evaluate_image(dets: list, gts: list, iou_threshold: float, area_range: tuple) -> list:
    """Match one image's detections of one class, best score first (``COCOeval.evaluateImg``).

    ``dets``: ``(box, score)`` pairs sorted by decreasing score (at most 100); ``gts``:
    ``(box, crowd, area)`` triples. A GT is *ignored* if it is a crowd or its area is outside
    ``area_range``. Each detection takes the free GT with the highest IoU ``>= iou_threshold``
    (the later one on a tie), preferring regular GTs to ignored ones; a crowd is never used up.
    Returns one ``(score, matched, ignored)`` per detection: a detection matched to an ignored
    GT, or unmatched with its own area outside the range, is ignored (neither TP nor FP).
    """
    ignored = [crowd or not area_range[0] <= area <= area_range[1] for _, crowd, area in gts]
    gts = sorted(zip(gts, ignored, strict=True), key=lambda gt: gt[1])  # regular GTs first (stable)
    taken = [False] * len(gts)
    results = []
    for box, score in dets:
        best, best_iou = -1, min(iou_threshold, 1 - 1e-10)
        for g, ((gt_box, crowd, _), gt_ignored) in enumerate(gts):
            if taken[g] and not crowd:
                continue
            if best > -1 and not gts[best][1] and gt_ignored:
                break  # a regular match is never traded for an ignored one
            iou = _iou(box, gt_box, crowd)
            if iou >= best_iou:
                best, best_iou = g, iou
        if best > -1:
            taken[best] = True
            results.append((score, True, gts[best][1]))
        else:
            area = (box[2] - box[0]) * (box[3] - box[1])
            results.append((score, False, not area_range[0] <= area <= area_range[1]))
    return results


def accumulate(per_image: list[list], num_regular: int, max_dets: int) -> tuple[np.ndarray, float]:
    """Precision at the 101 recall thresholds and the final recall (``COCOeval.accumulate``).

    ``per_image``: :func:`evaluate_image`'s results for every image (its best ``max_dets``
    detections are used); ``num_regular``: the number of GTs that are not ignored (> 0).
    """
    ranked = [d for results in per_image for d in results[:max_dets]]
    ranked.sort(key=lambda d: -d[0])  # stable: equal scores keep image order
    matched = np.array([m for _, m, ignored in ranked if not ignored], dtype=bool)  # TP or FP
    tp, fp = np.cumsum(matched), np.cumsum(~matched)
    recall = tp / num_regular
    precision = tp / (tp + fp + np.spacing(1))
    for i in range(len(precision) - 1, 0, -1):  # make precision non-increasing from the right
        precision[i - 1] = max(precision[i - 1], precision[i])
    first = np.searchsorted(recall, COCO_RECALL_THRESHOLDS, side="left")  # first point >= r
    at_recall = np.array([precision[i] if i < len(precision) else 0.0 for i in first])
    return at_recall, (recall[-1] if len(recall) else 0.0)


def coco_evaluate_reference(
    preds: Sequence[Mapping], targets: Sequence[Mapping]
) -> dict[str, float]:
    """COCO's twelve box AP/AR numbers (``COCOeval.summarize``), one image and class at a time.

    Follows Lin et al. 2014 ("Microsoft COCO", §5 and the detection evaluation page) as
    implemented in ``pycocotools/cocoeval.py``. The tests check that the fast
    :class:`~coursepkg.evaluation.coco.MeanAveragePrecision` returns the same numbers.

    Returns:
        ``{name: value}`` for the names of ``COCO_STAT_NAMES``; -1 where nothing is averaged.
    """
    images = []  # per image: {class: (dets sorted by score, gts)}
    for pred, target in zip(preds, targets, strict=True):
        crowd = target.get("iscrowd", [0] * len(target["boxes"]))
        area = target.get("area", [(b[2] - b[0]) * (b[3] - b[1]) for b in target["boxes"]])
        gts = zip(target["boxes"].tolist(), target["labels"].tolist(), crowd, area, strict=True)
        dets = zip(
            pred["boxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist(), strict=True
        )
        classes = {}
        for box, label, is_crowd, gt_area in gts:
            classes.setdefault(label, ([], []))[1].append((box, bool(is_crowd), float(gt_area)))
        for box, score, label in sorted(dets, key=lambda d: -d[1]):  # stable: ties keep order
            classes.setdefault(label, ([], []))[0].append((box, score))
        images.append({c: (d[: max(COCO_MAX_DETECTIONS)], g) for c, (d, g) in classes.items()})
    labels = sorted({label for image in images for label in image})
    shape = (len(COCO_IOU_THRESHOLDS), len(labels), len(COCO_AREA_RANGES), len(COCO_MAX_DETECTIONS))
    precision, recall = -np.ones((*shape, len(COCO_RECALL_THRESHOLDS))), -np.ones(shape)
    for t, threshold in enumerate(COCO_IOU_THRESHOLDS):
        for k, label in enumerate(labels):
            for a, area_range in enumerate(COCO_AREA_RANGES.values()):
                pairs = [image.get(label, ([], [])) for image in images]
                per_image = [evaluate_image(d, g, threshold, area_range) for d, g in pairs]
                num_regular = sum(
                    not crowd and area_range[0] <= area <= area_range[1]
                    for _, gts in pairs
                    for _, crowd, area in gts
                )
                for m, max_dets in enumerate(COCO_MAX_DETECTIONS):
                    if num_regular > 0:  # else -1: nothing to find
                        precision[t, k, a, m], recall[t, k, a, m] = accumulate(
                            per_image, num_regular, max_dets
                        )
    return summarize(precision, recall)


def summarize(precision: np.ndarray, recall: np.ndarray) -> dict[str, float]:
    """``COCOeval.summarize``: means over the entries that are not -1.

    ``precision`` is ``[T, K, A, M, R]`` and ``recall`` ``[T, K, A, M]`` (IoU thresholds,
    classes, area ranges, max detections, recall thresholds).
    """

    def mean(values: np.ndarray) -> float:
        valid = values[values > -1]
        return float(np.mean(valid)) if valid.size else -1.0

    iou_50, iou_75 = (list(np.round(COCO_IOU_THRESHOLDS, 2)).index(t) for t in (0.5, 0.75))
    stats = [mean(precision[:, :, 0, 2]), mean(precision[iou_50, :, 0, 2])]
    stats += [mean(precision[iou_75, :, 0, 2])]
    stats += [mean(precision[:, :, a, 2]) for a in (1, 2, 3)]  # small, medium, large
    stats += [mean(recall[:, :, 0, m]) for m in (0, 1, 2)]  # 1, 10, 100 detections
    stats += [mean(recall[:, :, a, 2]) for a in (1, 2, 3)]
    return dict(zip(COCO_STAT_NAMES, stats, strict=True))
