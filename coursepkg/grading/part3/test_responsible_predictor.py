"""Grading tests of ``responsible_predictor(predictions, boxes, image_size, boxes_per_cell)`` (exercise 08_yolo).

For every ground-truth box: the grid cell ``(row, col)`` that holds its centre and, among that
cell's B predictors, the one whose box has the highest IoU with it (ties: the lowest index).
Compared with :func:`coursepkg.models.yolo.grid_cells` and
:func:`coursepkg.models.yolo.responsible_predictor` on the worked example, centres exactly on a
cell boundary and on the image's far border, boxes whose corner lies in another cell than their
centre, a non-square image, two objects in one cell, ties, no objects, B = 3, and seeded random
predictions and boxes.
"""

from __future__ import annotations

import pytest
import torch

from coursepkg.grading.expect import Case, call, expect_tensor, generator
from coursepkg.models.yolo import grid_cells, responsible_predictor

CENTRE = (
    "an object belongs to the cell of its CENTRE ((x1 + x2) / 2, (y1 + y2) / 2): "
    "col = floor(c_x * S / W), row = floor(c_y * S / H)"
)
BORDER = (
    "a centre exactly on the right or bottom border (c_x = W) gives floor(S) = S: clamp the index "
    "to S - 1 so that it stays on the grid"
)
IOU = (
    "the responsible predictor has the highest IoU with the object, not the highest confidence; "
    "compare boxes in the same units (centres inside the cell in cells, sizes w * S, h * S)"
)
TIES = "on equal IoUs (for example all 0) take the lowest predictor index"


def _case(title, predictions, boxes, image_size, boxes_per_cell=2, hint="", dtype=torch.float32) -> Case:
    def t(x):
        return x.to(dtype) if torch.is_tensor(x) else torch.tensor(x, dtype=dtype)

    return Case(
        title,
        {
            "predictions": t(predictions),
            "boxes": t(boxes).reshape(-1, 4),
            "image_size": tuple(image_size),
            "boxes_per_cell": boxes_per_cell,
        },
        hint,
    )


def _grid(s, b, c, fill=None):
    """Predictions [S, S, B * 5 + C] with every box in the middle of its cell, half a cell wide."""
    out = torch.zeros(s, s, b * 5 + c)
    for k in range(b):
        out[..., 5 * k : 5 * k + 4] = torch.tensor([0.5, 0.5, 0.5 / s, 0.5 / s])
        out[..., 5 * k + 4] = 0.5
    if fill:
        for (i, j, k), values in fill.items():
            out[i, j, 5 * k : 5 * k + len(values)] = torch.tensor(values)
    return out


def _random(s, b, c, g_count, image_size, seed, dtype=torch.float32) -> Case:
    g = generator(seed)
    predictions = torch.rand(s, s, b * 5 + c, generator=g, dtype=torch.float64)
    predictions[..., [5 * k + 2 for k in range(b)] + [5 * k + 3 for k in range(b)]] *= 0.6
    height, width = image_size
    xy = torch.rand(g_count, 2, generator=g, dtype=torch.float64) * torch.tensor([width, height]) * 0.95
    room = torch.tensor([width, height]) - xy
    wh = torch.rand(g_count, 2, generator=g, dtype=torch.float64) * room * 0.7
    boxes = torch.cat([xy, xy + wh], dim=1)
    return _case(
        f"random: S={s}, B={b}, C={c}, {g_count} objects on {height} x {width}, {dtype} (seed {seed})",
        predictions,
        boxes,
        image_size,
        b,
        dtype=dtype,
    )


# The worked example: S = 2 on a 100 x 100 image, one object (10, 20, 40, 50), centre (25, 35).
EXAMPLE = _grid(2, 2, 1, {(0, 0, 0): [0.5, 0.5, 0.3, 0.3, 0.2], (0, 0, 1): [0.9, 0.9, 0.5, 0.5, 0.9]})

