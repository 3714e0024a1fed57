"""Grading tests of ``confidence_over_anchors(probs, labels)`` (exercise 09_confidence_bce).

Compared with ``coursepkg.ops.confidence.confidence_loss`` on the objectness
``coursepkg.ops.confidence.objectness_from_class_probs(probs)``: the mean binary cross-entropy
over the participating anchors (labels 1 and 0; -1 is ignored), with the objectness of an anchor
the largest foreground probability (background is column 0). Cases: the notes' 100-anchor scenario
and its four worked anchors one by one, more foreground classes, wild probabilities on ignored
anchors, an image without objects, every anchor ignored, no anchors, and seeded scenarios and
random inputs of several sizes.
"""

from __future__ import annotations

import pytest
import torch

from coursepkg.data.confidence_scenario import notes_confidence_scenario
from coursepkg.grading.expect import Case, call, expect_number, generator
from coursepkg.ops.confidence import confidence_loss, objectness_from_class_probs

IGNORED = "anchors labelled -1 are left out of both the sum and the count"
COUNT = "the mean is over the PARTICIPATING anchors (labels 0 and 1), not over all N anchors"
OBJECTNESS = (
    "objectness is the LARGEST foreground probability, max(P(car), P(person)): not 1 - P(background)"
    " (which sums the foreground classes), and never the background column itself"
)
SIGN = "BCE = -[y log p + (1 - y) log(1 - p)]: the loss is positive; y = 1 uses log p"
EMPTY = "with no participating anchor the loss is 0, not NaN: divide by max(count, 1)"


def _expected(probs, labels) -> float:
    objectness = objectness_from_class_probs(probs.double())
    return float(confidence_loss(torch.logit(objectness), labels))


def _case(title: str, probs, labels, dtype=torch.float64, hint: str = "") -> Case:
    probs = probs if torch.is_tensor(probs) else torch.tensor(probs, dtype=torch.float64)
    labels = labels if torch.is_tensor(labels) else torch.tensor(labels, dtype=torch.int64)
    return Case(title, {"probs": probs.to(dtype), "labels": labels}, hint)


def _scenario(seed: int, dtype=torch.float64) -> Case:
    s = notes_confidence_scenario(seed)
    return _case(
        f"the notes' 100 anchors, the other 96 rows drawn with (seed {seed}), {dtype}",
        s.probs,
        s.labels,
        dtype,
        hint=COUNT,
    )


def _random(n: int, num_classes: int, seed: int) -> Case:
    g = generator(seed)
    logits = torch.randn(n, num_classes, generator=g, dtype=torch.float64) * 2
    probs = logits.softmax(dim=1).clamp(0.001, 0.999)
    labels = torch.randint(-1, 2, (n,), generator=g)
    return _case(
        f"random, {n} anchors, {num_classes - 1} foreground classes (seed {seed})",
        probs,
        labels,
        hint=OBJECTNESS,
    )


SCENARIO = notes_confidence_scenario(0)
CASES = [
    _case("anchor 5 alone: [0.2, 0.7, 0.1], positive (0.357)", [[0.2, 0.7, 0.1]], [1], hint=SIGN),
    _case(
        "anchor 15 alone: [0.1, 0.3, 0.6], positive (0.511)",
        [[0.1, 0.3, 0.6]],
        [1],
        hint=OBJECTNESS,
    ),
    _case("anchor 50 alone: [0.9, 0.05, 0.05], negative (0.051)", [[0.9, 0.05, 0.05]], [0]),
    _case(
        "anchor 70 alone: [0.7, 0.2, 0.1], negative (0.223)",
        [[0.7, 0.2, 0.1]],
        [0],
        hint=OBJECTNESS,
    ),
    _scenario(0),
    _case(
        "the notes' four anchors, and two ignored ones",
        [
            [0.2, 0.7, 0.1],
            [0.1, 0.3, 0.6],
            [0.9, 0.05, 0.05],
            [0.7, 0.2, 0.1],
            [0.01, 0.98, 0.01],
            [0.98, 0.01, 0.01],
        ],
        [1, 1, 0, 0, -1, -1],
        hint=IGNORED,
    ),
    _case(
        "the notes' first table: a background and three foreground classes",
        [[0.1, 0.4, 0.7, 0.85], [0.8, 0.02, 0.1, 0.04]],
        [1, 0],
        hint=OBJECTNESS,
    ),
    _case(
        "an image without objects: every anchor negative",
        [[0.6, 0.3, 0.1], [0.95, 0.03, 0.02], [0.4, 0.25, 0.35]],
        [0, 0, 0],
        hint=SIGN,
    ),
    _case(
        "every anchor ignored: the loss is 0",
        [[0.2, 0.7, 0.1], [0.5, 0.25, 0.25]],
        [-1, -1],
        hint=EMPTY,
    ),
    _case("no anchors at all", torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64), hint=EMPTY),
    _scenario(1, torch.float32),
    _scenario(2),
    _scenario(3),
    _random(37, 3, seed=911),
    _random(1000, 5, seed=912),
]


def _mistakes(probs, labels):
    probs = probs.double()
    y = labels.clamp(min=0).double()
    keep = labels >= 0
    n = max(int(keep.sum()), 1)

    def bce(p):
        return -(y * torch.log(p) + (1 - y) * torch.log(1 - p))

    best = objectness_from_class_probs(probs) if probs.shape[0] else probs.new_zeros(0)
    yield IGNORED, lambda: float(bce(best).mean())  # ignored anchors counted as negatives
    yield COUNT, lambda: float(bce(best)[keep].sum() / max(len(labels), 1))
    yield OBJECTNESS, lambda: float(bce(1 - probs[:, 0])[keep].sum() / n)
    yield OBJECTNESS, lambda: float(bce(probs.amax(dim=1))[keep].sum() / n)
    yield SIGN, lambda: -float(bce(best)[keep].sum() / n)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_confidence_over_anchors(student, case: Case) -> None:
    got = call(student, case)
    probs, labels = case.inputs()
    expect_number(
        got,
        _expected(probs, labels),
        case,
        atol=1e-5,
        rtol=1e-4,
        diagnoses=_mistakes(probs, labels),
    )
