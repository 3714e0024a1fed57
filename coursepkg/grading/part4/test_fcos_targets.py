"""Grading tests of ``fcos_targets(points_per_level, boxes, size_bounds)`` (exercise 13_fcos).

Compared with :func:`coursepkg.models.fcos.fcos_targets` for one image, without centre sampling
and with closed level ranges (the paper): the result is ``(matched, box_targets)``, ``matched``
``[N]`` int64 (the index of the point's box, -1 for background) and ``box_targets`` ``[N, 4]``
``(l*, t*, r*, b*)`` (zeros for background). Cases: the worked example, points on box edges,
largest distances exactly on a bound, a point inside several boxes, no boxes, and seeded random
boxes on a three-level grid.
"""

from __future__ import annotations

import math

import pytest
import torch

from coursepkg.grading.expect import Case, Failure, call, expect_tensor, generator, show
from coursepkg.models.anchors import multilevel_points
from coursepkg.models.fcos import fcos_targets

INSIDE = "a point ON an edge is not inside: every distance must be > 0 (strictly)"
LARGEST = "the level is chosen by the LARGEST distance max(l*, t*, r*, b*), not the smallest or the mean"
AREA = "a point inside several boxes takes the one with the SMALLEST area"
RANGE = "the range is closed: m_(i-1) <= max(l*, t*, r*, b*) <= m_i, both ends included"


def _expected(points_per_level, boxes, size_bounds):
    t = fcos_targets(
        points_per_level, [8.0] * len(points_per_level), [boxes],
        [torch.zeros(len(boxes), dtype=torch.int64)], size_bounds,
    )
    return t.matched_idxs[0], t.box_targets[0].to(boxes.dtype)


def _case(title, points_per_level, boxes, size_bounds, dtype=torch.float32, hint="") -> Case:
    points = [torch.as_tensor(p, dtype=dtype).reshape(-1, 2) for p in points_per_level]
    boxes = torch.as_tensor(boxes, dtype=dtype).reshape(-1, 4)
    return Case(title, {"points_per_level": points, "boxes": boxes,
                        "size_bounds": [float(m) for m in size_bounds]}, hint)


def _random(num_boxes: int, seed: int, dtype=torch.float32) -> Case:
    g = generator(seed)
    corner = torch.randint(0, 100, (num_boxes, 2), generator=g).to(dtype)
    size = torch.randint(2, 90, (num_boxes, 2), generator=g).to(dtype)
    points = multilevel_points([(16, 16), (8, 8), (4, 4)], [8, 16, 32], dtype=dtype)
    return _case(f"random: {num_boxes} boxes on P3-P5 of a 128-px image, {dtype} (seed {seed})",
                 points, torch.cat([corner, corner + size], dim=1), [0, 16, 32, math.inf], dtype)


INF = math.inf
CASES = [
    _case("the worked example: one level, two boxes, three points",
          [[[20, 20], [50, 50], [200, 10]]], [[0, 0, 100, 100], [10, 12, 30, 26]], [0, INF],
          hint=AREA),
    _case("points exactly on the four edges and a corner", [[[10, 20], [30, 20], [20, 10],
          [20, 30], [10, 10], [20, 20]]], [[10, 10, 30, 30]], [0, INF], hint=INSIDE),
    _case("largest distance exactly 64 on P3 [0, 64] and P4 [64, 128]",
          [[[4, 4]], [[8, 8]]], [[1, 1, 68, 6]], [0, 64, 128], hint=RANGE),
    _case("a long thin box: the smallest distance is tiny, the largest decides",
          [[[20, 5]], [[40, 5]]], [[0, 0, 100, 10]], [0, 16, INF], hint=LARGEST),
    _case("one point in three nested boxes", [[[50, 50]]],
          [[0, 0, 100, 100], [30, 30, 70, 70], [40, 45, 60, 58]], [0, INF], hint=AREA),
    _case("an image without boxes", [[[4, 4], [12, 4]], [[8, 8]]], torch.zeros(0, 4), [0, 8, INF]),
    _case("the worked example in float64", [[[20, 20], [50, 50], [200, 10]]],
          [[0, 0, 100, 100], [10, 12, 30, 26]], [0, INF], torch.float64),
    _random(3, seed=1301),
    _random(10, seed=1302),
    _random(25, seed=1303, dtype=torch.float64),
]


def _mistakes(points_per_level, boxes, size_bounds):
    """Typical wrong answers' ``matched``, for the diagnosis."""
    points = torch.cat(points_per_level)
    levels = torch.cat([torch.full((len(p),), i) for i, p in enumerate(points_per_level)])
    low = torch.tensor(size_bounds[:-1], dtype=points.dtype)[levels][:, None]
    high = torch.tensor(size_bounds[1:], dtype=points.dtype)[levels][:, None]
    x, y = points[:, 0:1], points[:, 1:2]
    d = torch.stack([x - boxes[:, 0], y - boxes[:, 1], boxes[:, 2] - x, boxes[:, 3] - y], dim=-1)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

    def pick(ok, largest=False):
        cost = torch.where(ok, -area if largest else area, torch.tensor(INF, dtype=area.dtype))
        value, index = cost.min(dim=1)
        return torch.where(value < INF, index, -1)

    big = d.amax(-1)
    yield INSIDE, lambda: pick((d.amin(-1) >= 0) & (big >= low) & (big <= high))
    yield LARGEST, lambda: pick((d.amin(-1) > 0) & (d.amin(-1) >= low) & (d.amin(-1) <= high))
    yield AREA, lambda: pick((d.amin(-1) > 0) & (big >= low) & (big <= high), largest=True)
    yield RANGE, lambda: pick((d.amin(-1) > 0) & (big > low) & (big < high))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_fcos_targets(student, case: Case) -> None:
    got = call(student, case)
    points_per_level, boxes, size_bounds = case.inputs()
    matched, targets = _expected(points_per_level, boxes, size_bounds)
    if not isinstance(got, tuple) or len(got) != 2:
        raise Failure(
            f"expected a tuple (matched, box_targets), got {type(got).__name__}",
            case=case, expected=f"({show(matched)}, {show(targets)})", got=show(got),
            hint="return matched, box_targets",
        )
    expect_tensor(got[0], matched, case, exact_dtype=True,
                  diagnoses=_mistakes(points_per_level, boxes, size_bounds) if len(boxes) else ())
    expect_tensor(got[1], targets, case, atol=1e-4, rtol=1e-5)