CASES = [
    _case("the worked example: IoU 0.5 beats IoU 0.21 (and a higher confidence)", EXAMPLE,
          [[10.0, 20.0, 40.0, 50.0]], (100, 100), hint=IOU),
    _case(
        "centres exactly on cell boundaries (S = 8, 16-px cells): they belong to the right / lower cell",
        _grid(8, 2, 3),
        [[24.0, 8.0, 40.0, 24.0], [60.0, 60.0, 68.0, 68.0], [0.0, 0.0, 32.0, 32.0]],
        (128, 128),
        hint=CENTRE,
    ),
    _case(
        "centres on the image's right and bottom border (zero-width boxes there)",
        _grid(8, 2, 3),
        [[128.0, 40.0, 128.0, 50.0], [10.0, 128.0, 20.0, 128.0], [128.0, 128.0, 128.0, 128.0]],
        (128, 128),
        hint=BORDER,
    ),
    _case(
        "boxes whose top-left corner lies in another cell than their centre",
        _grid(4, 2, 2, {(1, 2, 1): [0.4, 0.6, 0.3, 0.3, 0.1]}),
        [[40.0, 20.0, 100.0, 70.0], [2.0, 2.0, 126.0, 126.0]],
        (128, 128),
        hint=CENTRE,
    ),
    _case(
        "a non-square image: 60 high, 120 wide, S = 3 (20 x 40-px cells)",
        _grid(3, 2, 2, {(2, 0, 1): [0.5, 0.5, 0.3, 0.6, 0.0]}),
        [[30.0, 45.0, 60.0, 55.0], [90.0, 5.0, 110.0, 15.0]],
        (60, 120),
        hint=CENTRE,
    ),
    _case(
        "two objects in one cell: each gets its own answer",
        _grid(2, 2, 2, {(0, 0, 1): [0.3, 0.3, 0.2, 0.2, 0.5]}),
        [[10.0, 10.0, 40.0, 40.0], [5.0, 5.0, 25.0, 25.0]],
        (100, 100),
        hint=IOU,
    ),
    _case("predictors with equal boxes: the first one", _grid(4, 2, 1), [[10.0, 10.0, 20.0, 20.0]],
          (64, 64), hint=TIES),
    _case(
        "boxes far from every prediction (all IoUs 0): the first predictor",
        _grid(2, 2, 1, {(0, 1, 0): [0.0, 0.0, 0.0, 0.0, 0.1], (0, 1, 1): [0.0, 0.0, 0.0, 0.0, 0.9]}),
        [[90.0, 40.0, 99.0, 49.0]],
        (100, 100),
        hint=TIES,
    ),
    _case("no objects: a [0, 3] tensor", _grid(7, 2, 20), torch.zeros(0, 4), (448, 448)),
    _case(
        "B = 3 predictors per cell, the third fits best",
        _grid(2, 3, 2, {(1, 1, 2): [0.5, 0.5, 0.4, 0.4, 0.0], (1, 1, 0): [0.5, 0.5, 0.05, 0.05, 1.0]}),
        [[60.0, 60.0, 100.0, 100.0]],
        (100, 100),
        3,
        hint=IOU,
    ),
    _random(7, 2, 20, 6, (448, 448), seed=801),
    _random(8, 2, 5, 12, (128, 128), seed=802),
    _random(4, 3, 3, 9, (96, 160), seed=803, dtype=torch.float64),
    _random(1, 2, 1, 3, (50, 50), seed=804),
    _random(13, 2, 4, 40, (416, 416), seed=805),
]


def _expected(predictions, boxes, image_size, boxes_per_cell):
    s = predictions.shape[0]
    found = grid_cells(boxes, image_size, s)
    rows, cols = found.cells[:, 0], found.cells[:, 1]
    pred_boxes = predictions[rows, cols, : 5 * boxes_per_cell].reshape(-1, boxes_per_cell, 5)[..., :4]
    best = responsible_predictor(pred_boxes, found.boxes.to(predictions.dtype), s)
    return torch.cat([found.cells, best.index[:, None]], dim=1)  # [G, 3]


def _mistakes(predictions, boxes, image_size, boxes_per_cell):
    s, b = predictions.shape[0], boxes_per_cell
    right = _expected(predictions, boxes, image_size, b)

    def by_confidence():
        confidences = predictions[right[:, 0], right[:, 1], 4 : 5 * b : 5]  # [G, B]
        return torch.cat([right[:, :2], confidences.argmax(dim=1, keepdim=True)], dim=1)

    def by_corner():
        corner = boxes.clone()
        corner[:, 2:] = corner[:, :2]  # a zero-size box at the top-left corner
        cells = grid_cells(corner, image_size, s).cells
        return torch.cat([cells, right[:, 2:]], dim=1)

    yield IOU, by_confidence
    yield CENTRE, by_corner


@pytest.mark.parametrize("case", CASES, ids=str)
def test_responsible_predictor(student, case: Case) -> None:
    got = call(student, case)
    predictions, boxes, image_size, boxes_per_cell = case.inputs()
    expected = _expected(predictions, boxes, image_size, boxes_per_cell)
    expect_tensor(got, expected, case, diagnoses=_mistakes(predictions, boxes, image_size, boxes_per_cell))
