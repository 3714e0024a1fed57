"""Grading tests of ``label_retina_anchors(iou_matrix)``, RetinaNet's anchor labels (exercise 10_retinanet).

The student returns ``(labels, matched_gt)``. Compared with
``coursepkg.models.assignment.match_anchors(iou_matrix, 0.5, 0.4, allow_low_quality_matches=True)``
(torchvision's ``Matcher(0.5, 0.4, allow_low_quality_matches=True)`` for RetinaNet): ``labels`` as
it returns them, ``matched_gt`` its best ground truth where the label is 1 and -1 elsewhere. Cases:
the worked example, IoUs exactly at 0.5 and 0.4, a ground truth whose best anchors tie, a ground
truth whose best anchor lies below 0.4, one that overlaps nothing, images without objects, no
anchors, and seeded random matrices (IoUs of real anchors with random boxes in float32 and IoUs on
a 0.1 grid in float64, where ties and exact thresholds are common).
"""

from __future__ import annotations

import pytest
import torch

from coursepkg.grading.expect import (
    Case,
    Failure,
    call,
    expect_tensor,
    generator,
    random_boxes,
    show,
)
from coursepkg.models.anchors import generate_anchors
from coursepkg.models.assignment import match_anchors
from coursepkg.ops.boxes import box_iou

FG, BG = 0.5, 0.4
LOW_QUALITY = (
    "also make positive, for every ground truth, the anchor(s) with the highest IoU with it, even "
    "below 0.5 (or below 0.4): otherwise an object no anchor covers well gets no positive anchor"
)
BAND = (
    "an anchor whose best IoU is in [0.4, 0.5) is IGNORED (-1), not negative: only IoU < 0.4 is "
    "negative"
)
AT_THRESHOLD = "IoU exactly 0.5 is positive (>= 0.5); exactly 0.4 is ignored (negative is < 0.4)"
MATCHED = (
    "matched_gt is the index of the anchor's best ground truth (argmax over the rows) where the "
    "label is 1, and -1 for negative and ignored anchors"
)
ZERO = "a ground truth whose highest IoU is 0 overlaps no anchor and makes no anchor positive"


def _case(title: str, iou, dtype=torch.float64, hint: str = "") -> Case:
    iou = iou if torch.is_tensor(iou) else torch.tensor(iou, dtype=dtype)
    return Case(title, {"iou_matrix": iou.to(dtype)}, hint)


def _real(num_gt: int, feature: int, seed: int) -> Case:
    g = generator(seed)
    anchors = generate_anchors((feature, feature), 8, scales=(2, 2.52, 3.17), ratios=(0.5, 1, 2))
    gt = random_boxes(num_gt, g, size=8.0 * feature)
    return _case(
        f"IoUs of {num_gt} random boxes with {len(anchors)} anchors (seed {seed})",
        box_iou(gt, anchors), torch.float32,
    )


def _grid(num_gt: int, num_anchors: int, seed: int) -> Case:
    g = generator(seed)
    iou = torch.randint(0, 11, (num_gt, num_anchors), generator=g).double() / 10
    iou[torch.rand(iou.shape, generator=g) < 0.4] = 0.0
    return _case(
        f"IoUs on a 0.1 grid: {num_gt} ground truths, {num_anchors} anchors (seed {seed})", iou
    )


CASES = [
    _case(
        "the worked example: 2 ground truths, 6 anchors",
        [[0.62, 0.45, 0.10, 0.00, 0.20, 0.00], [0.00, 0.38, 0.35, 0.35, 0.39, 0.40]],
    ),
    _case("IoU exactly 0.5 and exactly 0.4", [[0.5, 0.4, 0.3999, 0.4999, 0.55]], hint=AT_THRESHOLD),
    _case("the ignore band [0.4, 0.5)", [[0.9, 0.45, 0.41, 0.3], [0.0, 0.42, 0.0, 0.44]], hint=BAND),
    _case(
        "a ground truth whose best IoU is 0.3: its best anchor is positive",
        [[0.3, 0.1, 0.0, 0.05], [0.0, 0.0, 0.8, 0.0]], hint=LOW_QUALITY,
    ),
    _case("two anchors tie for a ground truth's best IoU", [[0.35, 0.1, 0.35, 0.0], [0.0, 0.7, 0.0, 0.1]],
          hint=LOW_QUALITY),
    _case("an anchor whose best ground truth is the second row", [[0.1, 0.6, 0.0], [0.7, 0.2, 0.45]],
          hint=MATCHED),
    _case("a ground truth that overlaps no anchor", [[0.0, 0.0, 0.0], [0.0, 0.6, 0.2]], hint=ZERO),
    _case("an image without objects (G = 0): every anchor negative", torch.zeros(0, 5),
          hint="with no ground truth every anchor is negative (0) and matched_gt is -1"),
    _case("no anchors (A = 0)", torch.zeros(2, 0), hint="return two empty int64 tensors"),
    _case("float32 IoUs of 0.5 and 0.4", [[0.5, 0.4, 0.45, 0.1]], torch.float32, AT_THRESHOLD),
    _real(1, 4, seed=1101),
    _real(4, 8, seed=1102),
    _real(10, 16, seed=1103),
    _grid(2, 12, seed=1104),
    _grid(5, 60, seed=1105),
    _grid(20, 500, seed=1106),
]


def _reference(iou):
    match = match_anchors(iou, FG, BG, allow_low_quality_matches=True)
    matched = torch.where(match.labels == 1, match.matched_gt, torch.full_like(match.matched_gt, -1))
    return match.labels, matched


def _mistakes(iou):
    def labels_with(**kwargs):
        return match_anchors(iou, **{"fg_iou_thresh": FG, "bg_iou_thresh": BG, **kwargs}).labels

    def band_negative():
        labels = labels_with()
        labels[labels == -1] = 0
        return labels

    yield LOW_QUALITY, lambda: labels_with(allow_low_quality_matches=False)
    yield BAND, band_negative
    yield AT_THRESHOLD, lambda: labels_with(bg_iou_thresh=0.4 + 1e-9)
    yield AT_THRESHOLD, lambda: labels_with(fg_iou_thresh=0.5 + 1e-9)


def _pair(got, case: Case) -> tuple:
    if not isinstance(got, tuple | list) or len(got) != 2:
        raise Failure(
            f"expected a pair (labels, matched_gt), got {type(got).__name__}",
            case=case, got=show(got), hint="return labels, matched_gt",
        )
    return tuple(got)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_label_retina_anchors(student, case: Case) -> None:
    got = _pair(call(student, case), case)
    (iou,) = case.inputs()
    labels, matched = _reference(iou)
    expect_tensor(got[0], labels, case, exact_dtype=True, diagnoses=_mistakes(iou) if iou.numel() else ())
    expect_tensor(got[1], matched, case, exact_dtype=True, diagnoses=((MATCHED, lambda: match_anchors(iou, FG, BG).matched_gt),))
