"""COCO's box mAP and mAR (``MeanAveragePrecision``), vectorised over images, equal to pycocotools.

Shapes::

    one image's preds    {"boxes": [D, 4] xyxy float, "scores": [D] float, "labels": [D] int}
    one image's targets  {"boxes": [G, 4] xyxy float, "labels": [G] int,
                          "iscrowd": [G] bool or 0/1 int (optional), "area": [G] float (optional)}

Chapter: book/04_evaluation
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from coursepkg.evaluation.ap import COCO_RECALL_THRESHOLDS
from coursepkg.evaluation.inputs import Images, images_from_dicts

# COCO's evaluation parameters, built exactly as pycocotools builds them (``Params.setDetParams``):
# np.linspace rather than arange or torch.linspace, so every threshold has the same bits.
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # [T] = 0.50, 0.55, ..., 0.95
COCO_MAX_DETECTIONS = (1, 10, 100)  # [M] detections kept per image and class, by score
# Object areas in pixels^2; both bounds inclusive, so an area of exactly 32^2 is small AND medium.
COCO_AREA_RANGES = {
    "all": (0.0, 1e5**2),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e5**2),
}

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
    (<= 100 steps), and accumulates each class with cumulative sums over one sorted array. It is
    tested equal to :func:`~coursepkg.evaluation.coco_reference.coco_evaluate_reference`, the
    loop over images and classes that the chapter shows (and to pycocotools).

    Chapter: book/04_evaluation
    """

    def __init__(self) -> None:
        self._batches: list[Images] = []
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
        self._batches.append(images_from_dicts(preds, targets, self._num_images))
        self._num_images += len(preds)

    def compute(self) -> dict[str, float | Tensor]:
        """The twelve COCO numbers, plus ``classes`` and ``map_per_class`` (see the class doc).

        With no images (or no ground truth at all) every number is -1 and ``classes`` lists only
        the predicted labels.
        """
        if self._batches:
            images = Images(*map(np.concatenate, zip(*self._batches, strict=True)))
        else:
            images = images_from_dicts([], [])
        precision, recall, classes = _coco_evaluate(images)
        stats = _coco_summarize(precision, recall)
        result: dict[str, float | Tensor] = dict(zip(COCO_STAT_NAMES, stats, strict=True))
        result["classes"] = torch.from_numpy(classes)
        result["map_per_class"] = torch.from_numpy(_coco_per_class_ap(precision))
        return result


def _coco_evaluate(images: Images) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def _rank_detections(images: Images, classes: np.ndarray) -> tuple[np.ndarray, ...]:
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
