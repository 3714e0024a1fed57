"""Grading tests of ``focal_loss(logits, targets, alpha, gamma)`` (exercise 10_retinanet).

Compared with ``coursepkg.ops.focal.sigmoid_focal_loss(logits, targets, alpha, gamma)`` (per
element, torchvision's ``sigmoid_focal_loss``) on the worked example, logits so large that
``log(sigmoid(x))`` rounds to ``-inf`` (±40, ±100), gamma = 0 (cross-entropy), alpha = 0.5 and 1,
2-D inputs, float64, an empty input and seeded random batches.
"""

from __future__ import annotations

import pytest
import torch

from coursepkg.grading.expect import Case, call, expect_tensor, generator
from coursepkg.ops.focal import sigmoid_focal_loss

STABLE = (
    "compute -log(p_t) from the LOGITS, e.g. with torch.nn.functional.binary_cross_entropy_with_logits"
    "(logits, targets, reduction='none'): log(sigmoid(x)) rounds to log(0) = -inf for large |x|"
)
ALPHA = "alpha_t is alpha for positives (target 1) and 1 - alpha for negatives (target 0)"
GAMMA = (
    "the modulating factor is (1 - p_t)^gamma, with p_t = p for positives and 1 - p for negatives "
    "(not (1 - p)^gamma for every element)"
)
PER_ELEMENT = "return one loss per element, the shape of logits (no sum or mean)"


def _case(title: str, logits, targets, alpha=0.25, gamma=2.0, dtype=torch.float32, hint="") -> Case:
    def t(x):
        return x.to(dtype) if torch.is_tensor(x) else torch.tensor(x, dtype=dtype)

    return Case(title, {"logits": t(logits), "targets": t(targets), "alpha": alpha, "gamma": gamma}, hint)


def _random(shape, seed: int, alpha=0.25, gamma=2.0, dtype=torch.float32, scale=3.0) -> Case:
    g = generator(seed)
    logits = torch.randn(*shape, generator=g, dtype=torch.float64) * scale
    targets = (torch.rand(*shape, generator=g) < 0.1).double()
    return _case(
        f"random {list(shape)} logits (scale {scale}), alpha {alpha}, gamma {gamma}, {dtype} (seed {seed})",
        logits, targets, alpha, gamma, dtype,
    )


CASES = [
    _case(
        "the worked example: p = 0.9 and 0.2 positives, p = 0.3 and 0.95 negatives",
        torch.logit(torch.tensor([0.9, 0.2, 0.3, 0.95], dtype=torch.float64)),
        [1.0, 1.0, 0.0, 0.0],
        dtype=torch.float64,
    ),
    _case(
        "confidently wrong and confidently right, logits +-40 and +-100",
        [40.0, -40.0, 100.0, -100.0, 40.0, -40.0, 100.0, -100.0],
        [0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0],
        hint=STABLE,
    ),
    _case("gamma = 0, alpha = 0.5: half the cross-entropy", [2.0, -1.0, 0.5, 0.0], [1.0, 0.0, 0.0, 1.0],
          alpha=0.5, gamma=0.0),
    _case("alpha = 1: negatives cost nothing", [2.0, -1.0, 0.5, 3.0], [1.0, 0.0, 1.0, 0.0], alpha=1.0,
          hint=ALPHA),
    _case("a 2-D input [anchors, classes]", [[0.5, -2.0, 1.0], [3.0, -0.5, -4.0]],
          [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], hint=PER_ELEMENT),
    _case("no elements", torch.zeros(0, 3), torch.zeros(0, 3), hint=PER_ELEMENT),
    _random((50,), seed=1001),
    _random((200, 5), seed=1002, alpha=0.75, gamma=1.0),
    _random((1000, 3), seed=1003, gamma=5.0, dtype=torch.float64),
    _random((300, 4), seed=1004, alpha=0.1, gamma=0.5, scale=10.0),
]


def _mistakes(logits, targets, alpha, gamma):
    p = torch.sigmoid(logits)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    yield STABLE, lambda: -alpha_t * (1 - p_t) ** gamma * torch.log(p_t)
    yield ALPHA, lambda: ((1 - alpha) * targets + alpha * (1 - targets)) * (1 - p_t) ** gamma * ce
    yield ALPHA, lambda: (1 - p_t) ** gamma * ce
    yield GAMMA, lambda: alpha_t * (1 - p) ** gamma * ce
    yield GAMMA, lambda: alpha_t * p_t**gamma * ce
    yield PER_ELEMENT, lambda: sigmoid_focal_loss(logits, targets, alpha, gamma, reduction="sum")


@pytest.mark.parametrize("case", CASES, ids=str)
def test_focal_loss(student, case: Case) -> None:
    got = call(student, case)
    logits, targets, alpha, gamma = case.inputs()
    expected = sigmoid_focal_loss(logits, targets, alpha, gamma)
    expect_tensor(got, expected, case, atol=1e-5, rtol=1e-4, diagnoses=_mistakes(logits, targets, alpha, gamma))
