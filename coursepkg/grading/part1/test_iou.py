"""Grading tests of ``iou(box_a, box_b)``, the IoU of two boxes in plain Python (exercise 02_boxes_iou).

Compared with :func:`coursepkg.ops.boxes.box_iou` (computed in float64) on the notes' examples, on the
edge cases where the usual mistakes show (touching, disjoint, nested, zero-area boxes) and on
seeded random pairs, continuous and on a small integer grid.
"""

from __future__ import annotations

import pytest
import torch

from coursepkg.grading.expect import (
    Case,
    Picture,
    call,
    expect_number,
    generator,
    grid_boxes,
    random_boxes,
)
from coursepkg.grading.part1 import _iou_hints as hints
from coursepkg.ops.boxes import box_iou


def _case(title: str, box_a, box_b, hint: str = "") -> Case:
    return Case(title, {"box_a": tuple(map(float, box_a)), "box_b": tuple(map(float, box_b))}, hint)


def _random_cases(make, label: str, seed: int, count: int) -> list[Case]:
    boxes = make(2 * count, generator(seed)).double()
    return [
        _case(
            f"random {label} boxes, pair {i} (seed {seed})",
            boxes[2 * i].tolist(),
            boxes[2 * i + 1].tolist(),
        )
        for i in range(count)
    ]


CASES = [
    _case(
        "the notes' example: A (100, 100, 400, 400), B (200, 200, 300, 300)",
        (100, 100, 400, 400),
        (200, 200, 300, 300),
    ),
    _case(
        "the notes' touching boxes: they meet at one corner only",
        (100, 100, 200, 200),
        (200, 200, 300, 300),
        hints.PLUS_ONE,
    ),
    _case("boxes side by side, sharing an edge", (0, 0, 10, 10), (10, 0, 20, 10), hints.PLUS_ONE),
    _case("boxes far apart (both gaps negative)", (0, 0, 10, 10), (20, 30, 40, 50), hints.NO_CLAMP),
    _case("boxes apart in x, overlapping in y", (0, 0, 10, 10), (15, 2, 30, 8), hints.NO_CLAMP),
    _case("identical boxes", (3, 4, 13, 24), (3, 4, 13, 24)),
    _case("one box inside the other", (0, 0, 40, 40), (10, 10, 20, 30)),
    _case(
        "partial overlap with fractional coordinates", (0.5, 1.25, 3.75, 4.0), (2.0, 0.0, 6.5, 3.0)
    ),
    _case("the same boxes the other way round", (2.0, 0.0, 6.5, 3.0), (0.5, 1.25, 3.75, 4.0)),
    _case("a zero-area box (a line) inside another box", (0, 0, 10, 10), (5, 2, 5, 8)),
    _case("two zero-area boxes at the same place", (5, 5, 5, 9), (5, 5, 5, 9), hints.ZERO_UNION),
    *_random_cases(random_boxes, "continuous", seed=7, count=8),
    *_random_cases(grid_boxes, "grid", seed=8, count=12),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_iou(student, case: Case) -> None:
    got = call(student, case)
    a, b = (torch.tensor([box], dtype=torch.float64) for box in case.inputs())
    expected = box_iou(a, b)[0, 0].item()
    picture = (
        Picture("box_a (blue) and box_b (orange)")
        .add("box_a", a, "tab:blue")
        .add("box_b", b, "tab:orange")
    )
    mistakes = [
        (hint, lambda wrong=wrong: wrong()[0, 0].item()) for hint, wrong in hints.iou_mistakes(a, b)
    ]
    expect_number(got, expected, case, diagnoses=mistakes, picture=picture)
