"""Grading tests of ``iou_prediction_loss(iou_logits, iou_target, labels)`` (exercise 11).

The IoU head's loss for one image: binary cross-entropy of the predicted IoU (from logits)
against the target IoU, summed over the **positive** anchors (``labels == 1``) and divided by
their number (at least 1): the ``iou`` term of
:func:`coursepkg.models.iou_aware_retinanet.iou_aware_retinanet_loss` for one image. Cases: the worked example,
negatives and ignored anchors with wild logits, no positives, large logits (where the BCE of a
sigmoid overflows), float64, and seeded random inputs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from coursepkg.grading.expect import Case, call, expect_number, generator

POSITIVES = "only positive anchors (labels == 1) have an IoU loss: negatives and ignored anchors have no box to judge"
NORMALISE = "divide the sum by the number of POSITIVE anchors (at least 1), not by all anchors"
LOGITS = (
    "compute the BCE from the logits (F.binary_cross_entropy_with_logits), not from "
    "sigmoid(logits): for a logit of 40 the sigmoid rounds to 1 and log(1 - 1) is -inf"
)


def _case(title, logits, target, labels, dtype=torch.float32, hint="") -> Case:
    return Case(
        title,
        {
            "iou_logits": torch.as_tensor(logits, dtype=torch.float64).to(dtype),
            "iou_target": torch.as_tensor(target, dtype=torch.float64).to(dtype),
            "labels": torch.as_tensor(labels, dtype=torch.int64),
        },
        hint,
    )


def _random(n: int, seed: int, dtype=torch.float32) -> Case:
    g = generator(seed)
    return _case(
        f"random logits, targets and labels, N={n} (seed {seed})",
        3 * torch.randn(n, generator=g, dtype=torch.float64),
        torch.rand(n, generator=g, dtype=torch.float64),
        torch.randint(-1, 2, (n,), generator=g),
        dtype,
    )


CASES = [
    _case("the worked example: one positive, logit 0, target 0.5: log 2", [0.0, 2.0], [0.5, 0.9],
          [1, 0], hint=POSITIVES),
    _case("three positives, a negative and an ignored anchor with wild logits",
          [0.5, -1.0, 2.0, 9.0, -9.0], [0.8, 0.3, 0.6, 0.0, 1.0], [1, 1, 1, 0, -1], hint=POSITIVES),
    _case("two positives among many negatives", [1.0, -1.0] + [4.0] * 8, [0.7, 0.4] + [0.0] * 8,
          [1, 1] + [0] * 8, hint=NORMALISE),
    _case("no positives: 0", [1.0, -2.0, 3.0], [0.2, 0.5, 0.9], [0, -1, 0]),
    _case("large logits", [40.0, -40.0, 30.0], [0.3, 0.6, 0.9], [1, 1, 1], hint=LOGITS),
    _case("float64", [0.3, -0.7, 1.1, 0.0], [0.55, 0.25, 0.95, 0.5], [1, 0, 1, 1], torch.float64),
    _case("no anchors", torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.int64)),
    _random(10, seed=1121),
    _random(200, seed=1122),
    _random(1000, seed=1123, dtype=torch.float64),
]


def _reference(logits, target, labels) -> float:
    """Eq. 6 of the paper for one image, as the package's loss computes it (float64)."""
    positive = labels == 1
    bce = F.binary_cross_entropy_with_logits(logits.double(), target.double(), reduction="none")
    return float((bce * positive).sum()) / max(int(positive.sum()), 1)


def _mistakes(logits, target, labels):
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    positive = labels == 1
    num_pos = max(int(positive.sum()), 1)
    yield POSITIVES, lambda: float((bce * (labels >= 0)).sum()) / num_pos
    yield POSITIVES, lambda: float(bce.sum()) / num_pos
    yield NORMALISE, lambda: float(bce[positive].sum()) / max(len(labels), 1)
    yield LOGITS, lambda: float(F.binary_cross_entropy(torch.sigmoid(logits), target, reduction="none")[positive].sum()) / num_pos


@pytest.mark.parametrize("case", CASES, ids=str)
def test_iou_prediction_loss(student, case: Case) -> None:
    got = call(student, case)
    logits, target, labels = case.inputs()
    expect_number(got, _reference(logits, target, labels), case, atol=1e-5, rtol=1e-4,
                  diagnoses=_mistakes(logits, target, labels))
