"""Grading tests of ``nms(boxes, scores, iou_threshold)``, greedy NMS (exercise 03_nms).

Compared with :func:`coursepkg.ops.nms.nms` (the same keeps as ``torchvision.ops.nms``) on the notes'
five boxes, on the cases each rule is about (an IoU exactly at the threshold, score order, ties,
only kept boxes suppress, thresholds 0 and 1, empty input) and on seeded random sets of several
sizes, some with tied scores and boxes on a grid.
"""

from __future__ import annotations

import math

import pytest
import torch

from coursepkg.grading.expect import (
    Case,
    Picture,
    call,
    expect_tensor,
    generator,
    grid_boxes,
    random_boxes,
    tied_scores,
)
from coursepkg.ops.nms import malisiewicz_nms, nms

STRICT = "suppress only when IoU > iou_threshold: a box whose IoU equals the threshold stays"
SORT = "visit the boxes from the highest score down, and return the kept indices in that order"
TIES = "equal scores keep their input order: sort with torch.sort(scores, descending=True, stable=True)"
KEPT_ONLY = "only boxes that were KEPT suppress others: a suppressed box suppresses nothing"
NOTES = (
    "this is the notes' overlap (intersection over the other box's area): greedy NMS uses the IoU"
)


def _case(title: str, boxes, scores, iou_threshold: float, hint: str = "") -> Case:
    boxes = (
        boxes if torch.is_tensor(boxes) else torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    )
    scores = scores if torch.is_tensor(scores) else torch.tensor(scores, dtype=torch.float32)
    return Case(title, {"boxes": boxes, "scores": scores, "iou_threshold": iou_threshold}, hint)


def _random(n: int, threshold: float, seed: int, grid: bool = False, ties: bool = False) -> Case:
    g = generator(seed)
    boxes = grid_boxes(n, g, grid=12) if grid else random_boxes(n, g)
    scores = tied_scores(n, g) if ties else torch.rand(n, generator=g)
    kind = ", ".join(k for k, on in (("grid boxes", grid), ("tied scores", ties)) if on)
    kind = f" ({kind})" if kind else ""
    return _case(
        f"random boxes{kind}, N={n}, threshold {threshold} (seed {seed})", boxes, scores, threshold
    )


NOTES_BOXES = [
    [100, 200, 350, 300],
    [100, 200, 400, 500],
    [100, 200, 300, 800],
    [1000, 100, 1150, 600],
    [1000, 100, 1200, 700],
]

CASES = [
    _case("the notes' five boxes, threshold 0.3", NOTES_BOXES, [0.6, 0.7, 0.9, 0.7, 0.8], 0.3),
    _case(
        "two boxes with IoU exactly 0.5, threshold 0.5",
        [[0, 0, 10, 10], [0, 0, 10, 20]],
        [0.9, 0.8],
        0.5,
        STRICT,
    ),
    _case(
        "boxes given in increasing score order",
        [[0, 0, 10, 10], [1, 1, 11, 11], [30, 30, 40, 40]],
        [0.1, 0.5, 0.9],
        0.5,
        SORT,
    ),
    _case(
        "equal scores: the earlier box wins",
        [[0, 0, 10, 10], [1, 0, 11, 10]],
        [0.5, 0.5],
        0.5,
        TIES,
    ),
    _case(
        "a chain: A suppresses B, so B cannot suppress C",
        [[0, 0, 10, 10], [5, 0, 15, 10], [10, 0, 20, 10]],
        [0.9, 0.8, 0.7],
        0.3,
        KEPT_ONLY,
    ),
    _case("identical boxes", [[2, 2, 8, 8], [2, 2, 8, 8], [2, 2, 8, 8]], [0.3, 0.9, 0.6], 0.5),
    _case(
        "threshold 1: nothing is suppressed",
        [[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 9, 9]],
        [0.2, 0.4, 0.3],
        1.0,
        STRICT,
    ),
    _case(
        "threshold 0: any overlap suppresses",
        [[0, 0, 10, 10], [9, 9, 20, 20], [10, 0, 20, 9]],
        [0.9, 0.8, 0.7],
        0.0,
    ),
    _case("one box", [[1, 2, 3, 4]], [0.5], 0.5),
    _case(
        "no boxes (N = 0)",
        torch.zeros(0, 4),
        torch.zeros(0),
        0.5,
        "with no boxes return an empty int64 tensor",
    ),
    _random(5, 0.5, seed=61),
    _random(8, 0.3, seed=62, grid=True, ties=True),
    _random(20, 0.5, seed=63, ties=True),
    _random(40, 0.7, seed=64, grid=True),
    _random(100, 0.5, seed=65),
    _random(300, 0.4, seed=66, ties=True),
]


def _mistakes(boxes: torch.Tensor, scores: torch.Tensor, t: float):
    n = len(scores)
    yield STRICT, lambda: nms(boxes, scores, math.nextafter(t, -1.0))
    yield SORT, lambda: nms(boxes, -torch.arange(n, dtype=torch.float32), t)
    yield SORT, lambda: nms(boxes, scores, t).sort().values
    yield TIES, lambda: (n - 1) - nms(boxes.flip(0), scores.flip(0), t)
    yield NOTES, lambda: malisiewicz_nms(boxes, scores, t)
    yield NOTES, lambda: malisiewicz_nms(boxes, scores, t, legacy_plus_one=False)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_nms(student, case: Case) -> None:
    got = call(student, case)
    boxes, scores, threshold = case.inputs()
    expected = nms(boxes, scores, threshold)
    picture = None
    if 0 < len(boxes) <= 10:
        picture = Picture(
            "all boxes with their scores (grey); kept: expected (green), yours (red, dashed)"
        )
        picture.add(
            "boxes", boxes, "grey", texts=[f"{i}: {float(s):.2f}" for i, s in enumerate(scores)]
        )
        picture.add("expected", boxes[expected], "tab:green")
        if isinstance(got, torch.Tensor) and got.dim() == 1 and not got.is_floating_point():
            if bool(((got >= 0) & (got < len(boxes))).all()):
                picture.add("yours", boxes[got.long()], "tab:red", dashed=True)
    expect_tensor(
        got,
        expected,
        case,
        exact_dtype=True,  # int64, as torchvision's nms: int32 indices are a different contract
        diagnoses=_mistakes(boxes, scores, threshold),
        picture=picture,
    )
