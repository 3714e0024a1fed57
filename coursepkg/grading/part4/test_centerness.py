"""Grading tests of ``centerness(distances)`` (exercise 13_fcos).

Compared with :func:`coursepkg.models.fcos.centerness_targets`: ``sqrt(min(l, r) / max(l, r) *
min(t, b) / max(t, b))`` of every row of a ``[N, 4]`` tensor, 0 where a ratio is ``0 / 0``.
Cases: the centre of a box, a point on an edge, the worked example, degenerate boxes, float64, no
points, and seeded random distances of several sizes.
"""

from __future__ import annotations

import pytest
import torch

from coursepkg.grading.expect import Case, call, expect_tensor, generator
from coursepkg.models.fcos import centerness_targets

PAIRS = "pair l with r and t with b: min(l, r) / max(l, r), not min(l, t) / max(l, t)"
SQRT = "centerness is the SQUARE ROOT of the product of the two ratios"
ZERO = "a ratio 0 / 0 (a box of zero width or height) counts as 0, not NaN"


def _case(title, distances, dtype=torch.float32, hint="") -> Case:
    return Case(title, {"distances": torch.as_tensor(distances, dtype=dtype).reshape(-1, 4)}, hint)


def _random(n: int, seed: int, dtype=torch.float32) -> Case:
    d = torch.rand(n, 4, generator=generator(seed), dtype=dtype) * 60
    return _case(f"random distances, N={n}, {dtype} (seed {seed})", d, dtype, hint=PAIRS)


CASES = [
    _case("the centre of a box: 1", [[5, 5, 5, 5]]),
    _case("the worked example (2, 3, 8, 1): sqrt(2/8 * 1/3) = 0.2887", [[2, 3, 8, 1]], hint=PAIRS),
    _case("a point on an edge: 0", [[0, 4, 6, 4]]),
    _case("left-right centred, top-bottom not", [[10, 1, 10, 9]], hint=SQRT),
    _case("a zero-width box: 0, not NaN", [[0, 2, 0, 3]], hint=ZERO),
    _case("several rows, float64", [[1, 2, 3, 4], [4, 3, 2, 1], [7, 7, 7, 7]], torch.float64),
    _case("no points", torch.zeros(0, 4)),
    _random(5, seed=1311),
    _random(100, seed=1312),
    _random(1000, seed=1313, dtype=torch.float64),
]


def _mistakes(d):
    left, top, right, bottom = d.unbind(-1)
    lr = torch.minimum(left, right) / torch.maximum(left, right)
    tb = torch.minimum(top, bottom) / torch.maximum(top, bottom)
    yield PAIRS, lambda: torch.sqrt(torch.minimum(left, top) / torch.maximum(left, top)
                                    * torch.minimum(right, bottom) / torch.maximum(right, bottom))
    yield SQRT, lambda: lr * tb
    yield ZERO, lambda: torch.sqrt(lr * tb)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_centerness(student, case: Case) -> None:
    got = call(student, case, new_tensor=True)
    (distances,) = case.inputs()
    expect_tensor(got, centerness_targets(distances), case, diagnoses=_mistakes(distances))
