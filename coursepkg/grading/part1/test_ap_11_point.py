"""Grading tests of ``ap_11_point(recall, precision)`` (exercise 04_evaluation).

Compared with ``coursepkg.evaluation.average_precision(recall, precision, "11-point")`` on the
notes' example (8/11), on curves where the interpolation matters, on empty curves and on the
curves of seeded random ranked lists.
"""

from __future__ import annotations

import pytest
import torch

from coursepkg.evaluation import average_precision
from coursepkg.grading.expect import Case, call, expect_number
from coursepkg.grading.part1 import _curves

CASES = [
    *_curves.fixed_cases(),
    *_curves.random_curve_cases(seed=43, sizes=(5, 20), gts=(3, 7)),
    *_curves.random_curve_cases(seed=44, sizes=(100,), gts=(13, 41)),
]


def _levels(recall: torch.Tensor, precision: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """max(precision where recall >= level) for each level, 0 where none."""
    reached = recall[None, :] >= levels[:, None]
    return (
        torch.where(reached, precision[None, :], precision.new_zeros(())).amax(dim=1)
        if recall.numel()
        else levels * 0
    )


def _mistakes(recall: torch.Tensor, precision: torch.Tensor):
    eleven = torch.linspace(0, 1, 11, dtype=torch.float64)
    yield (
        "there are 11 recall levels 0.0, 0.1, ..., 1.0: divide the sum by 11",
        lambda: float(_levels(recall, precision, eleven).sum() / 10),
    )
    yield (
        "the 11 levels include 1.0: 0.0, 0.1, ..., 1.0",
        lambda: float(_levels(recall, precision, eleven[:10]).sum() / 11),
    )
    yield (
        "there are 11 recall levels 0.0, 0.1, ..., 1.0",
        lambda: float(_levels(recall, precision, eleven[:10]).mean()),
    )
    yield (
        "at each level take the largest precision among ALL points with recall >= level, not the "
        "precision of the first such point",
        lambda: float(
            torch.stack(
                [
                    precision[recall >= t][0]
                    if bool((recall >= t).any())
                    else precision.new_zeros(())
                    for t in eleven
                ]
            ).mean()
        ),
    )


@pytest.mark.parametrize("case", CASES, ids=str)
def test_ap_11_point(student, case: Case) -> None:
    got = call(student, case)
    recall, precision = case.inputs()
    expected = float(average_precision(recall, precision, "11-point"))
    expect_number(got, expected, case, atol=1e-9, rtol=1e-7, diagnoses=_mistakes(recall, precision))
