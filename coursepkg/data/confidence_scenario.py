"""The lecture notes' 100-anchor confidence-loss scenario, completed into a full, seeded example.

Note 000 sets the scene: one image with a car and a person, classes ``[background, car, person]``,
100 anchors; anchors 1-20 are positive (IoU > 0.5 with an object), 21-80 negative (IoU < 0.3),
81-100 ignored. It gives the class probabilities of four anchors only:

==========  =====================  ========
anchor      probabilities          label
==========  =====================  ========
5           [0.2, 0.7, 0.1]        positive
15          [0.1, 0.3, 0.6]        positive
50          [0.9, 0.05, 0.05]      negative
70          [0.7, 0.2, 0.1]        negative
==========  =====================  ========

The other 96 rows are ours, drawn by this rule (seeded, so every run gives the same table): for
each anchor draw three uniform weights ``u ~ U(0, 1)`` and add ``boost`` to the weight of one
class: a random foreground class (car or person, equally likely) for a positive, the background
for a negative, none for an ignored anchor; normalise to sum 1, round to two decimals like the
note's rows, and give the rounding remainder to the largest entry, so each row sums to 1 exactly
(up to float rounding) and no entry is below 0.01. Then the note's four rows overwrite theirs.

Anchors are numbered 1..100 as in the note; row ``i - 1`` of the tensors is anchor ``i``.

Chapter: book/09_confidence_bce (section "The 100-anchor scenario").
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from coursepkg.ops.validation import check_int, check_number

__all__ = ["NOTES_ANCHORS", "CLASS_NAMES", "ConfidenceScenario", "notes_confidence_scenario"]

CLASS_NAMES = ("background", "car", "person")
"""The note's classes, in column order."""

NOTES_ANCHORS = {
    5: (0.2, 0.7, 0.1),
    15: (0.1, 0.3, 0.6),
    50: (0.9, 0.05, 0.05),
    70: (0.7, 0.2, 0.1),
}
"""The note's four worked anchors (numbered from 1) and their class probabilities."""


class ConfidenceScenario(NamedTuple):
    """Result of :func:`notes_confidence_scenario`."""

    probs: Tensor
    """[100, 3] float64 class probabilities ``[background, car, person]``, rows sum to 1."""
    labels: Tensor
    """[100] int64: 1 for anchors 1-20, 0 for 21-80, -1 for 81-100."""
    from_notes: Tensor
    """[100] bool: True on the rows the note gives (anchors 5, 15, 50, 70)."""


def notes_confidence_scenario(seed: int = 0, boost: float = 1.5) -> ConfidenceScenario:
    """Note 000's 100 anchors: its four rows, and 96 seeded rows by the rule of the module docstring.

    Args:
        seed: seed of the generator that draws the 96 other rows.
        boost: weight added to the class an anchor leans towards (larger: more confident rows).

    Returns:
        ``ConfidenceScenario(probs [100, 3] float64, labels [100] int64, from_notes [100] bool)``.

    Raises:
        TypeError: if ``seed`` is not an int or ``boost`` not a number.
        ValueError: if ``seed`` is negative or ``boost`` negative or not finite.

    Chapter: book/09_confidence_bce (section "The 100-anchor scenario").
    """
    seed = check_int(seed, "seed", low=0)
    boost = check_number(boost, "boost", low=0.0)
    g = torch.Generator().manual_seed(seed)
    labels = torch.full((100,), -1, dtype=torch.int64)
    labels[:20] = 1  # anchors 1-20: IoU > 0.5
    labels[20:80] = 0  # anchors 21-80: IoU < 0.3; 81-100 stay ignored
    weights = torch.rand(100, 3, generator=g, dtype=torch.float64)  # [100, 3]
    foreground = 1 + torch.randint(0, 2, (100,), generator=g)  # car (1) or person (2)
    lean = torch.where(labels == 1, foreground, torch.zeros_like(foreground))
    weights[labels >= 0, lean[labels >= 0]] += boost  # ignored anchors lean nowhere
    probs = weights / weights.sum(dim=1, keepdim=True)
    probs = (probs * 100).round().clamp(min=1) / 100  # two decimals, at least 0.01
    rows = torch.arange(100)
    largest = probs.argmax(dim=1)
    probs[rows, largest] += 1 - probs.sum(dim=1)  # the rounding remainder goes to the largest
    from_notes = torch.zeros(100, dtype=torch.bool)
    for anchor, row in NOTES_ANCHORS.items():
        probs[anchor - 1] = torch.tensor(row, dtype=torch.float64)
        from_notes[anchor - 1] = True
    return ConfidenceScenario(probs, labels, from_notes)
