"""Grading tests of ``bce_from_logits(logits, targets)`` (exercise 09_confidence_bce).

Compared with ``torch.nn.functional.binary_cross_entropy_with_logits(..., reduction="none")``: the
per-element binary cross-entropy ``-[y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))]`` computed
from the logit, finite for every finite logit. Cases: the worked example, logits of ±100 and
±1000 where ``sigmoid`` rounds to 0 or 1 (float32 and float64), soft targets, a 2-D grid, an empty
input, and seeded random logits of several sizes and scales.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from coursepkg.grading.expect import Case, call, expect_tensor, generator

STABLE = (
    "compute from the logit, never from sigmoid(x): BCE = max(x, 0) - x * y + log(1 + exp(-|x|)) "
    "(log1p(exp(-abs(x)))); sigmoid(-100) is 0 in float32 and log(0) = -inf"
)
ABS = "inside the exponential use -|x|, not -x: exp(-x) overflows for x = -100 (float32) or -1000"
SIGN = "BCE = max(x, 0) - x * y + log(1 + exp(-|x|)): check the sign of the x * y term"
MAX = "the stable form needs max(x, 0): without it a large positive x with y = 0 costs ~0, not x"
DTYPE = "return the per-element losses in the logits' dtype and shape (no reduction)"


def _case(title: str, logits, targets, dtype=torch.float32, hint: str = "") -> Case:
    def t(x):
        return x.to(dtype) if torch.is_tensor(x) else torch.tensor(x, dtype=dtype)

    return Case(title, {"logits": t(logits), "targets": t(targets)}, hint)


def _random(n: int, seed: int, scale: float, dtype=torch.float32, soft: bool = False) -> Case:
    g = generator(seed)
    logits = torch.randn(n, generator=g, dtype=torch.float64) * scale
    targets = torch.rand(n, generator=g, dtype=torch.float64)
    if not soft:
        targets = (targets < 0.3).double()
    kind = "soft" if soft else "0/1"
    return _case(
        f"random, {n} logits of scale {scale:g}, {kind} targets, {dtype} (seed {seed})",
        logits,
        targets,
        dtype,
        hint=STABLE if scale > 20 else "",
    )


CASES = [
    _case(
        "the worked example: logits 2 and -1 with targets 1 and 0",
        [2.0, -1.0],
        [1.0, 0.0],
        hint=SIGN,
    ),
    _case(
        "the notes' anchors: p = 0.85 (y = 1) and p = 0.1 (y = 0), as logits",
        torch.logit(torch.tensor([0.85, 0.1], dtype=torch.float64)),
        [1.0, 0.0],
        torch.float64,
        hint=SIGN,
    ),
    _case(
        "confident and wrong, confident and right: logits -100 and +100, float32",
        [-100.0, -100.0, 100.0, 100.0],
        [1.0, 0.0, 1.0, 0.0],
        hint=STABLE,
    ),
    _case(
        "logits -1000 and +1000, float64",
        [-1000.0, -1000.0, 1000.0, 1000.0],
        [1.0, 0.0, 1.0, 0.0],
        torch.float64,
        hint=STABLE,
    ),
    _case(
        "large positive logits with target 0",
        [5.0, 20.0, 40.0],
        [0.0, 0.0, 0.0],
        hint=MAX,
    ),
    _case("logit 0 (p = 0.5): log 2 either way", [0.0, 0.0], [1.0, 0.0], hint=SIGN),
    _case(
        "soft targets (IoU-like values in [0, 1])",
        [-3.0, -0.5, 0.0, 1.5, 30.0],
        [0.2, 0.5, 0.7, 0.9, 0.35],
        hint=SIGN,
    ),
    _case(
        "a 2 x 3 grid of logits: keep the shape",
        [[-50.0, 0.5, 3.0], [1.0, -2.0, 60.0]],
        [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]],
        hint=DTYPE,
    ),
    _case("no logits at all", torch.zeros(0), torch.zeros(0), hint=DTYPE),
    _random(10, seed=901, scale=2.0),
    _random(257, seed=902, scale=10.0, dtype=torch.float64),
    _random(1000, seed=903, scale=60.0),
    _random(5000, seed=904, scale=200.0, dtype=torch.float64),
    _random(500, seed=905, scale=5.0, soft=True),
]


def _mistakes(logits, targets):
    x, y = logits, targets
    yield (
        STABLE,
        lambda: -(y * torch.log(torch.sigmoid(x)) + (1 - y) * torch.log(1 - torch.sigmoid(x))),
    )
    yield ABS, lambda: x.clamp(min=0) - x * y + torch.log1p(torch.exp(-x))
    yield SIGN, lambda: x.clamp(min=0) + x * y + torch.log1p(torch.exp(-x.abs()))
    yield MAX, lambda: -x * y + torch.log1p(torch.exp(-x.abs()))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bce_from_logits(student, case: Case) -> None:
    got = call(student, case)
    logits, targets = case.inputs()
    expected = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    expect_tensor(got, expected, case, atol=1e-5, rtol=1e-5, diagnoses=_mistakes(logits, targets))
