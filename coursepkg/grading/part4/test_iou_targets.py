"""Grading tests of ``iou_targets(box_regression, anchors, matched_boxes)`` (exercise 11).

Compared with :func:`coursepkg.models.iou_aware_retinanet.iou_targets` for one image: the deltas
``[N, 4]`` decoded against their anchors ``[N, 4]`` (R-CNN's decoding, weights 1), then the IoU
of every decoded box with its own ground truth, ``[N]``. Cases: the worked example, zero deltas
(the anchors' IoU), the exact regression targets (IoU 1), disjoint and touching boxes, float64,
no anchors, and seeded random anchors, deltas and ground truths (deltas below the clip).
"""

from __future__ import annotations

import math

import pytest
import torch

from coursepkg.grading.expect import Case, Picture, call, expect_tensor, generator, random_boxes
from coursepkg.models.iou_aware_retinanet import iou_targets
from coursepkg.ops.box_coding import decode_boxes, encode_boxes
from coursepkg.ops.boxes import matched_box_iou

ANCHORS = (
    "the target is the IoU of the REGRESSED box (the deltas decoded against the anchor) with "
    "the ground truth, not the anchor's own IoU"
)
EXP = "widths and heights decode through exp: w = p_w * exp(d_w), h = p_h * exp(d_h)"
SCALE = "the centre moves by d_x times the anchor's WIDTH (and d_y times its height): x = p_x + d_x * p_w"


def _case(title, deltas, anchors, boxes, dtype=torch.float32, hint="") -> Case:
    def t(x):
        return torch.as_tensor(x, dtype=torch.float64).reshape(-1, 4).to(dtype)

    return Case(title, {"box_regression": t(deltas), "anchors": t(anchors), "matched_boxes": t(boxes)},
                hint)


def _random(n: int, seed: int, dtype=torch.float32) -> Case:
    g = generator(seed)
    anchors = random_boxes(n, g, dtype=torch.float64) + torch.tensor([0.0, 0.0, 4.0, 4.0], dtype=torch.float64)
    deltas = 0.4 * torch.randn(n, 4, generator=g, dtype=torch.float64)
    jitter = 0.3 * torch.randn(n, 4, generator=g, dtype=torch.float64)
    boxes = decode_boxes(jitter, anchors)  # ground truths near their anchors
    return _case(f"random anchors, deltas and ground truths, N={n} (seed {seed})", deltas, anchors,
                 boxes, dtype)


ANCHOR = [0.0, 0.0, 10.0, 10.0]
_exact_anchor = torch.tensor([[4.0, 6.0, 20.0, 14.0]], dtype=torch.float64)
_exact_box = torch.tensor([[2.0, 5.0, 30.0, 21.0]], dtype=torch.float64)

CASES = [
    _case("the worked example: decoded box (-4, 0, 16, 10) against (0, 0, 16, 10): 0.8",
          [0.1, 0.0, math.log(2.0), 0.0], ANCHOR, [0, 0, 16, 10], hint=SCALE),
    _case("zero deltas: the anchor's own IoU", [0, 0, 0, 0], ANCHOR, [5, 0, 15, 10]),
    _case("the exact regression targets: IoU 1", encode_boxes(_exact_box, _exact_anchor),
          _exact_anchor, _exact_box, torch.float64, hint=ANCHORS),
    _case("a decoded box that misses its ground truth: 0", [2.0, 0.0, 0.0, 0.0], ANCHOR,
          [0, 0, 10, 10]),
    _case("a decoded box touching its ground truth along an edge: 0", [1.0, 0.0, 0.0, 0.0],
          ANCHOR, [0, 0, 10, 10]),
    _case("a shrunk box inside its ground truth",
          [0.0, 0.0, math.log(0.5), math.log(0.5)], ANCHOR, ANCHOR, hint=EXP),
    _case("three anchors at once, float64",
          [[0.1, -0.2, 0.3, 0.0], [0.0, 0.0, -0.5, 0.5], [0.5, 0.5, 0.0, 0.0]],
          [[0, 0, 10, 10], [20, 20, 60, 40], [5, 5, 9, 25]],
          [[1, -1, 12, 9], [25, 15, 50, 50], [6, 10, 10, 30]], torch.float64),
    _case("no anchors (N = 0)", torch.zeros(0, 4), torch.zeros(0, 4), torch.zeros(0, 4)),
    _random(5, seed=1111),
    _random(100, seed=1112),
    _random(500, seed=1113, dtype=torch.float64),
]


def _mistakes(deltas, anchors, boxes):
    p_w, p_h = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    p_x, p_y = anchors[:, 0] + 0.5 * p_w, anchors[:, 1] + 0.5 * p_h

    def boxes_from(x, y, w, h):
        return torch.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], dim=1)

    d_x, d_y, d_w, d_h = deltas.unbind(1)
    yield ANCHORS, lambda: matched_box_iou(anchors, boxes)
    yield EXP, lambda: matched_box_iou(boxes_from(p_x + d_x * p_w, p_y + d_y * p_h, p_w * d_w, p_h * d_h), boxes)
    yield SCALE, lambda: matched_box_iou(boxes_from(p_x + d_x, p_y + d_y, p_w * d_w.exp(), p_h * d_h.exp()), boxes)


def _picture(case: Case) -> Picture | None:
    deltas, anchors, boxes = case.inputs()
    if not 0 < len(anchors) <= 3:
        return None
    return (
        Picture("anchors (grey), decoded boxes (blue), ground truths (orange)")
        .add("anchors", anchors.double(), "tab:gray", dashed=True)
        .add("decoded", decode_boxes(deltas.double(), anchors.double()), "tab:blue")
        .add("ground truths", boxes.double(), "tab:orange", dashed=True)
    )


@pytest.mark.parametrize("case", CASES, ids=str)
def test_iou_targets(student, case: Case) -> None:
    got = call(student, case)
    deltas, anchors, boxes = case.inputs()
    expect_tensor(got, iou_targets(deltas, anchors, boxes), case,
                  diagnoses=_mistakes(deltas, anchors, boxes), picture=_picture(case))
