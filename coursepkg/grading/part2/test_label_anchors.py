"""Grading tests of ``label_anchors(iou_matrix)``, Faster R-CNN's anchor labels (exercise 07_faster_rcnn).

Compared with ``coursepkg.models.assignment.match_anchors(iou_matrix).labels`` (thresholds 0.7 and 0.3,
low-quality matches on; torchvision's ``Matcher`` with ``allow_low_quality_matches=True``) on the
worked example, on IoUs exactly at 0.7 and 0.3, ground truths whose best anchors tie, a ground
truth that overlaps no anchor, images without objects, no anchors, and seeded random matrices:
IoUs of real anchors with random boxes (float32) and IoUs on a 0.1 grid (float64), where ties and
values exactly at a threshold are common.
"""

from __future__ import annotations

import pytest
import torch

from coursepkg.grading.expect import Case, call, expect_tensor, generator, random_boxes
from coursepkg.models.anchors import generate_anchors
from coursepkg.models.assignment import match_anchors
from coursepkg.ops.boxes import box_iou

LOW_QUALITY = (
    "also make positive, for every ground truth, the anchor(s) with the highest IoU with it, even "
    "below 0.7: otherwise an object no anchor covers well gets no positive anchor"
)
TIES = "when several anchors share a ground truth's highest IoU, ALL of them become positive"
AT_THRESHOLD = (
    "an IoU of exactly 0.7 is positive (>= 0.7); exactly 0.3 is ignored (negative is < 0.3)"
)
ORDER = (
    "the best anchor of a ground truth is positive even if its IoU is below 0.3: set the negatives "
    "first, then the positives"
)
ZERO = (
    "a ground truth whose highest IoU is 0 (it overlaps no anchor) makes no anchor positive: its "
    "'best' anchors are simply every anchor"
)


def _case(title: str, iou, dtype=torch.float64, hint: str = "") -> Case:
    iou = iou if torch.is_tensor(iou) else torch.tensor(iou, dtype=dtype)
    return Case(title, {"iou_matrix": iou.to(dtype)}, hint)


def _real(num_gt: int, feature: int, seed: int) -> Case:
    g = generator(seed)
    anchors = generate_anchors((feature, feature), 16, scales=(2, 4), ratios=(0.5, 1, 2))
    gt = random_boxes(num_gt, g, size=16.0 * feature)
    iou = box_iou(gt, anchors)
    return _case(
        f"IoUs of {num_gt} random boxes with {len(anchors)} anchors (seed {seed})",
        iou,
        torch.float32,
    )


def _grid(num_gt: int, num_anchors: int, seed: int) -> Case:
    g = generator(seed)
    iou = torch.randint(0, 11, (num_gt, num_anchors), generator=g).double() / 10
    iou[torch.rand(iou.shape, generator=g) < 0.4] = 0.0  # mostly background, like real anchors
    return _case(
        f"IoUs on a 0.1 grid: {num_gt} ground truths, {num_anchors} anchors (ties, exact "
        f"thresholds) (seed {seed})",
        iou,
    )


CASES = [
    _case(
        "the worked example: 2 ground truths, 6 anchors",
        [[0.75, 0.50, 0.10, 0.00, 0.20, 0.00], [0.00, 0.10, 0.45, 0.45, 0.29, 0.30]],
    ),
    _case("IoU exactly 0.7 and exactly 0.3", [[0.7, 0.3, 0.2999, 0.6999, 0.8]], hint=AT_THRESHOLD),
    _case(
        "a ground truth whose best IoU is low (0.2): its best anchor is positive",
        [[0.2, 0.1, 0.0, 0.05]],
        hint=ORDER,
    ),
    _case(
        "two anchors tie for a ground truth's best IoU",
        [[0.4, 0.1, 0.4, 0.0], [0.0, 0.8, 0.0, 0.1]],
        hint=TIES,
    ),
    _case(
        "a ground truth that overlaps no anchor (its best IoU is 0)",
        [[0.0, 0.0, 0.0, 0.0], [0.0, 0.5, 0.2, 0.1]],
        hint=ZERO,
    ),
    _case(
        "an image without objects (G = 0): every anchor negative",
        torch.zeros(0, 5),
        hint="with no ground truth every anchor is negative (0)",
    ),
    _case("no anchors (A = 0)", torch.zeros(2, 0), hint="return an empty int64 tensor"),
    _case("float32 IoUs of 0.7 and 0.3", [[0.7, 0.3, 0.65, 0.1]], torch.float32, AT_THRESHOLD),
    _real(1, 4, seed=401),
    _real(3, 6, seed=402),
    _real(8, 10, seed=403),
    _grid(1, 12, seed=404),
    _grid(3, 20, seed=405),
    _grid(6, 100, seed=406),
    _grid(20, 500, seed=407),
]


def _mistakes(iou):
    num_gt, num_anchors = iou.shape
    right = match_anchors(iou).labels

    def only_first_of_ties():
        labels = match_anchors(iou, allow_low_quality_matches=False).labels
        best = iou.argmax(dim=1)
        labels[best[iou.max(dim=1).values > 0]] = 1
        return labels

    def negatives_last():
        labels = right.clone()
        labels[iou.max(dim=0).values < 0.3] = 0
        return labels

    def strict():
        labels = right.clone()
        quality = match_anchors(iou, allow_low_quality_matches=False).labels
        at = (iou.max(dim=0).values == iou.new_tensor(0.7)) & (quality == 1)
        lq = match_anchors(iou.masked_fill(iou == iou.new_tensor(0.7), 0.69)).labels
        labels[at] = lq[at]
        return labels

    def every_zero_best():
        labels = right.clone()
        zero_gt = iou.max(dim=1).values == 0
        if zero_gt.any():
            labels[:] = 1
        return labels

    yield LOW_QUALITY, lambda: match_anchors(iou, allow_low_quality_matches=False).labels
    yield TIES, only_first_of_ties
    yield ORDER, negatives_last
    yield AT_THRESHOLD, strict
    yield ZERO, every_zero_best


@pytest.mark.parametrize("case", CASES, ids=str)
def test_label_anchors(student, case: Case) -> None:
    got = call(student, case)
    (iou,) = case.inputs()
    expected = match_anchors(iou).labels
    expect_tensor(got, expected, case, diagnoses=_mistakes(iou) if iou.numel() else ())
