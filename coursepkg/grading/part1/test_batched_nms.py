"""Grading tests of ``batched_nms(boxes, scores, labels, iou_threshold)``, class-aware NMS
(exercise 03_nms).

Compared with :func:`coursepkg.ops.nms.batched_nms` on cases where classes matter (overlapping boxes
of different classes, classes interleaved in score order, large coordinates that defeat a small
fixed offset, classes that are not contiguous in the input) and on seeded random sets.
"""

from __future__ import annotations

import pytest
import torch

from coursepkg.grading.expect import (
    Case,
    Picture,
    call,
    expect_tensor,
    generator,
    random_boxes,
    tied_scores,
)
from coursepkg.ops.nms import batched_nms, nms

CLASSES = "boxes of different labels never suppress each other: run NMS within each class"
ORDER = "return the kept indices of all classes together, sorted by decreasing score (ties: input order)"
INDICES = "return indices into the original boxes, not into one class's subset (map them back)"
OFFSET = (
    "an offset per class must exceed every coordinate (e.g. labels * (boxes.max() + 1)); a fixed "
    "offset lets large boxes of different classes overlap"
)


def _case(title: str, boxes, scores, labels, iou_threshold: float, hint: str = "") -> Case:
    boxes = (
        boxes if torch.is_tensor(boxes) else torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    )
    scores = scores if torch.is_tensor(scores) else torch.tensor(scores, dtype=torch.float32)
    labels = labels if torch.is_tensor(labels) else torch.tensor(labels, dtype=torch.int64)
    return Case(
        title,
        {"boxes": boxes, "scores": scores, "labels": labels, "iou_threshold": iou_threshold},
        hint,
    )


def _random(
    n: int, classes: int, threshold: float, seed: int, size: float = 100.0, ties: bool = False
) -> Case:
    g = generator(seed)
    boxes = random_boxes(n, g, size=size)
    scores = tied_scores(n, g) if ties else torch.rand(n, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    extra = f", coordinates up to {size:g}" if size != 100.0 else ""
    extra += ", tied scores" if ties else ""
    return _case(
        f"random boxes, N={n}, {classes} classes{extra}, threshold {threshold} (seed {seed})",
        boxes,
        scores,
        labels,
        threshold,
    )


CASES = [
    _case(
        "two overlapping boxes of different classes",
        [[0, 0, 10, 10], [1, 0, 11, 10]],
        [0.9, 0.8],
        [0, 1],
        0.5,
        CLASSES,
    ),
    _case(
        "two overlapping boxes of the same class",
        [[0, 0, 10, 10], [1, 0, 11, 10]],
        [0.9, 0.8],
        [1, 1],
        0.5,
    ),
    _case(
        "classes interleaved in score order",
        [[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30], [0, 0, 10, 9]],
        [0.5, 0.9, 0.7, 0.6],
        [0, 1, 0, 1],
        0.5,
        ORDER,
    ),
    _case(
        "labels not grouped in the input",
        [[0, 0, 10, 10], [40, 40, 50, 50], [1, 1, 10, 10], [41, 40, 50, 50], [80, 0, 90, 10]],
        [0.3, 0.8, 0.9, 0.6, 0.7],
        [2, 0, 2, 0, 5],
        0.5,
        INDICES,
    ),
    _case(
        "large boxes of different classes at the same place",
        [[0, 0, 5000, 5000], [10, 10, 5010, 5010], [0, 0, 5000, 5000]],
        [0.9, 0.8, 0.7],
        [0, 0, 1],
        0.4,
        OFFSET,
    ),
    _case(
        "no boxes (N = 0)",
        torch.zeros(0, 4),
        torch.zeros(0),
        torch.zeros(0, dtype=torch.int64),
        0.5,
        "with no boxes return an empty int64 tensor",
    ),
    _random(6, 2, 0.5, seed=71),
    _random(12, 3, 0.3, seed=72, ties=True),
    _random(30, 3, 0.5, seed=73, size=20000.0),
    _random(60, 10, 0.6, seed=74),
    _random(200, 5, 0.5, seed=75, ties=True),
]


def _per_class(boxes, scores, labels, t, *, local: bool = False) -> torch.Tensor:
    parts = []
    for c in torch.unique(labels):
        members = torch.nonzero(labels == c).squeeze(1)
        keep = nms(boxes[members], scores[members], t)
        parts.append(keep if local else members[keep])
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)


def _mistakes(boxes, scores, labels, t):
    yield CLASSES, lambda: nms(boxes, scores, t)
    yield ORDER, lambda: _per_class(boxes, scores, labels, t)
    yield INDICES, lambda: _per_class(boxes, scores, labels, t, local=True)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_batched_nms(student, case: Case) -> None:
    got = call(student, case)
    boxes, scores, labels, threshold = case.inputs()
    expected = batched_nms(boxes, scores, labels, threshold)
    picture = None
    if 0 < len(boxes) <= 8:
        picture = Picture(
            "boxes labelled 'index: score (class)'; kept: expected (green), yours (red, dashed)"
        )
        texts = [
            f"{i}: {float(s):.2f} ({int(c)})"
            for i, (s, c) in enumerate(zip(scores, labels, strict=True))
        ]
        picture.add("boxes", boxes, "grey", texts=texts)
        picture.add("expected", boxes[expected], "tab:green")
        if isinstance(got, torch.Tensor) and got.dim() == 1 and not got.is_floating_point():
            if bool(((got >= 0) & (got < len(boxes))).all()):
                picture.add("yours", boxes[got.long()], "tab:red", dashed=True)
    expect_tensor(
        got,
        expected,
        case,
        exact_dtype=True,  # int64, as torchvision's batched_nms
        diagnoses=_mistakes(boxes, scores, labels, threshold),
        picture=picture,
    )
