"""Grading tests of ``apply_deltas(deltas, proposals)``, the inverse of the targets (exercise 05_rcnn).

Compared with :func:`coursepkg.ops.box_coding.decode_boxes` (weights 1; every delta here stays far
below its clip, so the clip never acts) on the worked example, zero deltas, round trips through
:func:`coursepkg.ops.box_coding.encode_boxes`, proposals that are not square, float64, no boxes, and
seeded random deltas of several sizes.
"""

from __future__ import annotations

import pytest
import torch

from coursepkg.grading.expect import Case, Picture, call, expect_tensor, generator
from coursepkg.grading.part2 import _coding
from coursepkg.ops.box_coding import decode_boxes, encode_boxes

NAMES = ("deltas", "proposals")


def _case(title: str, deltas, p, dtype=torch.float32, hint: str = "") -> Case:
    return _coding.box_case(title, deltas, p, NAMES, dtype, hint)


def _random(n: int, seed: int, dtype=torch.float32) -> Case:
    g = generator(seed)
    p = _coding.proposals(n, g)
    deltas = (torch.rand(n, 4, generator=g, dtype=torch.float64) * 2 - 1) * torch.tensor(
        [0.5, 0.5, 1.0, 1.0], dtype=torch.float64
    )
    return _case(f"random deltas, N={n}, {dtype} (seed {seed})", deltas, p, dtype)


def _round_trip(n: int, seed: int) -> Case:
    p, gt = _coding.random_pair(n, seed, near=True)
    return _case(
        f"round trip: the targets of {n} pairs bring each proposal back to its ground truth "
        f"(seed {seed})",
        encode_boxes(gt, p),
        p,
        torch.float64,
    )


CASES = [
    _case(
        "the worked example: d (0.5, 0.125, log 1.5, 0) on P (10, 20, 50, 100)",
        [0.5, 0.125, 0.4054651081081644, 0.0],
        [10, 20, 50, 100],
    ),
    _case("zero deltas leave the proposal where it is", [0, 0, 0, 0], [3, 4, 13, 24]),
    _case(
        "a shift in y only, proposal 10 wide and 40 high",
        [0, 0.2, 0, 0],
        [0, 0, 10, 40],
        hint=_coding.TYPO_Y,
    ),
    _case(
        "the proposal halves in width and doubles in height",
        [0, 0, -0.6931471805599453, 0.6931471805599453],
        [20, 10, 60, 30],
        hint=_coding.NO_EXP,
    ),
    _case(
        "three boxes, float64",
        [[0.1, -0.2, 0.3, -0.4], [0, 0, 1, 1], [-0.5, 0.5, -1, 0.2]],
        [[0, 0, 10, 10], [5, 5, 25, 15], [100, 50, 160, 90]],
        torch.float64,
    ),
    _case("no boxes (N = 0)", torch.zeros(0, 4), torch.zeros(0, 4), hint="return a [0, 4] tensor"),
    Case(
        "float32 deltas on float64 proposals: the result has the deltas' dtype",
        {
            "deltas": torch.tensor([[0.1, -0.2, 0.3, -0.4], [0.0, 0.0, 0.5, 0.5]]),
            "proposals": torch.tensor([[0, 0, 10, 10], [5, 5, 25, 15]], dtype=torch.float64),
        },
        "cast the proposals to the deltas' dtype first (proposals.to(deltas.dtype)): float32 "
        "arithmetic with float64 tensors gives float64",
    ),
    _round_trip(6, seed=111),
    _random(1, seed=112),
    _random(7, seed=113),
    _random(30, seed=114, dtype=torch.float64),
    _random(200, seed=115),
    _random(600, seed=116),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_apply_deltas(student, case: Case) -> None:
    got = call(student, case)
    deltas, p = case.inputs()
    expected = decode_boxes(deltas, p)
    picture = None
    if 0 < len(p) <= 3:
        picture = (
            Picture("proposals (blue), moved by the deltas: expected (green), yours (red, dashed)")
            .add("proposals", p.double(), "tab:blue")
            .add("expected", expected.double(), "tab:green")
        )
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            picture.add("yours", got.detach().double(), "tab:red", dashed=True)
    expect_tensor(
        got,
        expected,
        case,
        atol=1e-4,
        rtol=1e-4,
        diagnoses=_coding.decode_mistakes(deltas, p),
        picture=picture,
    )
