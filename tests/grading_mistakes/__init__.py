"""Seeded mistakes: small variants of the model answers that the grading tests must catch.

Each :class:`Mistake` is a list of text edits to one answer cell of ``solutions/<exercise>.md``
(every ``old`` must occur exactly once there, so a changed model answer forces the mistake to be
updated with it). ``tests/test_grading.py`` applies the edits, defines the function and checks that
the question's tests take its points away. At least three per question.

They live with the tests, not in the package: they are evidence that grading means something,
needed in CI and not by students.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mistake:
    """A typical wrong answer to ``question``, as edits ``(old, new)`` of the model answer."""

    question: str
    description: str
    edits: tuple[tuple[str, str], ...]

    def apply(self, code: str) -> str:
        for old, new in self.edits:
            if code.count(old) != 1:
                raise ValueError(
                    f"{self.question} / {self.description}: {old!r} is not in the answer exactly once"
                )
            code = code.replace(old, new)
        return code


def mistake(question: str, description: str, *edits: tuple[str, str]) -> Mistake:
    return Mistake(question, description, tuple(edits))


def all_mistakes() -> list[Mistake]:
    from grading_mistakes import (
        boxes_iou,
        confidence,
        evaluation,
        fast_rcnn,
        faster_rcnn,
        fcos,
        iou_aware_retinanet,
        iou_losses,
        nms,
        rcnn,
        retinanet,
        sliding_windows,
        yolo,
    )

    return [
        *sliding_windows.MISTAKES,
        *boxes_iou.MISTAKES,
        *nms.MISTAKES,
        *evaluation.MISTAKES,
        *rcnn.MISTAKES,
        *fast_rcnn.MISTAKES,
        *faster_rcnn.MISTAKES,
        *confidence.MISTAKES,
        *iou_losses.MISTAKES,
        *yolo.MISTAKES,
        *retinanet.MISTAKES,
        *iou_aware_retinanet.MISTAKES,
        *fcos.MISTAKES,
    ]
