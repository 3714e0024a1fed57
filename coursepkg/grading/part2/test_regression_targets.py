"""Grading tests of ``regression_targets(proposals, gt_boxes)``, R-CNN's targets (exercise 05_rcnn).

Compared with :func:`coursepkg.ops.box_coding.encode_boxes` (``encode_boxes(gt_boxes, proposals)``)
on the worked example, on the cases where the notes' typos and the usual mistakes show (proposals
that are not square, identical boxes, a ground truth inside its proposal, float64, no boxes) and on
seeded random pairs of several sizes, near (R-CNN's training pairs) and arbitrary.
"""

from __future__ import annotations

import pytest
import torch

from coursepkg.grading.expect import Case, Picture, call, expect_tensor
from coursepkg.grading.part2 import _coding
from coursepkg.ops.box_coding import encode_boxes

NAMES = ("proposals", "gt_boxes")


def _case(title: str, p, gt, dtype=torch.float32, hint: str = "") -> Case:
    return _coding.box_case(title, p, gt, NAMES, dtype, hint)


def _random(n: int, seed: int, *, near: bool, dtype=torch.float32) -> Case:
    p, gt = _coding.random_pair(n, seed, near=near)
    kind = "near copies of the proposals" if near else "anywhere"
    return _case(f"random pairs, N={n}, ground truth {kind}, {dtype} (seed {seed})", p, gt, dtype)


CASES = [
    _case(
        "the worked example: P (10, 20, 50, 100), G (20, 30, 80, 110)",
        [10, 20, 50, 100],
        [20, 30, 80, 110],
    ),
    _case("identical boxes: all targets 0", [3, 4, 13, 24], [3, 4, 13, 24]),
    _case(
        "a wide proposal and a tall ground truth",
        [0, 0, 80, 20],
        [30, -10, 50, 50],
        hint=_coding.TYPO_H,
    ),
    _case(
        "the ground truth inside its proposal (negative log targets)",
        [0, 0, 40, 60],
        [10, 10, 20, 30],
    ),
    _case(
        "the ground truth moved only in y, proposal 10 wide and 40 high",
        [0, 0, 10, 40],
        [0, 8, 10, 48],
        hint=_coding.TYPO_Y,
    ),
    _case(
        "three pairs, float64",
        [[0, 0, 10, 10], [5, 5, 25, 15], [100, 50, 160, 90]],
        [[1, 2, 12, 9], [0, 0, 30, 30], [110, 40, 150, 100]],
        torch.float64,
    ),
    _case("no boxes (N = 0)", torch.zeros(0, 4), torch.zeros(0, 4), hint="return a [0, 4] tensor"),
    _random(1, seed=101, near=True),
    _random(5, seed=102, near=True),
    _random(8, seed=103, near=False),
    _random(40, seed=104, near=True, dtype=torch.float64),
    _random(200, seed=105, near=False),
    _random(500, seed=106, near=True),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_regression_targets(student, case: Case) -> None:
    got = call(student, case)
    p, gt = case.inputs()
    expected = encode_boxes(gt, p)
    picture = None
    if 0 < len(p) <= 3:
        picture = (
            Picture("proposals (blue) and their ground truths (green)")
            .add("proposals", p.double(), "tab:blue")
            .add("ground truth", gt.double(), "tab:green")
        )
    expect_tensor(
        got,
        expected,
        case,
        atol=1e-4,
        rtol=1e-4,
        diagnoses=_coding.target_mistakes(p, gt),
        picture=picture,
    )
