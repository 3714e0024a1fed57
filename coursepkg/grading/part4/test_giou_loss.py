"""Grading tests of ``giou_loss(boxes1, boxes2)``, the GIoU loss of matched boxes (exercise 12).

Compared with :func:`coursepkg.ops.iou_losses.giou_loss` (``reduction="none"``, ``eps=1e-7``, equal
to torchvision's ``generalized_box_iou_loss``) on the worked example, the edge cases of
:mod:`coursepkg.grading.part4._pairs` and seeded random boxes.
"""

from __future__ import annotations

import pytest

from coursepkg.grading.expect import Case, call, expect_tensor
from coursepkg.grading.part4 import _pairs
from coursepkg.ops.iou_losses import giou_loss, iou_loss


def _diagnoses(case: Case):
    boxes1, boxes2 = case.inputs()
    return [
        (
            "that is 1 - IoU without the GIoU penalty: add (|C| - U) / (|C| + eps), C the smallest "
            "box around both",
            lambda: iou_loss(boxes1, boxes2, reduction="none"),
        ),
    ]


@pytest.mark.parametrize("case", _pairs.cases(), ids=str)
def test_giou_loss(student, case: Case) -> None:
    got = call(student, case)
    expect_tensor(
        got,
        _pairs.reference(giou_loss, case),
        case,
        atol=1e-5,
        rtol=1e-4,
        diagnoses=_diagnoses(case),
        picture=_pairs.picture(case),
    )
