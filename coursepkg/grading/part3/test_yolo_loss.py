"""Grading tests of ``yolo_loss(predictions, target_boxes, target_labels)`` (exercise 08_yolo).

Compared with ``coursepkg.models.yolo.yolo_v1_loss(..., boxes_per_cell=2, reduction="sum").total``:
Eq. 3 of the paper with λ_coord = 5, λ_noobj = 0.5, square roots on w and h, the responsible
predictor of an object cell chosen by IoU, its confidence target the IoU, every other predictor's
target 0, and the class term once per object cell. Cases: the worked example, an empty image,
a confident predictor that is not the responsible one, boxes much smaller than a cell, float64,
and seeded random batches of several sizes.
"""

from __future__ import annotations

import pytest
import torch

from coursepkg.grading.expect import Case, call, expect_number, generator
from coursepkg.models.yolo import _responsible_predictor, yolo_v1_loss

SQRT = "compare the SQUARE ROOTS of the widths and heights: (sqrt(w) - sqrt(w^))^2 + (sqrt(h) - sqrt(h^))^2"
TARGET = (
    "the responsible predictor's confidence target is the IoU of its box with the object "
    "(not 1)"
)
NOOBJ = (
    "lambda_noobj = 0.5 weighs only the no-object terms: every predictor that is not responsible "
    "(also the other predictor of an object cell); the responsible confidence has weight 1"
)
RESPONSIBLE = "the responsible predictor is the one with the highest IoU, not the highest confidence"
EMPTY = "a cell without object (label -1) contributes only 0.5 * confidence^2 per predictor"


def _case(title, predictions, boxes, labels, dtype=torch.float64, hint="") -> Case:
    def t(x, dt):
        return x.to(dt) if torch.is_tensor(x) else torch.tensor(x, dtype=dt)

    return Case(
        title,
        {
            "predictions": t(predictions, dtype),
            "target_boxes": t(boxes, dtype),
            "target_labels": t(labels, torch.int64),
        },
        hint,
    )


def _example():
    """The chapter's two-object example: S = 2, B = 2, C = 3."""
    pred = torch.zeros(1, 2, 2, 13, dtype=torch.float64)
    pred[0, 0, 0] = torch.tensor([0.4, 0.6, 0.16, 0.25, 0.9, 0.5, 0.5, 0.64, 0.64, 0.8, 0.1, 0.2, 0.7], dtype=torch.float64)
    pred[0, 1, 1] = torch.tensor([0.5, 0.5, 0.01, 0.01, 0.3, 0.3, 0.7, 0.04, 0.16, 0.6, 0.6, 0.3, 0.1], dtype=torch.float64)
    pred[0, 0, 1, 4], pred[0, 0, 1, 9] = 0.2, 0.4
    pred[0, 1, 0, 4] = 0.1
    boxes = torch.zeros(1, 2, 2, 4, dtype=torch.float64)
    boxes[0, 0, 0] = torch.tensor([0.5, 0.5, 0.25, 0.36], dtype=torch.float64)
    boxes[0, 1, 1] = torch.tensor([0.25, 0.75, 0.04, 0.09], dtype=torch.float64)
    return pred, boxes, torch.tensor([[[2, -1], [-1, 0]]])


def _random(n, s, c, seed, dtype=torch.float64, empty=0.7) -> Case:
    g = generator(seed)
    pred = torch.rand(n, s, s, 10 + c, generator=g, dtype=torch.float64)
    pred[..., [2, 3, 7, 8]] *= 0.5
    boxes = torch.rand(n, s, s, 4, generator=g, dtype=torch.float64)
    boxes[..., 2:] *= 0.5
    labels = torch.randint(0, c, (n, s, s), generator=g)
    labels[torch.rand(n, s, s, generator=g) < empty] = -1
    return _case(f"random batch: N={n}, S={s}, C={c}, {dtype} (seed {seed})", pred, boxes, labels, dtype)


