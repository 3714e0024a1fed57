"""Grading tests of ``rpn_loss(objectness, deltas, labels, target_deltas)`` (exercise 07_faster_rcnn).

Compared with ``coursepkg.models.rpn.rpn_loss(..., normalization="notes").total``: the mean binary
cross-entropy over the sampled anchors plus λ = 10 times the smooth-L1 (β = 1) summed over the
positive anchors and divided by the number of positives. Cases: the worked example, differences on
both sides of smooth-L1's |x| = 1, ignored anchors and non-positive targets holding wild values
(they must not count), no positives, nothing sampled, float64, and seeded random batches of
several sizes.
"""

from __future__ import annotations

import pytest
import torch

from coursepkg.grading.expect import Case, call, expect_number, generator
from coursepkg.models.rpn import rpn_loss

BETA = "smooth-L1 here is the notes' form: 0.5 x^2 if |x| < 1, else |x| - 0.5 (beta = 1)"
POSITIVES = (
    "the box term sums over the POSITIVE anchors only (label 1), then divides by their number"
)
IGNORED = "anchors labelled -1 are not in the loss: select labels >= 0 for the objectness term"
NORMALISERS = (
    "objectness: the MEAN over the sampled anchors; boxes: the SUM over positives divided by the "
    "number of positives (at least 1), times lambda = 10"
)
EMPTY = "with no positives (or nothing sampled) a term is 0, not NaN: divide by max(count, 1)"


def _case(title: str, objectness, deltas, labels, targets, dtype=torch.float32, hint="") -> Case:
    def t(x, dt):
        return x.to(dt) if torch.is_tensor(x) else torch.tensor(x, dtype=dt)

    return Case(
        title,
        {
            "objectness": t(objectness, dtype).reshape(-1),
            "deltas": t(deltas, dtype).reshape(-1, 4),
            "labels": t(labels, torch.int64).reshape(-1),
            "target_deltas": t(targets, dtype).reshape(-1, 4),
        },
        hint,
    )


def _random(m: int, seed: int, dtype=torch.float32, fraction_sampled: float = 0.3) -> Case:
    g = generator(seed)
    objectness = torch.randn(m, generator=g, dtype=torch.float64) * 3
    deltas = torch.randn(m, 4, generator=g, dtype=torch.float64)
    targets = deltas + torch.randn(m, 4, generator=g, dtype=torch.float64) * 1.5
    labels = torch.where(torch.rand(m, generator=g) < 0.25, 1, 0)
    labels[torch.rand(m, generator=g) > fraction_sampled] = -1
    return _case(
        f"random batch, M={m} anchors, {int((labels >= 0).sum())} sampled, "
        f"{int((labels == 1).sum())} positive, {dtype} (seed {seed})",
        objectness,
        deltas,
        labels,
        targets,
        dtype,
    )


WILD = [[9.0, -9.0, 9.0, -9.0]]
CASES = [
    _case(
        "the worked example: 4 anchors, one positive, one negative, two ignored",
        [2.0, -1.0, 0.5, 3.0],
        [[0.1, 0.2, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]],
        [1, 0, -1, -1],
        [[0.3, -0.8, 2.0, 0.0], WILD[0], WILD[0], WILD[0]],
        hint=NORMALISERS,
    ),
    _case(
        "differences of 0.5, 0.99, 1.0, 1.01 and 3 (both branches of smooth-L1)",
        [1.0, 1.0, -1.0],
        [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0] * 4],
        [1, 1, 0],
        [[0.5, 0.99, 1.0, 1.01], [3.0, -3.0, 0.0, 0.2], WILD[0]],
        hint=BETA,
    ),
    _case(
        "ignored anchors with extreme logits and wild targets",
        [5.0, -5.0, 40.0, -40.0, 0.0],
        [[0.0] * 4] * 5,
        [1, 0, -1, -1, 0],
        [[0.2, 0.1, -0.1, 0.0], WILD[0], WILD[0], WILD[0], WILD[0]],
        hint=IGNORED,
    ),
    _case(
        "no positive anchor: only the objectness term",
        [0.3, -2.0, 1.5],
        [[1.0, 2.0, 3.0, 4.0]] * 3,
        [0, 0, -1],
        WILD * 3,
        hint=EMPTY,
    ),
    _case(
        "nothing sampled: the loss is 0",
        [0.3, -2.0],
        [[1.0, 2.0, 3.0, 4.0]] * 2,
        [-1, -1],
        WILD * 2,
        hint=EMPTY,
    ),
    _case(
        "all positive, float64",
        [0.5, 1.5, -0.5],
        [[0.1, 0.2, 0.3, 0.4], [0.0, 0.0, 0.0, 0.0], [-1.0, 2.0, 0.5, 0.0]],
        [1, 1, 1],
        [[0.0, 0.0, 0.0, 0.0], [1.5, -0.5, 0.25, 2.0], [0.0, 0.0, 0.0, 0.0]],
        torch.float64,
        hint=NORMALISERS,
    ),
    _case(
        "no anchors at all (M = 0)",
        torch.zeros(0),
        torch.zeros(0, 4),
        torch.zeros(0),
        torch.zeros(0, 4),
        hint=EMPTY,
    ),
    _random(10, seed=701, fraction_sampled=0.8),
    _random(256, seed=702, fraction_sampled=1.0),
    _random(1000, seed=703, dtype=torch.float64),
    _random(5000, seed=704, fraction_sampled=0.05),
    _random(20000, seed=705, fraction_sampled=0.0128),
]


def _mistakes(objectness, deltas, labels, targets):
    def notes(**kwargs):
        return float(
            rpn_loss(objectness, deltas, labels, targets, normalization="notes", **kwargs).total
        )

    sampled, positive = labels >= 0, labels == 1
    cls = rpn_loss(objectness, deltas, labels, targets, normalization="notes").objectness
    l1 = torch.nn.functional.smooth_l1_loss

    yield BETA, lambda: notes(beta=1 / 9)
    yield BETA, lambda: notes(beta=0.0)
    yield NORMALISERS, lambda: notes(box_loss_weight=1.0)
    yield (
        NORMALISERS,
        lambda: float(
            rpn_loss(
                objectness,
                deltas,
                labels,
                targets,
                normalization="torchvision",
                box_loss_weight=10.0,
                beta=1.0,
            ).total
        ),
    )
    yield (
        POSITIVES,
        lambda: float(
            cls
            + 10
            * l1(deltas[sampled], targets[sampled], reduction="sum")
            / max(int(positive.sum()), 1)
        ),
    )
    yield (
        POSITIVES,
        lambda: float(
            cls + 10 * l1(deltas, targets, reduction="sum") / max(int(positive.sum()), 1)
        ),
    )
    yield (
        IGNORED,
        lambda: (
            notes()
            - float(cls)
            + float(
                torch.nn.functional.binary_cross_entropy_with_logits(
                    objectness, labels.clamp(min=0).to(objectness.dtype)
                )
            )
        ),
    )


@pytest.mark.parametrize("case", CASES, ids=str)
def test_rpn_loss(student, case: Case) -> None:
    got = call(student, case)
    objectness, deltas, labels, targets = case.inputs()
    expected = float(rpn_loss(objectness, deltas, labels, targets, normalization="notes").total)
    expect_number(
        got,
        expected,
        case,
        atol=1e-5,
        rtol=1e-4,
        diagnoses=_mistakes(objectness, deltas, labels, targets),
    )
