"""Where the AP goes: TIDE's six error types and the AP gained by fixing each.

TIDE (Bolya et al., "TIDE: A General Toolbox for Identifying Object Detection Errors", ECCV 2020)
explains a detector's missing AP at one IoU threshold. Every detection that is not a true positive
(TP), and every object no detection found, gets exactly one error type. With ``t_f`` the
foreground IoU (``fg_iou_thresh``, 0.5) and ``t_b`` the background IoU (``bg_iou_thresh``, 0.1),
a false positive (FP) is, testing in this order (the paper's "main error types"):

==================  ======================================================================
error type          the FP ...
==================  ======================================================================
localisation        overlaps an object of its class with ``t_b <= IoU <= t_f`` (the best one)
classification      overlaps an object of another class with ``IoU >= t_f``
duplicate           overlaps, with ``IoU >= t_f``, an object of its class a higher-scored
                    detection already took
background          overlaps every object with ``IoU <= t_b``
both                is none of the above (wrong class *and* poorly placed, ``t_b < IoU < t_f``)
missed              (an object, not a detection) was found by no detection and no
                    classification or localisation error points at it
==================  ======================================================================

The damage of a type is ``ΔAP = AP(type fixed) - AP``: each error of that type is corrected by
an oracle and AP is computed again, every other error left as it is. The paper's oracles:

* classification, localisation: the FP becomes a TP of the object it points at (in that object's
  class), provided the object was found by nobody; if several such FPs point at one object, only
  the highest-scored one (of either type) becomes a TP. The others are removed.
* duplicate, background, both: the FP is removed.
* missed: the object is removed from the ground truth (recall gets the credit, precision none).

Like the paper, AP here is COCO-style at one IoU: 101 recall points ``0, 0.01, ..., 1.00``, mean
over the classes that have an object or a detection (a class with detections but no object
counts as AP 0). TIDE keeps the best ``detections_per_img`` detections of each image over all
classes together and clips a negative ΔAP to 0 (a binning effect, says its code); so does this
module. It is tested against the authors' package ``tidecv`` (the tests give both the same seeded
random detections and compare the six ΔAP to 1e-9 AP points).

Shapes::

    one image's preds    {"boxes": [D, 4] xyxy float, "scores": [D] float, "labels": [D] int}
    one image's targets  {"boxes": [G, 4] xyxy float, "labels": [G] int,
                          "iscrowd": [G] bool or 0/1 int (optional)}
    confusion            [K + 1, K + 1] int64: rows true class (K: background), columns predicted
                         class (K: none, the object was missed)

Chapter: book/04_evaluation
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from coursepkg.evaluation.ap import _hundred_one_point_ap
from coursepkg.evaluation.inputs import images_from_dicts
from coursepkg.ops.boxes import box_iou
from coursepkg.ops.validation import check_int, check_probability

ERROR_TYPES = ("classification", "localisation", "both", "duplicate", "background", "missed")
# TIDE samples recall at i / 100 (pycocotools uses np.linspace, which differs in the last bit:
# 3 * 0.01 != 0.03). It matters only when a recall equals k / 100 exactly, as it often does.
TIDE_RECALL_THRESHOLDS = np.arange(101) / 100  # [101]

_TP = -1  # kind of a true positive; an error's kind is its index in ERROR_TYPES
_CLS, _LOC, _BOTH, _DUPE, _BKG, _MISS = range(6)


@dataclass(frozen=True)
class ErrorBreakdown:
    """Result of :func:`error_breakdown`. AP and ΔAP are fractions in ``[0, 1]`` (not percent)."""

    ap: float  # mAP at fg_iou_thresh, 101-point, over the classes present
    delta_ap: dict[str, float]  # ERROR_TYPES -> AP gained by fixing every error of that type
    counts: dict[str, int]  # ERROR_TYPES -> number of errors (detections; objects for "missed")
    num_true_positives: int
    confusion: Tensor  # [K + 1, K + 1] int64, see the module docstring
    tp_iou: Tensor  # [T] float64: IoU of each true positive with its object
    tp_labels: Tensor  # [T] int64: class of each true positive


@dataclass
class _Records:
    """Every kept detection and every object of the dataset, after matching (numpy, flat)."""

    det_label: list[int]
    det_score: list[float]
    det_kind: list[int]  # _TP or an error index
    det_gt: list[int]  # global object index (TP, classification, localisation), else -1
    det_iou: list[float]  # IoU with the matched object (TPs)
    gt_used: np.ndarray  # [G] bool: some detection is a TP of it
    gt_real: np.ndarray  # [G] bool: an object, not a crowd region


def _crowd_overlap(boxes: Tensor, crowd: Tensor) -> Tensor:
    """``[D, C]`` intersection over the detection's area (COCO's IoU with a crowd region)."""
    lt = torch.maximum(boxes[:, None, :2], crowd[None, :, :2])  # [D, C, 2]
    rb = torch.minimum(boxes[:, None, 2:], crowd[None, :, 2:])  # [D, C, 2]
    inter = (rb - lt).clamp(min=0).prod(dim=2)  # [D, C]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # [D]
    return inter / area[:, None].clamp(min=torch.finfo(boxes.dtype).tiny)


def _classify_fp(iou: np.ndarray, same: np.ndarray, used: np.ndarray, t_f: float, t_b: float):
    """Error type and object of one FP, from its IoU row ``[G]``, in TIDE's order."""
    if len(iou) == 0:
        return _BKG, -1
    same_iou = np.where(same, iou, 0.0)  # [G]
    j = int(same_iou.argmax())
    if t_b <= same_iou[j] <= t_f:
        return _LOC, j
    other_iou = np.where(same, 0.0, iou)  # [G]
    j = int(other_iou.argmax())
    if other_iou[j] >= t_f:
        return _CLS, j
    if np.where(used, same_iou, 0.0).max() >= t_f:
        return _DUPE, -1
    if iou.max() <= t_b:
        return _BKG, -1
    return _BOTH, -1