def _one_object(confident_other: bool):
    pred = torch.zeros(1, 3, 3, 12, dtype=torch.float64)
    pred[..., [2, 3, 7, 8]] = 0.1
    pred[0, 1, 1, :5] = torch.tensor([0.5, 0.5, 0.2, 0.2, 0.4], dtype=torch.float64)  # overlaps the object: responsible
    pred[0, 1, 1, 5:10] = torch.tensor([0.1, 0.9, 0.05, 0.6, 0.95 if confident_other else 0.05], dtype=torch.float64)
    pred[0, 1, 1, 10:] = torch.tensor([0.3, 0.7], dtype=torch.float64)
    boxes = torch.zeros(1, 3, 3, 4, dtype=torch.float64)
    boxes[0, 1, 1] = torch.tensor([0.6, 0.4, 0.25, 0.2], dtype=torch.float64)
    labels = torch.full((1, 3, 3), -1)
    labels[0, 1, 1] = 1
    return pred, boxes, labels


def _tiny():
    pred, boxes, labels = _one_object(False)
    return pred, boxes * torch.tensor([1.0, 1.0, 0.04, 0.05], dtype=torch.float64), labels


EMPTY_PRED = torch.rand(2, 4, 4, 13, generator=generator(811), dtype=torch.float64)
CASES = [
    _case("the worked example: two objects, S = 2, B = 2, C = 3", *_example()),
    _case("an image without objects", EMPTY_PRED, torch.zeros(2, 4, 4, 4), torch.full((2, 4, 4), -1),
          hint=EMPTY),
    _case("one object, the other predictor of its cell more confident but off", *_one_object(True),
          hint=RESPONSIBLE),
    _case("one object, the other predictor unconfident", *_one_object(False), hint=NOOBJ),
    _case("boxes much smaller than a cell (w = 0.01): the square roots matter", *_tiny(), hint=SQRT),
    _case("float32 inputs", *_example(), dtype=torch.float32),
    _random(1, 7, 20, seed=821),
    _random(3, 8, 5, seed=822),
    _random(2, 4, 3, seed=823, empty=0.3),
    _random(4, 2, 1, seed=824, dtype=torch.float32, empty=0.0),
    _random(2, 13, 4, seed=825),
]


def _variant(pred, boxes, labels, *, sqrt=True, iou_target=True, by_confidence=False, noobj_everywhere=False):
    """Eq. 3 with one thing changed, to name a typical mistake (float)."""
    n, s = pred.shape[:2]
    cells = pred[..., :10].reshape(n, s, s, 2, 5)
    has = labels >= 0
    best = _responsible_predictor(cells[..., :4], boxes, s)
    index = cells[..., 4].argmax(-1) if by_confidence else best.index
    chosen = torch.gather(cells, 3, index[..., None, None].expand(n, s, s, 1, 5)).squeeze(3)
    iou = _responsible_predictor(chosen[..., None, :4], boxes, s).iou
    root = (lambda x: x.clamp(min=0).sqrt()) if sqrt else (lambda x: x)
    coord = ((chosen[..., :2] - boxes[..., :2]) ** 2).sum(-1)
    size = ((root(chosen[..., 2:4]) - root(boxes[..., 2:])) ** 2).sum(-1)
    obj = (chosen[..., 4] - (iou if iou_target else 1.0)) ** 2
    responsible = torch.nn.functional.one_hot(index, 2).bool() & has[..., None]
    weight = 0.5 if noobj_everywhere else 1.0
    noobj = 0.5 * (cells[..., 4] ** 2 * ~responsible).sum(-1)
    one_hot = torch.nn.functional.one_hot(labels.clamp(min=0), pred.shape[-1] - 10).to(pred.dtype)
    cls = ((pred[..., 10:] - one_hot) ** 2).sum(-1)
    return float((has * (5 * coord + 5 * size + weight * obj + cls) + noobj).sum())


def _mistakes(pred, boxes, labels):
    yield SQRT, lambda: _variant(pred, boxes, labels, sqrt=False)
    yield TARGET, lambda: _variant(pred, boxes, labels, iou_target=False)
    yield RESPONSIBLE, lambda: _variant(pred, boxes, labels, by_confidence=True)
    yield NOOBJ, lambda: _variant(pred, boxes, labels, noobj_everywhere=True)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_yolo_loss(student, case: Case) -> None:
    got = call(student, case)
    pred, boxes, labels = case.inputs()
    expected = float(yolo_v1_loss(pred, boxes, labels, boxes_per_cell=2, reduction="sum").total)
    expect_number(got, expected, case, atol=1e-5, rtol=1e-4, diagnoses=_mistakes(pred, boxes, labels))
