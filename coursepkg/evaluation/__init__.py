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
ignored objects       "difficult"       VOC: "difficult",    crowd regions, absorb many
                                        Padilla: none        detections
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

Modules: :mod:`~coursepkg.evaluation.ap` (AP of one curve), :mod:`~coursepkg.evaluation.voc`
(VOC matching and per-class AP), :mod:`~coursepkg.evaluation.coco` (COCO mAP/mAR equal to
pycocotools, vectorised), :mod:`~coursepkg.evaluation.coco_reference` (the same numbers, one image
and class at a time, written to be read; the chapter shows it),
:mod:`~coursepkg.evaluation.error_analysis` (TIDE's six error types and the AP each costs, equal
to the authors' ``tidecv``). This package imports only :mod:`coursepkg.ops`.

Chapter: book/04_evaluation
"""

from coursepkg.evaluation.ap import (
    AP_METHODS,
    COCO_RECALL_THRESHOLDS,
    VOC_RECALL_POINTS,
    PrecisionRecall,
    average_precision,
    precision_recall,
)
from coursepkg.evaluation.coco import (
    COCO_AREA_RANGES,
    COCO_IOU_THRESHOLDS,
    COCO_MAX_DETECTIONS,
    COCO_STAT_NAMES,
    MeanAveragePrecision,
)
from coursepkg.evaluation.coco_reference import coco_evaluate_reference
from coursepkg.evaluation.error_analysis import ERROR_TYPES, ErrorBreakdown, error_breakdown
from coursepkg.evaluation.voc import (
    DetectionMatch,
    VOCResult,
    match_detections,
    voc_average_precision,
)

__all__ = [
    "AP_METHODS",
    "VOC_RECALL_POINTS",
    "PrecisionRecall",
    "average_precision",
    "precision_recall",
    "COCO_AREA_RANGES",
    "COCO_IOU_THRESHOLDS",
    "COCO_MAX_DETECTIONS",
    "COCO_RECALL_THRESHOLDS",
    "COCO_STAT_NAMES",
    "MeanAveragePrecision",
    "coco_evaluate_reference",
    "ERROR_TYPES",
    "ErrorBreakdown",
    "error_breakdown",
    "DetectionMatch",
    "VOCResult",
    "match_detections",
    "voc_average_precision",
]