def _match_image(images, det: np.ndarray, gt: np.ndarray, crowd: np.ndarray, t_f, t_b, rec):
    """Greedy matching of one image's kept detections (descending score), then their errors."""
    det_boxes = torch.from_numpy(images.det_boxes[det])
    iou = box_iou(det_boxes, torch.from_numpy(images.gt_boxes[gt])).numpy()  # [D, G]
    det_labels, gt_labels = images.det_labels[det], images.gt_labels[gt]
    same = det_labels[:, None] == gt_labels[None, :]  # [D, G]
    used = np.zeros(len(gt), dtype=bool)  # [G]
    match = np.full(len(det), -1)  # [D]
    for d in range(len(det)):  # each detection takes its best free object of its class
        free_iou = np.where(same[d] & ~used, iou[d], 0.0)  # [G]
        if len(gt) and free_iou.max() >= t_f:
            match[d] = int(free_iou.argmax())
            used[match[d]] = True
    ignored = np.zeros(len(det), dtype=bool)  # unmatched, inside a crowd region of its class
    if len(crowd):
        ioa = _crowd_overlap(det_boxes, torch.from_numpy(images.gt_boxes[crowd])).numpy()
        same_crowd = det_labels[:, None] == images.gt_labels[crowd][None, :]  # [D, C]
        ignored = (match < 0) & (np.where(same_crowd, ioa, 0.0) > t_f).any(axis=1)
    for d in np.flatnonzero(~ignored):
        if match[d] >= 0:
            kind, j, overlap = _TP, match[d], iou[d, match[d]]
        else:
            kind, j = _classify_fp(iou[d], same[d], used, t_f, t_b)
            overlap = 0.0
        rec.det_label.append(int(det_labels[d]))
        rec.det_score.append(float(images.det_scores[det[d]]))
        rec.det_kind.append(kind)
        rec.det_gt.append(int(gt[j]) if j >= 0 else -1)
        rec.det_iou.append(float(overlap))
    rec.gt_used[gt[used]] = True


def _mean_ap(
    labels: np.ndarray, scores: np.ndarray, tp: np.ndarray, num_gt: dict[int, int]
) -> float:
    """TIDE's mAP: 101-point AP per class with an object or a detection, averaged; 0 if none.

    The 101-point AP is Eq. (eq-ap-101-point) of book/04_evaluation, sampled at ``i / 100``.
    """
    aps = []
    for c in sorted(set(num_gt) | set(labels.tolist())):
        mine = labels == c
        if not mine.any() and num_gt.get(c, 0) == 0:
            continue  # an empty class is left out of the mean
        if num_gt.get(c, 0) == 0:
            aps.append(0.0)  # detections and no object: AP 0
            continue
        order = np.argsort(-scores[mine], kind="stable")  # [D_c]
        hits = torch.from_numpy(tp[mine][order].astype(np.float64)).cumsum(0)  # [D_c]
        precision = hits / torch.arange(1, len(hits) + 1, dtype=torch.float64)
        recall = hits / num_gt[c]
        aps.append(float(_hundred_one_point_ap(recall, precision, TIDE_RECALL_THRESHOLDS)))
    return float(np.mean(aps)) if aps else 0.0


