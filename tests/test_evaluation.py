"""Tests of coursepkg.evaluation: the notes' worked examples, slow references transcribed from
Padilla et al.'s Object-Detection-Metrics and pycocotools (inside this file), and pycocotools'
COCOeval itself as the oracle of MeanAveragePrecision."""

from __future__ import annotations

import contextlib
import io
import sys

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch.testing import assert_close

from coursepkg.evaluation import (
    AP_METHODS,
    COCO_STAT_NAMES,
    MeanAveragePrecision,
    average_precision,
    match_detections,
    precision_recall,
    voc_average_precision,
)
from coursepkg.evaluation.coco_reference import coco_evaluate_reference

# --------------------------------------------------------------------------------------------
# Slow references (straight transcriptions, loops and all)
# --------------------------------------------------------------------------------------------


def padilla_all_point(rec, prec):
    """Padilla et al., ``Evaluator.CalculateAveragePrecision``."""
    mrec = [0.0, *rec, 1.0]
    mpre = [0.0, *prec, 0.0]
    for i in range(len(mpre) - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    ii = [i + 1 for i in range(len(mrec) - 1) if mrec[1:][i] != mrec[0:-1][i]]
    return sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in ii)


def padilla_eleven_point(rec, prec):
    """Padilla et al., ``Evaluator.ElevenPointInterpolatedAP``."""
    rho = []
    for r in np.linspace(0, 1, 11)[::-1]:
        greater = np.argwhere(np.array(rec) >= r)
        rho.append(max(prec[greater.min() :]) if greater.size else 0)
    return sum(rho) / 11


def coco_101_point(rc, pr):
    """The per-curve core of pycocotools' ``COCOeval.accumulate``."""
    pr, q = list(pr), [0.0] * 101
    for i in range(len(pr) - 1, 0, -1):
        if pr[i] > pr[i - 1]:
            pr[i - 1] = pr[i]
    inds = np.searchsorted(rc, np.linspace(0.0, 1.0, 101), side="left")
    with contextlib.suppress(IndexError):
        for ri, pi in enumerate(inds):
            q[ri] = pr[pi]
    return float(np.mean(q))


def padilla_iou(a, b):
    """Padilla's ``Evaluator.iou``: pixel-inclusive (+1), touching boxes intersect."""
    if a[0] > b[2] or b[0] > a[2] or a[3] < b[1] or a[1] > b[3]:
        return 0.0
    inter = (min(a[2], b[2]) - max(a[0], b[0]) + 1) * (min(a[3], b[3]) - max(a[1], b[1]) + 1)
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def padilla_voc(detections, ground_truths, iou_threshold):
    """Padilla's ``GetPascalVOCMetrics``: detections (image, class, score, box), GTs (image, class,
    box); returns {class: (tp list in rank order, npos)}."""
    out = {}
    for c in sorted({d[1] for d in detections} | {g[1] for g in ground_truths}):
        dects = sorted([d for d in detections if d[1] == c], key=lambda d: d[2], reverse=True)
        gts = {}
        for g in ground_truths:
            if g[1] == c:
                gts.setdefault(g[0], []).append(g)
        used = {image: [0] * len(v) for image, v in gts.items()}
        tp = []
        for d in dects:
            gt = gts.get(d[0], [])
            iou_max, j_max = sys.float_info.min, None
            for j, g in enumerate(gt):
                iou = padilla_iou(d[3], g[2])
                if iou > iou_max:
                    iou_max, j_max = iou, j
            if iou_max >= iou_threshold and used[d[0]][j_max] == 0:
                used[d[0]][j_max] = 1
                tp.append(True)
            else:
                tp.append(False)
        out[c] = (tp, sum(len(v) for v in gts.values()))
    return out


