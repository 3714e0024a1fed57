"""Grading tests of ``iou_pairwise(boxes1, boxes2)``, the [N, M] IoU matrix (exercise 02_boxes_iou).

Compared with :func:`coursepkg.ops.boxes.box_iou` on the notes' examples, on edge cases (touching,
disjoint, zero-area boxes, empty sets, N != M) and on seeded random sets of several sizes, in
float32 and float64 (the result keeps the boxes' dtype).
"""

from __future__ import annotations

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
)
from coursepkg.grading.part1 import _iou_hints as hints
from coursepkg.ops.boxes import box_iou


def _case(title: str, boxes1, boxes2, hint: str = "") -> Case:
    def as_boxes(b):
        return b if torch.is_tensor(b) else torch.tensor(b, dtype=torch.float32).reshape(-1, 4)

    return Case(title, {"boxes1": as_boxes(boxes1), "boxes2": as_boxes(boxes2)}, hint)


def _random(
    n: int, m: int, seed: int, make=random_boxes, label: str = "", dtype=torch.float32
) -> Case:
    g = generator(seed)
    kind = f"{label} " if label else ""
    kind += "" if dtype == torch.float32 else f"{str(dtype).removeprefix('torch.')} "
    return _case(
        f"random {kind}boxes, N={n}, M={m} (seed {seed})",
        make(n, g, dtype=dtype),
        make(m, g, dtype=dtype),
    )


CASES = [
    _case(
        "the notes' example: A (100, 100, 400, 400), B (200, 200, 300, 300)",
        [[100, 100, 400, 400]],
        [[200, 200, 300, 300]],
    ),
    _case(
        "the notes' touching boxes: they meet at one corner only",
        [[100, 100, 200, 200]],
        [[200, 200, 300, 300]],
        hints.PLUS_ONE,
    ),
    _case(
        "boxes far apart (both gaps negative)", [[0, 0, 10, 10]], [[20, 30, 40, 50]], hints.NO_CLAMP
    ),
    _case(
        "two boxes against three (N != M)",
        [[0, 0, 10, 10], [5, 5, 15, 15]],
        [[0, 0, 10, 10], [10, 0, 20, 10], [2, 4, 6, 30]],
        "the result is [N, M]: row i holds boxes1[i] against every box of boxes2 "
        "(broadcast boxes1[:, None, :] against boxes2[None, :, :])",
    ),
    _case(
        "zero-area boxes among normal ones",
        [[5, 5, 5, 9], [0, 0, 10, 10]],
        [[5, 5, 5, 9], [3, 3, 3, 3], [0, 0, 4, 4]],
        hints.ZERO_UNION,
    ),
    _case(
        "no boxes in boxes1 (N = 0)",
        torch.zeros(0, 4),
        [[0, 0, 1, 1], [1, 1, 2, 2]],
        "with N = 0 the result is an empty [0, M] tensor",
    ),
    _case(
        "no boxes in boxes2 (M = 0)",
        [[0, 0, 1, 1]],
        torch.zeros(0, 4),
        "with M = 0 the result is an empty [N, 0] tensor",
    ),
    _random(1, 3, seed=1),
    _random(4, 4, seed=2, make=grid_boxes, label="grid"),
    _random(6, 2, seed=3),
    _random(9, 11, seed=4, make=grid_boxes, label="grid"),
    _random(5, 7, seed=5, dtype=torch.float64),
    _random(40, 25, seed=6),
    _random(30, 30, seed=7, make=grid_boxes, label="grid"),
    _random(200, 300, seed=8),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_iou_pairwise(student, case: Case) -> None:
    got = call(student, case)
    boxes1, boxes2 = case.inputs()
    picture = None
    if 0 < len(boxes1) + len(boxes2) <= 10:
        picture = Picture("boxes1 (blue) and boxes2 (orange)")
        picture.add("boxes1", boxes1, "tab:blue", texts=[f"1:{i}" for i in range(len(boxes1))])
        picture.add("boxes2", boxes2, "tab:orange", texts=[f"2:{j}" for j in range(len(boxes2))])
    mistakes = list(hints.iou_mistakes(boxes1, boxes2))
    mistakes.append(
        (
            "the result is transposed: it must be [N, M] (rows follow boxes1)",
            lambda: box_iou(boxes2, boxes1),
        )
    )
    expect_tensor(got, box_iou(boxes1, boxes2), case, diagnoses=mistakes, picture=picture)
