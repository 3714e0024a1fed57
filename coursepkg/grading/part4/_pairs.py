"""The matched box pairs both IoU-loss questions are graded on, and the pictures of small cases."""

from __future__ import annotations

from collections.abc import Callable

import torch

from coursepkg.grading.expect import Case, Picture, generator, grid_boxes, random_boxes

NAMES = ("boxes1", "boxes2")
EPS = (
    "both boxes have zero area, so the union is 0 and I / U is 0 / 0: add eps = 1e-7 to every "
    "denominator (the union, and the enclosing box's area or squared diagonal), as the statement "
    "says"
)
NO_CLAMP = (
    "boxes apart in both x and y have two negative overlap widths whose product is positive: clamp "
    "each width and height of the intersection at 0 before multiplying"
)


def case(title: str, boxes1, boxes2, dtype=torch.float32, hint: str = "") -> Case:
    def as_tensor(boxes) -> torch.Tensor:
        return torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4).to(dtype)

    return Case(title, {"boxes1": as_tensor(boxes1), "boxes2": as_tensor(boxes2)}, hint)


def _random(n: int, seed: int, dtype=torch.float32) -> Case:
    g = generator(seed)
    return case(
        f"random boxes, N={n}, {str(dtype).removeprefix('torch.')} (seed {seed})",
        random_boxes(n, g, dtype=torch.float64),
        random_boxes(n, g, dtype=torch.float64),
        dtype,
    )


def _grid(n: int, seed: int) -> Case:
    g = generator(seed)
    return case(
        f"boxes on an 8 x 8 integer grid (many touch, coincide or are empty), N={n} (seed {seed})",
        grid_boxes(n, g),
        grid_boxes(n, g),
        hint=EPS,
    )


def cases() -> list[Case]:
    return [
        case("the worked example: A (0, 0, 2, 2), B (1, 1, 3, 3)", [0, 0, 2, 2], [1, 1, 3, 3]),
        case("identical boxes", [3, 4, 13, 24], [3, 4, 13, 24]),
        case("one box inside the other, off centre", [0, 0, 4, 4], [0, 0, 10, 10]),
        case("the same boxes the other way round", [0, 0, 10, 10], [0, 0, 4, 4]),
        case("boxes apart in x, overlapping in y", [0, 0, 10, 10], [15, 2, 30, 8]),
        case("boxes apart in both x and y", [0, 0, 10, 10], [20, 30, 40, 50], hint=NO_CLAMP),
        case("boxes side by side, sharing an edge", [0, 0, 10, 10], [10, 0, 20, 10]),
        case("a zero-width box (a vertical line) crossing a box", [5, -2, 5, 8], [0, 0, 10, 10]),
        case("two identical zero-area boxes (points)", [4, 4, 4, 4], [4, 4, 4, 4], hint=EPS),
        case("two identical horizontal lines", [2, 3, 8, 3], [2, 3, 8, 3], hint=EPS),
        case(
            "three pairs at once, float64",
            [[0, 0, 2, 2], [0.5, 1.25, 3.75, 4.0], [10, 10, 12, 20]],
            [[1, 1, 3, 3], [2.0, 0.0, 6.5, 3.0], [30, 0, 35, 4]],
            torch.float64,
        ),
        case("no boxes (N = 0)", torch.zeros(0, 4), torch.zeros(0, 4), hint="return a [0] tensor"),
        _random(1, seed=121),
        _random(7, seed=122),
        _random(50, seed=123, dtype=torch.float64),
        _random(300, seed=124),
        _grid(40, seed=125),
        _grid(200, seed=126),
    ]


def picture(case: Case) -> Picture | None:
    boxes1, boxes2 = case.inputs()
    if not 0 < len(boxes1) <= 3:
        return None
    return (
        Picture("boxes1 (blue) and boxes2 (orange)")
        .add("boxes1", boxes1.double(), "tab:blue")
        .add("boxes2", boxes2.double(), "tab:orange", dashed=True)
    )


def reference(loss_fn: Callable, case: Case) -> torch.Tensor:
    boxes1, boxes2 = case.inputs()
    return loss_fn(boxes1, boxes2, reduction="none")
