"""Grading tests of ``window_boxes(image_size, window_size, step)`` (exercise 01_sliding_windows).

Compared with :func:`coursepkg.ops.sliding_windows.sliding_windows` on non-square images, windows and
steps (so that swapping height and width shows), and on seeded random sizes.
"""

from __future__ import annotations

import pytest
import torch

from coursepkg.grading.expect import Case, Picture, call, expect_tensor, generator
from coursepkg.ops.sliding_windows import sliding_windows

HW = "image_size and window_size are (height, width): x runs along the width, y along the height"


def _case(title: str, image_size, window_size, step, hint: str = "") -> Case:
    return Case(
        title,
        {"image_size": tuple(image_size), "window_size": tuple(window_size), "step": tuple(step)},
        hint,
    )


def _random_cases(seed: int, count: int) -> list[Case]:
    g = generator(seed)

    def draw(low: int, high: int) -> int:
        return int(torch.randint(low, high + 1, (1,), generator=g))

    cases = []
    for i in range(count):
        h, w = draw(8, 120), draw(8, 120)
        wh, ww = draw(1, h), draw(1, w)
        sy, sx = draw(1, 16), draw(1, 16)
        cases.append(
            _case(
                f"random sizes {i}: image {(h, w)}, window {(wh, ww)}, step {(sy, sx)} (seed {seed})",
                (h, w),
                (wh, ww),
                (sy, sx),
            )
        )
    return cases


CASES = [
    _case("a 4 x 6 image, 2 x 3 windows, step (2, 3)", (4, 6), (2, 3), (2, 3), HW),
    _case(
        "the notes' windows: 64 x 64, step 8, on a 96 x 128 image",
        (96, 128),
        (64, 64),
        (8, 8),
        "x varies fastest: all windows of the first row, left to right, then the next row",
    ),
    _case("a tall image: 30 x 10, window 10 x 5, step (10, 5)", (30, 10), (10, 5), (10, 5), HW),
    _case("different steps in y and x", (20, 24), (8, 6), (4, 9), "step is (step_y, step_x)"),
    _case("a window the size of the image", (17, 23), (17, 23), (5, 5)),
    *_random_cases(seed=21, count=8),
]


def _mistakes(image_size, window_size, step):
    (h, w), (wh, ww), (sy, sx) = image_size, window_size, step
    yield (
        "windows run row by row: x varies fastest (y is the outer loop)",
        lambda: _column_major(image_size, window_size, step),
    )
    yield HW, lambda: sliding_windows((w, h), (ww, wh), (sx, sy))
    yield (
        "return xyxy boxes (x1, y1, x2, y2) = (x, y, x + window width, y + window height)",
        lambda: _xywh(sliding_windows(image_size, window_size, step)),
    )


def _column_major(image_size, window_size, step):
    boxes = sliding_windows(image_size, window_size, step)
    ny = len(set(boxes[:, 1].tolist()))
    return boxes.reshape(ny, -1, 4).transpose(0, 1).reshape(-1, 4)


def _xywh(boxes):
    return torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_window_boxes(student, case: Case) -> None:
    got = call(student, case)
    image_size, window_size, step = case.inputs()
    expected = sliding_windows(image_size, window_size, step)
    picture = None
    if len(expected) <= 12:
        h, w = image_size
        picture = Picture(f"image {h} x {w} (grey), expected windows (green)").add(
            "image", [[0, 0, w, h]], "grey"
        )
        picture.add("expected", expected, "tab:green", texts=[str(i) for i in range(len(expected))])
        if (
            isinstance(got, torch.Tensor)
            and got.dim() == 2
            and got.shape[1] == 4
            and len(got) <= 12
        ):
            picture.add("yours", got.detach().double(), "tab:red", dashed=True)
    expect_tensor(
        got, expected, case, diagnoses=_mistakes(image_size, window_size, step), picture=picture
    )
