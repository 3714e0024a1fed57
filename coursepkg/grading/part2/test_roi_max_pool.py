"""Grading tests of ``roi_max_pool(features, box, output_size, spatial_scale)`` (exercise 06_fast_rcnn).

Compared with :func:`coursepkg.ops.roi_pool.roi_pool` (the same results as ``torchvision.ops.roi_pool``)
on the worked example, on the cases each rule is about (rounding, halves included; spatial_scale;
bins that overlap when the RoI has fewer cells than the grid; RoIs partly or fully outside the map,
whose empty bins give 0; negative features; a zero-size box; float64) and on seeded random maps,
RoIs, scales and grids of several sizes.

Random RoIs are drawn so that the result does not depend on floating-point details the statement
leaves open: a scaled corner never lies within 1e-4 of a half (float32 and float64 round it the
same way), and every bin edge ``p * (cells / bins)`` lies away from an integer unless it is one
exactly in float32, float64 and exact arithmetic alike.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from coursepkg.grading.expect import Case, call, expect_tensor, generator
from coursepkg.ops.roi_pool import roi_pool

AVERAGE = "RoI *max* pooling: each bin keeps the largest value of its cells, not their mean"
ROUND = (
    "round the scaled corners to the nearest cell, halves away from zero (2.5 -> 3): "
    "math.floor(v * spatial_scale + 0.5); int() and math.floor alone truncate, and Python's "
    "round() and torch.round send halves to the even number"
)
SCALE = "multiply the box by spatial_scale first: the box is in image pixels, the map in cells"
EDGES = (
    "bin p covers rows floor(p * h / H_out) up to ceil((p + 1) * h / H_out) (exclusive), "
    "so neighbouring bins may share a row; the end is rounded UP"
)
INCLUSIVE = (
    "the rounded window covers cells x1 .. x2 INCLUSIVE: it is x2 - x1 + 1 cells wide (at least 1)"
)
EMPTY = (
    "clip each bin to the feature map; a bin with no cell inside the map gives 0 (not -inf, "
    "not the max of the neighbouring cells)"
)


def _case(title: str, features, box, output_size, spatial_scale: float, hint: str = "") -> Case:
    features = (
        features if torch.is_tensor(features) else torch.tensor(features, dtype=torch.float32)
    )
    box = torch.tensor(box, dtype=features.dtype) if not torch.is_tensor(box) else box
    return Case(
        title,
        {
            "features": features,
            "box": box,
            "output_size": tuple(output_size),
            "spatial_scale": spatial_scale,
        },
        hint,
    )


def _safe_axis(lo: float, hi: float, bins: int, scale: float) -> bool:
    """No float-rounding knife edge on this axis (see the module docstring)."""
    corners = []
    for v in (lo, hi):
        s32 = float(torch.tensor(v, dtype=torch.float32) * torch.tensor(scale, dtype=torch.float32))
        s64 = v * scale
        if abs(s64 - math.floor(s64) - 0.5) < 1e-4 or abs(s32 - math.floor(s32) - 0.5) < 1e-4:
            return False
        corners.append(math.floor(s64 + 0.5))
    cells = max(corners[1] - corners[0] + 1, 1)
    size32 = torch.tensor(cells, dtype=torch.float32) / bins
    for p in range(bins + 1):
        exact = Fraction(p * cells, bins)
        values = (float(p * size32), p * (cells / bins))
        for v in values:
            if exact.denominator == 1:
                if v != exact:
                    return False
            elif abs(v - round(v)) < 1e-4:
                return False
    return True


def _random(
    channels: int, size: tuple[int, int], output_size, scale: float, seed: int, *, outside=False
) -> Case:
    g = generator(seed)
    height, width = size
    extent = 1.3 if outside else 1.0  # how far past the map a box may reach, in map sizes
    while True:
        xy = torch.rand(2, generator=g, dtype=torch.float64) * torch.tensor([width, height]) / scale
        wh = torch.rand(2, generator=g, dtype=torch.float64) * torch.tensor([width, height]) / scale
        box = torch.cat([xy, (xy + wh * extent)]).tolist()
        x1, y1, x2, y2 = (round(v, 2) for v in box)
        if _safe_axis(x1, x2, output_size[1], scale) and _safe_axis(y1, y2, output_size[0], scale):
            break
    features = torch.randn(channels, height, width, generator=g, dtype=torch.float64)
    where = " (may reach past the map)" if outside else ""
    return _case(
        f"random map {channels} x {height} x {width}, RoI{where}, grid {tuple(output_size)}, "
        f"spatial_scale {scale:g} (seed {seed})",
        features.float(),
        [x1, y1, x2, y2],
        output_size,
        scale,
    )


_GRID = torch.arange(64, dtype=torch.float32).reshape(1, 8, 8)  # cell (i, j) holds 8 i + j

CASES = [
    _case(
        "the worked example: 8 x 8 map of 0..63, box (0, 3, 7, 7), 2 x 2 grid, scale 1",
        _GRID,
        [0, 3, 7, 7],
        (2, 2),
        1.0,
        EDGES,
    ),
    _case(
        "image pixels and spatial_scale 1/16: box (16, 32, 100, 90) on the 8 x 8 map",
        _GRID,
        [16, 32, 100, 90],
        (2, 2),
        1 / 16,
        SCALE,
    ),
    _case(
        "corners that land on halves: 2.5 rounds up to 3, 5.5 to 6",
        _GRID,
        [5, 1, 11, 7],
        (2, 3),
        0.5,
        ROUND,
    ),
    _case(
        "corners that must round down: 1.3 -> 1, 4.2 -> 4",
        _GRID,
        [1.3, 2.2, 4.2, 6.4],
        (2, 2),
        1.0,
        ROUND,
    ),
    _case(
        "a 2 x 3-cell RoI pooled to a 4 x 4 grid: bins share cells",
        _GRID,
        [2, 4, 4, 5],
        (4, 4),
        1.0,
        EDGES,
    ),
    _case(
        "a grid that does not divide the RoI: 7 cells into 3 bins",
        _GRID,
        [0, 0, 6, 6],
        (3, 3),
        1.0,
        EDGES,
    ),
    _case(
        "a box reaching past the bottom-right corner of the map",
        -_GRID - 1,
        [5, 6, 12, 11],
        (3, 3),
        1.0,
        EMPTY,
    ),
    _case(
        "a box entirely outside the map: every bin empty, all zeros",
        _GRID.repeat(2, 1, 1),
        [20, 20, 30, 25],
        (2, 2),
        1.0,
        EMPTY,
    ),
    _case(
        "all features negative (the maximum is still negative)",
        -_GRID - 1,
        [1, 1, 5, 4],
        (2, 2),
        1.0,
        AVERAGE,
    ),
    _case(
        "a zero-size box: one cell, copied into every bin",
        _GRID,
        [3, 2, 3, 2],
        (2, 2),
        1.0,
        INCLUSIVE,
    ),
    _case(
        "three channels, float64, one bin for the whole RoI",
        torch.arange(3 * 5 * 6, dtype=torch.float64).reshape(3, 5, 6).remainder(17),
        [1, 0, 4, 3],
        (1, 1),
        1.0,
    ),
    _random(1, (6, 9), (2, 2), 1.0, seed=201),
    _random(3, (12, 10), (3, 2), 0.5, seed=202),
    _random(4, (20, 25), (7, 7), 1 / 16, seed=203),
    _random(2, (16, 16), (4, 5), 0.25, seed=204, outside=True),
    _random(8, (30, 40), (7, 7), 1 / 8, seed=205),
    _random(5, (9, 31), (3, 6), 0.3, seed=206, outside=True),
    _random(16, (38, 50), (7, 7), 1 / 16, seed=207),
    _random(2, (5, 5), (6, 6), 1.0, seed=208),
]


def _slow_pool(features, corners, output_size, *, reduce="max", end=math.ceil):
    """A loop version of the rules with rounded ``corners`` given, and one rule swappable."""
    channels, height, width = features.shape
    (out_h, out_w), (x1, y1, x2, y2) = output_size, corners
    roi_w, roi_h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
    out = features.new_zeros(channels, out_h, out_w)
    for p in range(out_h):
        top = min(max(y1 + math.floor(p * roi_h / out_h), 0), height)
        bottom = min(max(y1 + end((p + 1) * roi_h / out_h), 0), height)
        for q in range(out_w):
            left = min(max(x1 + math.floor(q * roi_w / out_w), 0), width)
            right = min(max(x1 + end((q + 1) * roi_w / out_w), 0), width)
            if bottom > top and right > left:
                cells = features[:, top:bottom, left:right]
                out[:, p, q] = cells.amax(dim=(1, 2)) if reduce == "max" else cells.mean(dim=(1, 2))
    return out


def _mistakes(features, box, output_size, scale):
    """The answers of the usual mistakes, from the reference with one rule changed."""

    def pool(boxes_in_cells):
        return roi_pool(features[None], [boxes_in_cells[None]], output_size)[0]

    corners = [math.floor(v * scale + 0.5) for v in box.tolist()]
    yield AVERAGE, lambda: _slow_pool(features, corners, output_size, reduce="mean")
    yield EDGES, lambda: _slow_pool(features, corners, output_size, end=math.floor)
    yield SCALE, lambda: pool(box)
    yield ROUND, lambda: pool(torch.floor(box * scale))
    yield ROUND, lambda: pool(torch.round(box * scale))
    yield (
        INCLUSIVE,
        lambda: pool(
            torch.cat([torch.floor(box[:2] * scale + 0.5), torch.floor(box[2:] * scale + 0.5) - 1])
        ),
    )


@pytest.mark.parametrize("case", CASES, ids=str)
def test_roi_max_pool(student, case: Case) -> None:
    got = call(student, case)
    features, box, output_size, scale = case.inputs()
    expected = roi_pool(features[None], [box[None]], output_size, spatial_scale=scale)[0]
    expect_tensor(
        got, expected, case, atol=0, rtol=0, diagnoses=_mistakes(features, box, output_size, scale)
    )