class _Flat(NamedTuple):
    """The records as arrays: every kept, not ignored detection in matching order, every object."""

    label: np.ndarray  # [N] int64
    score: np.ndarray  # [N] float64
    kind: np.ndarray  # [N] int64: _TP or an error index
    gt: np.ndarray  # [N] int64: global object index (TP, classification, localisation), else -1
    iou: np.ndarray  # [N] float64: IoU with the matched object (TPs), else 0
    gt_label: np.ndarray  # [G] int64
    gt_used: np.ndarray  # [G] bool
    gt_real: np.ndarray  # [G] bool


def _best_fix(flat: _Flat) -> np.ndarray:
    """``[N]`` bool: per free object, its highest-scored classification/localisation error.

    Several errors can point at one object; the oracle turns only the best one (first on a score
    tie) into a TP, and removes the others (TIDE's rule, whatever their type).
    """
    best_score: dict[int, float] = {}
    best_det: dict[int, int] = {}
    for d in np.flatnonzero((flat.kind == _CLS) | (flat.kind == _LOC)):
        g = int(flat.gt[d])
        if not flat.gt_used[g] and flat.score[d] > best_score.get(g, -np.inf):
            best_score[g], best_det[g] = flat.score[d], d
    best = np.zeros(len(flat.kind), dtype=bool)
    best[list(best_det.values())] = True
    return best


def _missed_objects(flat: _Flat) -> np.ndarray:
    """``[G]`` bool: objects nobody found and no classification/localisation error points at."""
    pointed = np.zeros(len(flat.gt_label), dtype=bool)
    pointed[flat.gt[(flat.kind == _CLS) | (flat.kind == _LOC)]] = True
    return ~flat.gt_used & ~pointed & flat.gt_real


def _fixed_map(flat: _Flat, num_gt: dict[int, int], kind: int) -> float:
    """mAP after the oracle fixes every error of one ``kind``, the others left alone."""
    labels, tp, keep = flat.label, flat.kind == _TP, np.ones(len(flat.kind), dtype=bool)
    counts = dict(num_gt)
    if kind == _MISS:  # the missed objects leave the ground truth
        for c in flat.gt_label[_missed_objects(flat)].tolist():
            counts[c] -= 1
    elif kind in (_CLS, _LOC):  # the best error of a free object becomes its TP, the rest go
        mine, best = flat.kind == kind, _best_fix(flat)
        labels = np.where(mine & best, flat.gt_label[np.maximum(flat.gt, 0)], labels)
        tp, keep = tp | (mine & best), ~mine | best
    else:  # duplicates, background and "both" errors are removed
        keep = flat.kind != kind
    return _mean_ap(labels[keep], flat.score[keep], tp[keep], counts)


