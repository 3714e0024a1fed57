"""Precision/recall curves for the AP questions' tests, and the answers of the usual AP mistakes.

Chapter: book/exercises
"""

from __future__ import annotations

import torch
from torch import Tensor

from coursepkg.evaluation import precision_recall
from coursepkg.grading.expect import Case, generator

ENVELOPE = (
    "make precision non-increasing from the right first (p[i] = max(p[i:])): a point further down "
    "the list with more recall AND more precision lifts the curve before it"
)


def curve_case(title: str, tp: list[bool], num_gt: int, hint: str = "") -> Case:
    """The curve of a ranked list with these true positives, out of ``num_gt`` objects."""
    flags = torch.tensor(tp, dtype=torch.bool)
    if flags.numel() == 0:
        empty = torch.zeros(0, dtype=torch.float64)
        return Case(title, {"recall": empty, "precision": empty.clone()}, hint)
    curve = precision_recall(flags, num_gt)
    return Case(title, {"recall": curve.recall, "precision": curve.precision}, hint)


def random_curve_cases(seed: int, sizes: tuple[int, ...], gts: tuple[int, ...]) -> list[Case]:
    """Random ranked lists; ``num_gt`` is chosen prime to 10 so no recall lands on a tenth.

    (Whether recall 3/10 reaches the 11-point level 0.3 depends on how the levels are computed
    in floating point: 0.1 * 3 > 0.3. The tests stay away from that knife edge.)
    """
    g = generator(seed)
    cases = []
    for d in sizes:
        for num_gt in gts:
            quality = float(torch.rand(1, generator=g))  # how good the detector is
            tp = (torch.rand(d, generator=g) < quality).tolist()
            hits = 0
            for i, t in enumerate(tp):  # no more TPs than objects
                tp[i] = bool(t) and hits < num_gt
                hits += tp[i]
            cases.append(
                curve_case(
                    f"random ranked list: {d} detections, {num_gt} objects (seed {seed})",
                    tp,
                    num_gt,
                )
            )
    return cases


def fixed_cases() -> list[Case]:
    """The notes' example and the curves each rule of AP is about."""
    return [
        curve_case(
            "the notes' example: recall 0.25, 0.5, 0.75 at precision 1", [True, True, True], 4
        ),
        curve_case(
            "a false positive first, then the true positives (precision rises)",
            [False, True, True],
            3,
            ENVELOPE,
        ),
        curve_case(
            "precision that drops and recovers",
            [True, False, False, True, True, False, True],
            7,
            ENVELOPE,
        ),
        curve_case("every object found, recall reaches 1", [True, True, False, True], 3),
        curve_case(
            "only false positives (recall stays 0)",
            [False, False, False],
            3,
            "no recall, no area: AP 0",
        ),
        curve_case("no detections at all (empty curve)", [], 3, "an empty curve has AP 0"),
        curve_case("one detection, a true positive out of 7 objects", [True], 7),
    ]


def no_envelope(recall: Tensor, precision: Tensor) -> float:
    """All-point AP with the raw precision: the sum of (r_n - r_{n-1}) * p_n."""
    r = torch.cat([recall.new_zeros(1), recall])
    return float(((r[1:] - r[:-1]) * precision).sum())