def coco_oracle(preds, targets):
    """pycocotools' COCOeval on the same images, built in memory.

    Image i gets id i + 1, annotation ids start at 1 (pycocotools reads id 0 as "unmatched"),
    boxes become [x, y, w, h], and every label seen in targets or predictions is a category.
    """
    labels = torch.cat([t["labels"] for t in targets] + [p["labels"] for p in preds]).tolist()
    images, annotations, results = [], [], []
    for i, (pred, target) in enumerate(zip(preds, targets, strict=True)):
        images.append({"id": i + 1})
        n = len(target["labels"])
        crowd = target["iscrowd"].tolist() if "iscrowd" in target else [0] * n
        area = target["area"].tolist() if "area" in target else [None] * n
        for (x1, y1, x2, y2), label, c, a in zip(
            target["boxes"].tolist(), target["labels"].tolist(), crowd, area, strict=True
        ):
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": label,
                    "bbox": [x1, y1, w, h],
                    "area": w * h if a is None else a,
                    "iscrowd": int(c),
                }
            )
        for (x1, y1, x2, y2), score, label in zip(
            pred["boxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist(), strict=True
        ):
            results.append(
                {
                    "image_id": i + 1,
                    "category_id": label,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": c} for c in sorted(set(labels))],
        }
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def ours(preds, targets):
    metric = MeanAveragePrecision()
    metric.update(preds, targets)
    return metric.compute()


def stats_of(result):
    return torch.tensor([result[name] for name in COCO_STAT_NAMES], dtype=torch.float64)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def f32(*rows):
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def image(boxes=(), scores=(), labels=()):
    return {
        "boxes": f32(*boxes),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def target(boxes=(), labels=(), **extra):
    out = {"boxes": f32(*boxes), "labels": torch.tensor(labels, dtype=torch.int64)}
    out.update({k: torch.tensor(v) for k, v in extra.items()})
    return out


# The lecture notes' AP example: one class, images '363', '297', '299'.
NOTES_PREDS = [
    image([[280, 69, 696, 435]], [0.92], [0]),
    image([[499, 286, 791, 455], [138, 173, 335, 330]], [0.77, 0.33], [0, 0]),
    image(),
]
NOTES_TARGETS = [
    target([[207, 108, 624, 474]], [0]),
    target([[106, 195, 303, 352], [548, 250, 841, 419]], [0, 0]),
    target([[434, 223, 715, 386]], [0]),
]


def random_dataset(seed: int, num_images: int = 24, num_classes: int = 4):
    """Seeded images with every case COCOeval treats specially, plus random ones.

    Coordinates on a 4-pixel grid and scores in steps of 0.1 make exact IoU and score ties common.
    """
    g = torch.Generator().manual_seed(seed)
    randint = lambda lo, hi, shape=(): torch.randint(lo, hi, shape, generator=g)  # noqa: E731
    sides = torch.tensor([8.0, 16.0, 32.0, 48.0, 96.0, 128.0, 200.0])
    preds, targets = [], []
    for i in range(num_images):
        num_gt = int(randint(0, 10))
        xy = randint(0, 40, (num_gt, 2)).float() * 4
        gt_boxes = torch.cat([xy, xy + sides[randint(0, 7, (num_gt, 2))]], dim=1)
        gt_labels = randint(0, num_classes, (num_gt,))
        many = i % 7 == 3  # some images with more than 100 detections
        num_det = int(randint(101, 160)) if many else int(randint(0, 30))
        if num_gt:
            source = randint(0, num_gt, (num_det,))
            jitter = (
                randint(-2, 3, (num_det, 4)).float()
                * 4
                * (torch.rand(num_det, 1, generator=g) < 0.7)
            )
            det_boxes = gt_boxes[source] + jitter
            det_labels = torch.where(
                torch.rand(num_det, generator=g) < 0.85,
                gt_labels[source],
                randint(0, num_classes, (num_det,)),
            )
        else:
            xy = randint(0, 40, (num_det, 2)).float() * 4
            det_boxes = torch.cat([xy, xy + 32], dim=1)
            det_labels = randint(0, num_classes, (num_det,))
        det_boxes = torch.cat(
            [
                det_boxes[:, :2].minimum(det_boxes[:, 2:]),
                det_boxes[:, :2].maximum(det_boxes[:, 2:]),
            ],
            1,
        )
        t = {
            "boxes": gt_boxes,
            "labels": gt_labels,
            "iscrowd": torch.rand(num_gt, generator=g) < 0.15,
        }
        if i % 5 == 1:  # an explicit area (COCO's mask area), different from the box area
            t["area"] = gt_boxes[:, 2:].sub(gt_boxes[:, :2]).prod(1) * (
                0.3 + torch.rand(num_gt, generator=g)
            )
        preds.append(
            {
                "boxes": det_boxes,
                "scores": randint(0, 11, (num_det,)).float() / 10,
                "labels": det_labels,
            }
        )
        targets.append(t)
    # Special images: empty; boxes of area exactly 32^2 and 96^2 (in two area ranges at once),
    # including unmatched detections of those areas; a class with predictions but no GT
    # (num_classes) and one with GT but no predictions (num_classes + 1).
    preds.append(image())
    targets.append(target())
    preds.append(
        image(
            [
                [0, 0, 32, 32],
                [100, 100, 196, 196],
                [300, 0, 332, 32],
                [0, 300, 96, 396],
                [5, 5, 9, 9],
            ],
            [0.5, 0.5, 0.7, 0.2, 0.9],
            [0, 0, 0, 0, num_classes],
        )
    )
    targets.append(
        target(
            [[0, 0, 32, 32], [100, 100, 196, 196], [200, 200, 210, 210]], [0, 0, num_classes + 1]
        )
    )
    return preds, targets


# --------------------------------------------------------------------------------------------
# average_precision
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "expected"), [("all-point", 0.75), ("11-point", 8 / 11), ("101-point", 76 / 101)]
)
def test_average_precision_notes_example(method, expected):
    ap = average_precision(torch.tensor([0.25, 0.5, 0.75]), torch.tensor([1.0, 1.0, 1.0]), method)
    assert ap.dtype == torch.float32 and ap.dim() == 0
    assert_close(ap.item(), expected, rtol=0, atol=1e-7)
    # Array-likes are read as float64.
    assert_close(
        average_precision([0.25, 0.5, 0.75], [1, 1, 1], method).item(), expected, rtol=0, atol=1e-15
    )
    assert (
        round(average_precision([0.25, 0.5, 0.75], [1, 1, 1], method).item(), 4)
        == {
            "all-point": 0.75,
            "11-point": 0.7273,
            "101-point": 0.7525,
        }[method]
    )


@pytest.mark.parametrize("seed", range(20))
def test_average_precision_matches_references(seed):
    g = torch.Generator().manual_seed(seed)
    num_dets = int(torch.randint(0, 40, (), generator=g))
    tp = torch.rand(num_dets, generator=g) < torch.rand((), generator=g)
    num_gt = int(tp.sum()) + int(torch.randint(0 if tp.any() else 1, 5, (), generator=g))
    precision, recall = precision_recall(tp, num_gt)
    rec, prec = recall.tolist(), precision.tolist()
    assert_close(
        average_precision(recall, precision, "all-point").item(), padilla_all_point(rec, prec)
    )
    assert_close(
        average_precision(recall, precision, "11-point").item(), padilla_eleven_point(rec, prec)
    )
    assert_close(
        average_precision(recall, precision, "101-point").item(), coco_101_point(rec, prec)
    )


def test_average_precision_properties():
    # A perfect ranking has AP 1 with every method; no detections has AP 0.
    for method in AP_METHODS:
        assert average_precision([0.5, 1.0], [1.0, 1.0], method).item() == 1.0
        assert average_precision([], [], method).item() == 0.0
        assert average_precision([0.0, 0.0], [0.0, 0.0], method).item() == 0.0
    g = torch.Generator().manual_seed(0)
    tp = torch.rand(60, generator=g) < 0.5
    precision, recall = precision_recall(tp, int(tp.sum()) + 3)
    base = {m: average_precision(recall, precision, m).item() for m in AP_METHODS}
    # Trailing false positives (same recall, lower precision) change nothing: the envelope.
    longer = precision_recall(torch.cat([tp, torch.zeros(10, dtype=torch.bool)]), int(tp.sum()) + 3)
    for m in AP_METHODS:
        assert_close(average_precision(longer.recall, longer.precision, m).item(), base[m])
    # All-point AP is the exact area under the envelope: a fine Riemann sum converges to it.
    r = torch.linspace(0, 1, 200_001, dtype=torch.float64)[1:]
    reached = recall[None, :] >= r[:, None]
    envelope = torch.where(reached, precision[None, :], 0.0).amax(1)
    assert abs(envelope.mean().item() - base["all-point"]) < 1e-4
    # Raising one precision value never lowers AP.
    for m in AP_METHODS:
        higher = precision.clone()
        higher[10] = 1.0
        assert average_precision(recall, higher, m).item() >= base[m]


def test_average_precision_errors():
    r, p = torch.tensor([0.5, 1.0]), torch.tensor([1.0, 0.5])
    with pytest.raises(
        ValueError, match="method must be one of all-point, 11-point, 101-point; got 'voc'"
    ):
        average_precision(r, p, "voc")
    with pytest.raises(ValueError, match="same length, got 2 and 3"):
        average_precision(r, torch.tensor([1.0, 0.5, 0.2]))
    with pytest.raises(ValueError, match="precision must not contain NaN"):
        average_precision(r, torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match=r"recall must lie in \[0, 1\]"):
        average_precision(torch.tensor([0.5, 1.5]), p)
    with pytest.raises(ValueError, match=r"precision must lie in \[0, 1\]"):
        average_precision(r, torch.tensor([-0.1, 0.5]))
    with pytest.raises(ValueError, match="recall must be non-decreasing"):
        average_precision(torch.tensor([0.5, 0.25]), p)
    with pytest.raises(ValueError, match=r"recall must be 1-D \[N\], got \[1, 2\]"):
        average_precision(r[None], p)
    with pytest.raises(TypeError, match="recall must be a floating-point tensor"):
        average_precision(torch.tensor([0, 1]), p)
    with pytest.raises(TypeError, match="precision must be a tensor or a sequence of numbers"):
        average_precision(r, "high")


def test_precision_recall():
    curve = precision_recall(torch.tensor([True, False, True, False]), 4)
    assert_close(curve.precision, torch.tensor([1.0, 0.5, 2 / 3, 0.5], dtype=torch.float64))
    assert_close(curve.recall, torch.tensor([0.25, 0.25, 0.5, 0.5], dtype=torch.float64))
    with pytest.raises(TypeError, match="tp must be a bool tensor"):
        precision_recall(torch.tensor([1, 0]), 2)
    with pytest.raises(ValueError, match="num_gt must be >= 1"):
        precision_recall(torch.tensor([False]), 0)
    with pytest.raises(ValueError, match="2 true positives but num_gt is 1"):
        precision_recall(torch.tensor([True, True]), 1)
    with pytest.raises(TypeError, match="num_gt must be an int"):
        precision_recall(torch.tensor([True]), 1.0)


# --------------------------------------------------------------------------------------------
# match_detections and voc_average_precision
# --------------------------------------------------------------------------------------------


def test_match_detections_notes_example():
    """Image '297' of the notes (+1 convention, IoU threshold 0.3): both detections are TPs."""
    pred, gt = NOTES_PREDS[1], NOTES_TARGETS[1]
    m = match_detections(pred["boxes"], pred["scores"], gt["boxes"], 0.3, legacy_plus_one=True)
    assert m.order.tolist() == [0, 1] and m.tp.tolist() == [True, True]
    assert m.matched_gt.tolist() == [1, 0]
    assert [round(v, 4) for v in m.ious.tolist()] == [0.4873, 0.5645]
    m = match_detections(
        NOTES_PREDS[0]["boxes"],
        NOTES_PREDS[0]["scores"],
        NOTES_TARGETS[0]["boxes"],
        0.3,
        legacy_plus_one=True,
    )
    assert round(m.ious.item(), 4) == 0.5855
    # Continuous coordinates give slightly smaller IoUs.
    m = match_detections(pred["boxes"], pred["scores"], gt["boxes"], 0.3)
    assert (m.ious < torch.tensor([0.4873, 0.5645])).all() and m.tp.all()


def test_voc_average_precision_notes_example():
    for method, expected in (("all-point", 0.75), ("11-point", 8 / 11), ("101-point", 76 / 101)):
        result = voc_average_precision(
            NOTES_PREDS, NOTES_TARGETS, 0.3, method, legacy_plus_one=True
        )
        assert_close(result.map, expected)
        assert result.classes.tolist() == [0] and result.num_gt.tolist() == [4]
        assert_close(result.recall[0], torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
        assert_close(result.precision[0], torch.ones(3, dtype=torch.float64))
        assert_close(result.scores[0], torch.tensor([0.92, 0.77, 0.33]).double())


def test_duplicate_detection_is_a_false_positive():
    gt = f32([0, 0, 10, 10])
    m = match_detections(f32([0, 0, 10, 10], [0, 0, 10, 9]), torch.tensor([0.9, 0.8]), gt)
    assert m.tp.tolist() == [True, False] and m.matched_gt.tolist() == [0, -1]
    assert_close(m.ious, torch.tensor([1.0, 0.9]))


def test_no_fallback_to_second_best_gt_unlike_coco():
    # Detection 2 overlaps A most (taken by detection 1) and B enough (IoU 8.5 / 11.5 = 0.739).
    gts, dets, scores = (
        f32([0, 0, 10, 10], [2, 0, 12, 10]),
        f32([0, 0, 10, 10], [0.5, 0, 10.5, 10]),
        [0.9, 0.8],
    )
    m = match_detections(dets, torch.tensor(scores), gts)
    assert m.tp.tolist() == [True, False]
    assert_close(m.ious, torch.tensor([1.0, 9.5 / 10.5]))
    voc = voc_average_precision(
        [image(dets.tolist(), scores, [0, 0])], [target(gts.tolist(), [0, 0])]
    )
    assert_close(voc.map, 0.5)  # recall 0.5 at precision 1
    # COCO moves on to B: at IoU 0.5 both detections are TPs.
    coco = ours([image(dets.tolist(), scores, [0, 0])], [target(gts.tolist(), [0, 0])])
    assert_close(coco["map_50"], 1.0)


def test_match_detections_threshold_ties_and_empty():
    # IoU exactly at the threshold is a TP: (0, 0, 2, 1) vs (0, 0, 1, 1) has IoU 1 / 2.
    m = match_detections(f32([0, 0, 1, 1]), torch.tensor([0.5]), f32([0, 0, 2, 1]), 0.5)
    assert m.ious.item() == 0.5 and m.tp.item()
    assert not match_detections(
        f32([0, 0, 1, 1]), torch.tensor([0.5]), f32([0, 0, 2, 1]), 0.5001
    ).tp.item()
    # Equal scores keep the input order; an IoU tie goes to the first GT (IoU 0.5 with both), so
    # the second detection finds its best GT taken and, without fallback, is a FP.
    m = match_detections(
        f32([0, 0, 10, 10], [0, 0, 10, 10]),
        torch.tensor([0.7, 0.7]),
        f32([0, 0, 10, 20], [0, 0, 20, 10]),
    )
    assert m.order.tolist() == [0, 1] and m.matched_gt.tolist() == [0, -1]
    m = match_detections(
        f32([0, 0, 10, 10], [0, 0, 10, 9]), torch.tensor([0.7, 0.7]), f32([0, 0, 10, 10])
    )
    assert m.tp.tolist() == [True, False]
    m = match_detections(
        f32([0, 0, 10, 9], [0, 0, 10, 10]), torch.tensor([0.7, 0.7]), f32([0, 0, 10, 10])
    )
    assert m.tp.tolist() == [True, False]  # the first one wins although the second fits better
    # No GT: every detection is a FP with IoU 0; no detection: empty results.
    m = match_detections(f32([0, 0, 1, 1]), torch.tensor([0.5]), torch.zeros(0, 4))
    assert m.tp.tolist() == [False] and m.matched_gt.tolist() == [-1] and m.ious.tolist() == [0.0]
    m = match_detections(torch.zeros(0, 4), torch.zeros(0), f32([0, 0, 1, 1]))
    assert m.order.shape == m.tp.shape == m.matched_gt.shape == m.ious.shape == (0,)


def test_match_detections_errors():
    boxes, scores = f32([0, 0, 1, 1]), torch.tensor([0.5])
    with pytest.raises(ValueError, match=r"pred_scores must be \[1\] like pred_boxes, got \[2\]"):
        match_detections(boxes, torch.tensor([0.5, 0.4]), boxes)
    with pytest.raises(ValueError, match="pred_scores must be finite"):
        match_detections(boxes, torch.tensor([float("nan")]), boxes)
    with pytest.raises(ValueError, match="gt_boxes"):
        match_detections(boxes, scores, f32([2, 0, 1, 1]))
    with pytest.raises(TypeError, match="pred_boxes must be a floating-point tensor"):
        match_detections(boxes.long(), scores, boxes)
    with pytest.raises(TypeError, match="gt_boxes must have pred_boxes' dtype"):
        match_detections(boxes, scores, boxes.double())
    with pytest.raises(ValueError, match=r"iou_threshold must be in \[0, 1\], got 1.5"):
        match_detections(boxes, scores, boxes, 1.5)


@pytest.mark.parametrize("seed", range(4))
def test_voc_matches_padilla_reference(seed):
    g = torch.Generator().manual_seed(seed)
    preds, targets, detections, ground_truths = [], [], [], []
    for i in range(8):
        num_gt, num_det = (
            int(torch.randint(0, 6, (), generator=g)),
            int(torch.randint(0, 12, (), generator=g)),
        )
        xy = torch.randint(0, 30, (num_gt, 2), generator=g).float()
        gt_boxes = torch.cat([xy, xy + torch.randint(2, 20, (num_gt, 2), generator=g)], 1)
        xy = torch.randint(0, 30, (num_det, 2), generator=g).float()
        det_boxes = torch.cat([xy, xy + torch.randint(2, 20, (num_det, 2), generator=g)], 1)
        gt_labels, det_labels = (
            torch.randint(0, 3, (num_gt,), generator=g),
            torch.randint(0, 3, (num_det,), generator=g),
        )
        scores = torch.randint(0, 5, (num_det,), generator=g).float() / 4  # ties
        preds.append({"boxes": det_boxes, "scores": scores, "labels": det_labels})
        targets.append({"boxes": gt_boxes, "labels": gt_labels})
        ground_truths += [
            (i, c, b) for b, c in zip(gt_boxes.tolist(), gt_labels.tolist(), strict=True)
        ]
        detections += [
            (i, c, s, b)
            for b, s, c in zip(
                det_boxes.tolist(), scores.tolist(), det_labels.tolist(), strict=True
            )
        ]
    reference = padilla_voc(detections, ground_truths, 0.3)
    for method, ap_fn in (("all-point", padilla_all_point), ("11-point", padilla_eleven_point)):
        result = voc_average_precision(preds, targets, 0.3, method, legacy_plus_one=True)
        aps = []
        for k, c in enumerate(result.classes.tolist()):
            tp, npos = reference[c]
            assert result.num_gt[k].item() == npos
            if npos == 0:
                assert result.ap[k].item() == -1
                continue
            acc_tp = np.cumsum(tp)
            rec, prec = (acc_tp / npos).tolist(), (acc_tp / np.arange(1, len(tp) + 1)).tolist()
            assert_close(result.recall[k], torch.tensor(rec, dtype=torch.float64))
            assert_close(result.precision[k], torch.tensor(prec, dtype=torch.float64))
            aps.append(ap_fn(rec, prec))
            assert_close(result.ap[k].item(), aps[-1])
        assert_close(result.map, sum(aps) / len(aps))


def test_voc_average_precision_edge_cases():
    empty = voc_average_precision([], [])
    assert empty.map == -1.0 and empty.classes.numel() == 0 and empty.precision == []
    # Class 1 has predictions only: AP -1, left out of the mAP; class 2 has GT only: AP 0.
    result = voc_average_precision(
        [image([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.8], [0, 1])],
        [target([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 2])],
    )
    assert result.classes.tolist() == [0, 1, 2]
    assert result.ap.tolist() == [1.0, -1.0, 0.0] and result.map == 0.5
    with pytest.raises(ValueError, match="method must be one of"):
        voc_average_precision([], [], method="coco")


# --------------------------------------------------------------------------------------------
# MeanAveragePrecision against pycocotools
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_mean_average_precision_equals_pycocotools(seed):
    preds, targets = random_dataset(seed)
    assert any(len(p["boxes"]) > 100 for p in preds) and any(
        t["iscrowd"].any() for t in targets if "iscrowd" in t
    )
    result, evaluator = ours(preds, targets), coco_oracle(preds, targets)
    assert all(isinstance(result[name], float) for name in COCO_STAT_NAMES)
    assert_close(stats_of(result), torch.from_numpy(evaluator.stats), rtol=0, atol=1e-9)
    # Per class: AP@[.5:.95] from pycocotools' precision array, -1 without GT.
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # [T, R, K]
    expected = [p.mean() if (p > -1).all() else -1.0 for p in np.moveaxis(precision, 2, 0)]
    assert result["classes"].tolist() == evaluator.params.catIds
    assert_close(
        result["map_per_class"], torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12
    )
    classes = result["classes"].tolist()
    assert result["map_per_class"][classes.index(4)] == -1  # predictions only
    assert result["map_per_class"][classes.index(5)] == 0  # GT only


def reference_stats(preds, targets):
    return stats_of(coco_evaluate_reference(preds, targets))


@pytest.mark.parametrize("seed", range(2))
def test_coco_reference_equals_fast_path_and_pycocotools(seed):
    # The random data hold crowds, explicit areas, > 100 detections, score and IoU ties, boxes of
    # area exactly 32^2 and 96^2, empty images, classes with only predictions or only GT.
    preds, targets = random_dataset(100 + seed, num_images=12)
    reference = reference_stats(preds, targets)
    assert_close(reference, torch.from_numpy(coco_oracle(preds, targets).stats), rtol=0, atol=1e-9)
    assert_close(stats_of(ours(preds, targets)), reference, rtol=0, atol=1e-12)


COCO_EDGE_CASES = {
    "crowd absorbs": (
        [
            image(
                [[0, 0, 10, 10], [100, 100, 120, 120], [130, 130, 150, 150]],
                [0.9, 0.95, 0.8],
                [0, 0, 0],
            )
        ],
        [target([[0, 0, 10, 10], [100, 100, 200, 200]], [0, 0], iscrowd=[False, True])],
    ),
    "regular preferred": (
        [image([[0, 0, 10, 10]], [0.9], [0])],
        [target([[0, 0, 200, 200], [0, 0, 10, 11]], [0, 0], iscrowd=[True, False])],
    ),
    "IoU tie": (
        [image([[0, 0, 10, 10], [0, 0, 10, 20]], [0.9, 0.8], [0, 0])],
        [target([[0, 0, 10, 20], [0, 0, 20, 10]], [0, 0])],
    ),
    "score tie across images": (
        [
            image([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.5], [0, 0]),
            image([[0, 0, 10, 10]], [0.5], [0]),
        ],
        [target([[0, 0, 10, 10]], [0]), target([[0, 0, 10, 10]], [0])],
    ),
    "area bounds": (
        [image([[0, 0, 32, 32], [40, 0, 72, 32], [0, 100, 96, 196]], [0.9, 0.8, 0.7], [0, 0, 0])],
        [target([[0, 0, 32, 32], [0, 100, 96, 196]], [0, 0], area=[1024.0, 9216.0])],
    ),
    "one box, empty image": (
        [image([[1, 1, 5, 5]], [0.3], [2]), image()],
        [target([[1, 1, 5, 6]], [2]), target()],
    ),
}


@pytest.mark.parametrize("case", COCO_EDGE_CASES, ids=str)
def test_coco_reference_edge_cases(case):
    preds, targets = COCO_EDGE_CASES[case]
    reference = reference_stats(preds, targets)
    assert_close(reference, torch.from_numpy(coco_oracle(preds, targets).stats), rtol=0, atol=1e-9)
    assert_close(stats_of(ours(preds, targets)), reference, rtol=0, atol=1e-12)


def test_mean_average_precision_continuous_boxes_and_float64():
    """Random real-valued boxes (no grid): still equal, and float64 inputs give the same numbers."""
    g = torch.Generator().manual_seed(7)
    preds, targets = [], []
    for _ in range(30):
        xy = torch.rand(6, 2, generator=g) * 300
        gt = torch.cat([xy, xy + torch.exp(torch.rand(6, 2, generator=g) * 5)], 1)
        det = gt.repeat(3, 1) + torch.randn(18, 4, generator=g) * 4
        det = torch.cat([det[:, :2].minimum(det[:, 2:]), det[:, :2].maximum(det[:, 2:])], 1)
        labels = torch.randint(0, 3, (6,), generator=g)
        preds.append(
            {"boxes": det, "scores": torch.rand(18, generator=g), "labels": labels.repeat(3)}
        )
        targets.append({"boxes": gt, "labels": labels})
    result = ours(preds, targets)
    assert_close(
        stats_of(result), torch.from_numpy(coco_oracle(preds, targets).stats), rtol=0, atol=1e-9
    )
    as_double = [
        {k: v.double() if v.is_floating_point() else v for k, v in p.items()} for p in preds
    ]
    assert_close(stats_of(ours(as_double, targets)), stats_of(result), rtol=0, atol=0)


def test_crowd_absorbs_detections_and_regular_gt_preferred():
    # One regular GT and one crowd region; three detections inside the crowd are ignored, not FPs.
    preds = [
        image(
            [[0, 0, 10, 10], [100, 100, 120, 120], [130, 130, 150, 150], [105, 105, 125, 125]],
            [0.9, 0.95, 0.85, 0.8],
            [0, 0, 0, 0],
        )
    ]
    targets = [target([[0, 0, 10, 10], [100, 100, 200, 200]], [0, 0], iscrowd=[False, True])]
    result = ours(preds, targets)
    assert_close(result["map"], 1.0)  # precision is 1 / (1 + eps)
    assert result["mar_100"] == 1.0
    assert_close(
        stats_of(result), torch.from_numpy(coco_oracle(preds, targets).stats), rtol=0, atol=1e-9
    )
    # A detection inside a crowd region (crowd IoU 1) and on a regular GT (IoU 100 / 110) takes
    # the regular GT.
    preds = [image([[0, 0, 10, 10]], [0.9], [0])]
    targets = [target([[0, 0, 200, 200], [0, 0, 10, 11]], [0, 0], iscrowd=[True, False])]
    result = ours(preds, targets)
    assert_close(result["map_50"], 1.0)
    assert_close(
        stats_of(result), torch.from_numpy(coco_oracle(preds, targets).stats), rtol=0, atol=1e-9
    )


def test_iou_tie_goes_to_the_later_gt_like_pycocotools():
    # Detection 1 has IoU 0.5 with both A and B and COCO gives it the later one (B), which
    # leaves A free for detection 2. (VOC's rule would give it A and make detection 2 a FP.)
    preds = [image([[0, 0, 10, 10], [0, 0, 10, 20]], [0.9, 0.8], [0, 0])]
    targets = [target([[0, 0, 10, 20], [0, 0, 20, 10]], [0, 0])]
    result = ours(preds, targets)
    assert_close(result["map_50"], 1.0)
    assert_close(
        stats_of(result), torch.from_numpy(coco_oracle(preds, targets).stats), rtol=0, atol=1e-9
    )
    m = match_detections(preds[0]["boxes"], preds[0]["scores"], targets[0]["boxes"])
    assert m.matched_gt.tolist() == [0, -1]


def test_score_ties_across_images_rank_by_image_order():
    # Equal scores in two images: pycocotools ranks image 1's detection (a FP) first.
    preds = [
        image([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.5], [0, 0]),
        image([[0, 0, 10, 10]], [0.5], [0]),
    ]
    targets = [target([[0, 0, 10, 10]], [0]), target([[0, 0, 10, 10]], [0])]
    result = ours(preds, targets)
    assert_close(
        stats_of(result), torch.from_numpy(coco_oracle(preds, targets).stats), rtol=0, atol=1e-9
    )
    # Recall 0.5 at precision 1, then the FP, then recall 1 at precision 2/3.
    assert_close(result["map_50"], (51 * 1.0 + 50 * 2 / 3) / 101, rtol=0, atol=1e-12)


def test_max_detections_truncation():
    # 12 detections in one image, the only TP ranked last: counted by mar_100 only.
    boxes = [[50 + 5 * i, 0, 60 + 5 * i, 10] for i in range(11)] + [[0, 0, 10, 10]]
    scores = [0.9 - 0.01 * i for i in range(11)] + [0.1]
    result = ours([image(boxes, scores, [0] * 12)], [target([[0, 0, 10, 10]], [0])])
    assert result["mar_1"] == 0.0 and result["mar_10"] == 0.0 and result["mar_100"] == 1.0
    assert_close(result["map"], 1 / 12 * 101 / 101, atol=1e-12, rtol=0)


def test_batches_reset_and_empty():
    preds, targets = random_dataset(11, num_images=10)
    metric = MeanAveragePrecision()
    metric.update(preds[:4], targets[:4])
    metric.update(preds[4:], targets[4:])
    assert_close(stats_of(metric.compute()), stats_of(ours(preds, targets)), rtol=0, atol=0)
    metric.reset()
    metric.update([], [])  # an empty batch is fine
    empty = metric.compute()
    assert [empty[name] for name in COCO_STAT_NAMES] == [-1.0] * 12
    assert empty["classes"].numel() == 0 and empty["map_per_class"].numel() == 0
    # Ground truth but no predictions at all: AP and AR 0 (pycocotools cannot load no results).
    no_preds = ours([image(), image()], [target([[0, 0, 40, 40]], [1]), target()])
    assert [no_preds[n] for n in COCO_STAT_NAMES] == [
        0.0,
        0.0,
        0.0,
        -1.0,
        0.0,
        -1.0,
        0.0,
        0.0,
        0.0,
        -1.0,
        0.0,
        -1.0,
    ]
    # Predictions but no ground truth: nothing to average.
    no_gt = ours([image([[0, 0, 1, 1]], [0.5], [0])], [target()])
    assert [no_gt[n] for n in COCO_STAT_NAMES] == [-1.0] * 12 and no_gt[
        "map_per_class"
    ].tolist() == [-1.0]


def test_mean_average_precision_errors():
    metric = MeanAveragePrecision()
    good_p, good_t = image([[0, 0, 1, 1]], [0.5], [0]), target([[0, 0, 1, 1]], [0])
    cases = [
        (good_p, [good_t], TypeError, "preds must be a list of dicts"),
        ([good_p], [good_t, good_t], ValueError, "one entry per image, got 1 and 2"),
        ([good_p], ["box"], TypeError, r"targets\[0\] must be a dict"),
        (
            [{"boxes": good_p["boxes"]}],
            [good_t],
            ValueError,
            r"preds\[0\] is missing \['scores', 'labels'\]",
        ),
        (
            [{**good_p, "boxes": torch.zeros(1, 5)}],
            [good_t],
            ValueError,
            r"preds\[0\]\['boxes'\] must be \[N, 4\], got \[1, 5\]",
        ),
        (
            [{**good_p, "boxes": torch.zeros(1, 4, dtype=torch.int64)}],
            [good_t],
            TypeError,
            "floating-point",
        ),
        (
            [good_p, {**good_p, "boxes": f32([0, 0, float("nan"), 1])}],
            [good_t] * 2,
            ValueError,
            r"preds\[1\]\['boxes'\] must be finite",
        ),
        (
            [good_p],
            [target([[0, 0, 1, 1], [5, 0, 4, 1]], [0, 0])],
            ValueError,
            r"targets\[0\]\['boxes'\].*x2 >= x1",
        ),
        (
            [{**good_p, "scores": torch.tensor([0.5, 0.4])}],
            [good_t],
            ValueError,
            r"preds\[0\]\['scores'\] must be \[1\] like its boxes, got \[2\]",
        ),
        (
            [{**good_p, "scores": torch.tensor([float("inf")])}],
            [good_t],
            ValueError,
            r"preds\[0\]\['scores'\] must be finite",
        ),
        (
            [{**good_p, "labels": torch.tensor([0.0])}],
            [good_t],
            TypeError,
            r"preds\[0\]\['labels'\] must be an integer tensor",
        ),
        (
            [good_p],
            [target([[0, 0, 1, 1]], [-1])],
            ValueError,
            r"targets\[0\]\['labels'\] must be a class id >= 0",
        ),
        (
            [good_p],
            [{**good_t, "iscrowd": torch.tensor([2])}],
            ValueError,
            r"targets\[0\]\['iscrowd'\] must be 0 or 1",
        ),
        ([good_p], [{**good_t, "iscrowd": torch.tensor([0.5])}], TypeError, "bool or integer"),
        (
            [good_p],
            [{**good_t, "area": torch.tensor([-1.0])}],
            ValueError,
            r"targets\[0\]\['area'\] must be finite, >= 0",
        ),
        (
            [good_p],
            [{**good_t, "area": torch.tensor([1.0, 2.0])}],
            ValueError,
            r"\['area'\] must be \[1\]",
        ),
    ]
    for preds, targets, error, message in cases:
        with pytest.raises(error, match=message):
            metric.update(preds, targets)
    assert metric.compute()["map"] == -1.0  # nothing was added by the failed calls
