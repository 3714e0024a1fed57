"""Grading tests of ``box_convert(boxes, in_fmt, out_fmt)`` (exercise 02_boxes_iou).

Compared with :func:`coursepkg.ops.boxes.box_convert` for every ordered pair of formats, on the worked
examples, empty input, float64 input and seeded random boxes.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from coursepkg.grading.expect import (
    Case,
    call,
    expect_raises,
    expect_tensor,
    generator,
    random_boxes,
)
from coursepkg.ops.boxes import box_convert

FORMATS = ("xyxy", "xywh", "cxcywh")


def _case(title: str, boxes, in_fmt: str, out_fmt: str, hint: str = "") -> Case:
    boxes = torch.as_tensor(boxes, dtype=torch.float32) if not torch.is_tensor(boxes) else boxes
    return Case(title, {"boxes": boxes, "in_fmt": in_fmt, "out_fmt": out_fmt}, hint)


def _random_case(in_fmt: str, out_fmt: str, n: int, seed: int, dtype=torch.float32) -> Case:
    xyxy = random_boxes(n, generator(seed), dtype=dtype)
    boxes = box_convert(xyxy, "xyxy", in_fmt)
    kind = "" if dtype == torch.float32 else f"{str(dtype).removeprefix('torch.')} "
    return _case(
        f"random {kind}boxes, N={n}, {in_fmt} to {out_fmt} (seed {seed})", boxes, in_fmt, out_fmt
    )


CASES = [
    _case(
        "the worked example: cxcywh (50, 40, 20, 10) to xyxy", [[50, 40, 20, 10]], "cxcywh", "xyxy"
    ),
    _case("the worked example: xywh (10, 20, 30, 40) to xyxy", [[10, 20, 30, 40]], "xywh", "xyxy"),
    _case("xyxy (10, 20, 40, 60) to xywh", [[10, 20, 40, 60]], "xyxy", "xywh"),
    _case("xyxy (10, 20, 40, 60) to cxcywh", [[10, 20, 40, 60]], "xyxy", "cxcywh"),
    _case("a zero-area box, xyxy to cxcywh", [[5, 5, 5, 9]], "xyxy", "cxcywh"),
    _case(
        "no boxes (N = 0), xywh to cxcywh",
        torch.zeros(0, 4),
        "xywh",
        "cxcywh",
        "an empty [0, 4] input gives an empty [0, 4] output",
    ),
    *[
        _random_case(a, b, n, seed=10 * i + n)
        for i, (a, b) in enumerate(itertools.product(FORMATS, FORMATS))
        for n in (3, 40)
    ],
    _random_case("cxcywh", "xywh", 6, seed=91, dtype=torch.float64),
    _random_case("xywh", "xyxy", 6, seed=92, dtype=torch.float64),
]


def _diagnoses(boxes: torch.Tensor, in_fmt: str, out_fmt: str):
    yield (
        "your answer treats the input as xyxy: in xywh and cxcywh the last two numbers are the "
        "width and height, not a corner",
        lambda: box_convert(boxes, "xyxy", out_fmt),
    )
    yield (
        "your answer is in xyxy: convert to the requested out_fmt",
        lambda: box_convert(boxes, in_fmt, "xyxy"),
    )
    yield (
        "the corners of a centred box are cx - w/2 and cx + w/2 (half the width each way)",
        lambda: box_convert(_stretch(boxes, in_fmt), in_fmt, out_fmt),
    )


def _stretch(boxes: torch.Tensor, in_fmt: str) -> torch.Tensor:
    """The input a cxcywh answer would have "seen" if it used the full width on each side."""
    if in_fmt != "cxcywh":
        raise ValueError("only for cxcywh input")
    return torch.cat([boxes[:, :2], boxes[:, 2:] * 2], dim=1)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_box_convert(student, case: Case) -> None:
    got = call(student, case, new_tensor=True)  # even when in_fmt == out_fmt
    boxes, in_fmt, out_fmt = case.inputs()
    expected = box_convert(boxes, in_fmt, out_fmt)
    expect_tensor(got, expected, case, diagnoses=_diagnoses(boxes, in_fmt, out_fmt))


BAD_FORMATS = [
    _case(
        "an unknown in_fmt 'yolo' must raise ValueError",
        [[0, 0, 1, 1]],
        "yolo",
        "xyxy",
        "check both format names and raise ValueError for anything but xyxy, xywh, cxcywh",
    ),
    _case(
        "an unknown out_fmt 'XYXY' must raise ValueError",
        [[0, 0, 1, 1]],
        "xywh",
        "XYXY",
        "check both format names and raise ValueError for anything but xyxy, xywh, cxcywh",
    ),
]


@pytest.mark.parametrize("case", BAD_FORMATS, ids=str)
def test_box_convert_rejects_unknown_formats(student, case: Case) -> None:
    expect_raises(student, case, ValueError)
