"""Grading tests of ``window_positions(length, window, step)`` (exercise 01_sliding_windows).

Compared with :func:`coursepkg.ops.sliding_windows.window_positions` on the notes' example (where the
notes miss the last window), on edge cases and on seeded random sizes.
"""

from __future__ import annotations

import pytest
import torch

from coursepkg.grading.expect import Case, call, expect_int_list, generator
from coursepkg.ops.sliding_windows import window_positions

LAST = (
    "the last window starts at length - window when that is a multiple of step: "
    "range's stop is exclusive, so stop at length - window + 1"
)


def _case(title: str, length: int, window: int, step: int, hint: str = "") -> Case:
    return Case(title, {"length": length, "window": window, "step": step}, hint)


def _random_cases(seed: int, count: int, max_length: int) -> list[Case]:
    g = generator(seed)
    cases = []
    for i in range(count):
        length = int(torch.randint(1, max_length + 1, (1,), generator=g))
        window = int(torch.randint(1, length + 1, (1,), generator=g))
        step = int(torch.randint(1, max(2, length // 3), (1,), generator=g))
        cases.append(
            _case(
                f"random sizes {i}: length={length}, window={window}, step={step} (seed {seed})",
                length,
                window,
                step,
            )
        )
    return cases


CASES = [
    _case("the notes' example: width 128, window 64, step 8", 128, 64, 8, LAST),
    _case("a window as large as the image: one position", 50, 50, 10, LAST),
    _case(
        "length - window not a multiple of step",
        100,
        30,
        20,
        "positions are multiples of step only: 0, step, 2 * step, ... while the window fits",
    ),
    _case("step 1: every position", 10, 4, 1, LAST),
    _case(
        "a step larger than the free space",
        40,
        30,
        25,
        "only position 0 fits when step > length - window",
    ),
    _case("a window of one pixel", 7, 1, 3),
    *_random_cases(seed=11, count=6, max_length=60),
    *_random_cases(seed=12, count=4, max_length=2000),
]


def _mistakes(length: int, window: int, step: int):
    yield LAST, lambda: list(range(0, length - window, step))
    yield (
        "windows must fit inside the image: the last start is length - window, not length - 1",
        lambda: list(range(0, length, step)),
    )


@pytest.mark.parametrize("case", CASES, ids=str)
def test_window_positions(student, case: Case) -> None:
    got = call(student, case)
    expect_int_list(
        got, window_positions(*case.inputs()), case, diagnoses=_mistakes(*case.inputs())
    )