def error_breakdown(
    preds: Sequence[Mapping[str, Tensor]],
    targets: Sequence[Mapping[str, Tensor]],
    *,
    fg_iou_thresh: float = 0.5,
    bg_iou_thresh: float = 0.1,
    detections_per_img: int = 100,
    num_classes: int | None = None,
) -> ErrorBreakdown:
    """Break the AP lost by a detector into TIDE's six error types (Bolya et al., ECCV 2020).

    Per image, the best ``detections_per_img`` detections (all classes together, descending score,
    ties in input order) are matched greedily to the objects: each takes the free object of its
    class it overlaps most if that IoU is ``>= fg_iou_thresh``. Every other detection gets one
    error type, every object found by nobody is missed or the target of a classification or
    localisation error (the paper's definitions; see the module docstring). Then each type is
    fixed by its oracle and the mAP recomputed: ``ΔAP = max(AP_fixed - AP, 0)``. The types are
    fixed one at a time, never cumulatively, so the six ΔAP need not add up to ``1 - AP``.

    Crowd regions (``iscrowd``) are not objects: a detection they absorb (unmatched, same class,
    intersection over its own area ``> fg_iou_thresh``) counts nowhere, as in COCO. (``tidecv``
    leaves such detections out of AP too but still gives them an error type; the tests compare
    crowd-free data.) Score ties may be ordered differently from ``tidecv`` after a fix.

    Args:
        preds: one dict per image: ``"boxes"`` ``[D, 4]`` xyxy float, ``"scores"`` ``[D]`` float,
            ``"labels"`` ``[D]`` integer class ids.
        targets: one dict per image: ``"boxes"`` ``[G, 4]`` xyxy float, ``"labels"`` ``[G]`` int,
            optionally ``"iscrowd"`` ``[G]``.
        fg_iou_thresh: ``t_f``, IoU for a true positive (and for classification/duplicate errors).
        bg_iou_thresh: ``t_b``, IoU up to which a detection is on the background; ``<= t_f``.
        detections_per_img: detections kept per image (TIDE and COCO: 100).
        num_classes: size ``K`` of the confusion matrix; default: the largest label + 1.

    Returns:
        :class:`ErrorBreakdown`: AP and the six ΔAP as fractions (``tidecv`` prints percent), the
        count of each error type, the ``[K + 1, K + 1]`` confusion matrix (TPs on the diagonal,
        classification errors off it, background errors in row K, missed objects in column K),
        and the IoU and class of every TP.

    Raises:
        TypeError, ValueError: for malformed inputs (as :class:`MeanAveragePrecision`: the message
            names the image and field), thresholds outside ``[0, 1]`` or ``bg_iou_thresh >
            fg_iou_thresh``, ``detections_per_img < 1``, or a label ``>= num_classes``.

    Chapter: book/04_evaluation
    """
    t_f = check_probability(fg_iou_thresh, "fg_iou_thresh")
    t_b = check_probability(bg_iou_thresh, "bg_iou_thresh")
    if t_b > t_f:
        raise ValueError(f"bg_iou_thresh must be <= fg_iou_thresh, got {t_b} > {t_f}")
    max_dets = check_int(detections_per_img, "detections_per_img", low=1)
    images = images_from_dicts(preds, targets)
    num_labels = int(max(images.det_labels.max(initial=-1), images.gt_labels.max(initial=-1))) + 1
    if num_classes is None:
        num_classes = num_labels
    num_classes = check_int(num_classes, "num_classes", low=0)
    if num_labels > num_classes:
        raise ValueError(
            f"num_classes must exceed every label, got {num_classes} <= {num_labels - 1}"
        )

    rec = _Records(
        [], [], [], [], [], np.zeros(len(images.gt_labels), dtype=bool), ~images.gt_crowd
    )
    det_order = np.lexsort(
        (np.arange(len(images.det_scores)), -images.det_scores, images.det_image)
    )
    det_image = images.det_image[det_order]
    for i in range(len(preds)):
        det = det_order[det_image == i][:max_dets]  # [D] best first
        on_image = images.gt_image == i
        gt, crowd = (
            np.flatnonzero(on_image & rec.gt_real),
            np.flatnonzero(on_image & images.gt_crowd),
        )
        _match_image(images, det, gt, crowd, t_f, t_b, rec)

    flat = _Flat(
        label=np.asarray(rec.det_label, dtype=np.int64),
        score=np.asarray(rec.det_score, dtype=np.float64),
        kind=np.asarray(rec.det_kind, dtype=np.int64),
        gt=np.asarray(rec.det_gt, dtype=np.int64),
        iou=np.asarray(rec.det_iou, dtype=np.float64),
        gt_label=images.gt_labels,
        gt_used=rec.gt_used,
        gt_real=rec.gt_real,
    )
    labels, counted = np.unique(flat.gt_label[flat.gt_real], return_counts=True)
    num_gt = {int(c): int(n) for c, n in zip(labels, counted, strict=True)}
    ap = _mean_ap(flat.label, flat.score, flat.kind == _TP, num_gt)
    delta = {name: max(_fixed_map(flat, num_gt, k) - ap, 0.0) for k, name in enumerate(ERROR_TYPES)}
    missed = _missed_objects(flat)
    counts = {name: int((flat.kind == k).sum()) for k, name in enumerate(ERROR_TYPES)}
    counts["missed"] = int(missed.sum())
    tp = flat.kind == _TP
    return ErrorBreakdown(
        ap=ap,
        delta_ap=delta,
        counts=counts,
        num_true_positives=int(tp.sum()),
        confusion=_confusion(flat, missed, num_classes),
        tp_iou=torch.from_numpy(flat.iou[tp]),
        tp_labels=torch.from_numpy(flat.label[tp]),
    )


def _confusion(flat: _Flat, missed: np.ndarray, num_classes: int) -> Tensor:
    """``[K + 1, K + 1]``: rows the true class (K: background), columns the predicted (K: none)."""
    confusion = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    found = (flat.kind == _TP) | (flat.kind == _CLS)  # TPs on the diagonal, class mix-ups off it
    background = flat.kind == _BKG
    np.add.at(confusion, (flat.gt_label[flat.gt[found]], flat.label[found]), 1)
    np.add.at(confusion, (num_classes, flat.label[background]), 1)
    np.add.at(confusion, (flat.gt_label[missed], num_classes), 1)
    return torch.from_numpy(confusion)
