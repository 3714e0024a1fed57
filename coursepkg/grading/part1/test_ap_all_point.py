"""Grading tests of ``ap_all_point(recall, precision)`` (exercise 04_evaluation).

Compared with ``coursepkg.evaluation.average_precision(recall, precision, "all-point")`` on the
notes' example, on curves where the precision envelope or the sentinels matter, on empty curves
and on the curves of seeded random ranked lists.
"""

from __future__ import annotations

import pytest
import torch

from coursepkg.evaluation import average_precision
from coursepkg.grading.expect import Case, call, expect_number
from coursepkg.grading.part1 import _curves

CASES = [
    *_curves.fixed_cases(),
    *_curves.random_curve_cases(seed=41, sizes=(5, 20), gts=(3, 7)),
    *_curves.random_curve_cases(seed=42, sizes=(100,), gts=(13, 41)),
]


def _mistakes(recall: torch.Tensor, precision: torch.Tensor):
    yield _curves.ENVELOPE, lambda: _curves.no_envelope(recall, precision)
    yield (
        "the area starts at recall 0: the first rectangle spans 0 to recall[0] (prepend the sentinel "
        "recall 0)",
        lambda: float(
            ((recall[1:] - recall[:-1]) * precision.flip(0).cummax(0).values.flip(0)[1:]).sum()
        ),
    )
    yield (
        "all-point AP sums rectangles (r_n - r_(n-1)) * p_interp(r_n), not trapezoids",
        lambda: float(
            torch.trapezoid(
                torch.cat([precision.new_ones(1), precision]),
                torch.cat([recall.new_zeros(1), recall]),
            )
        ),
    )


@pytest.mark.parametrize("case", CASES, ids=str)
def test_ap_all_point(student, case: Case) -> None:
    got = call(student, case)
    recall, precision = case.inputs()
    expected = float(average_precision(recall, precision, "all-point"))
    expect_number(got, expected, case, atol=1e-9, rtol=1e-7, diagnoses=_mistakes(recall, precision))
