"""Part IV questions: IoU-aware RetinaNet's score, IoU target and IoU loss; the GIoU and DIoU losses of matched boxes; FCOS's targets and centerness.

Each question's tests are the pytest module ``test_<name>.py`` beside this file. They compare the
student's function with the package's (:func:`coursepkg.ops.iou_losses.giou_loss` and
:func:`coursepkg.ops.iou_losses.diou_loss`, ``reduction="none"``; :mod:`coursepkg.models.fcos`) on
the worked examples, on the edge cases where the usual mistakes show (disjoint, nested, identical,
touching and zero-area boxes, which need ``eps``; points exactly on a box edge, largest distances
exactly on a level bound, points inside several boxes, no boxes) and on seeded random inputs.

Chapter: book/exercises
"""

from pathlib import Path

from coursepkg.grading.questions import question

_HERE = Path(__file__).parent

QUESTIONS = (
    question("iou_aware_score", 2, "11_iou_aware_retinanet", "IoU-aware score p^alpha IoU^(1-alpha)", _HERE),
    question(
        "iou_targets", 3, "11_iou_aware_retinanet", "IoU of the regressed boxes with their ground truths", _HERE
    ),
    question(
        "iou_prediction_loss", 2, "11_iou_aware_retinanet", "BCE of the predicted IoU on the positives", _HERE
    ),
    question("giou_loss", 2, "12_iou_losses", "GIoU loss of matched boxes, eps included", _HERE),
    question("diou_loss", 2, "12_iou_losses", "DIoU loss of matched boxes, eps included", _HERE),
    question(
        "fcos_targets", 3, "13_fcos", "FCOS regression targets and level assignment", _HERE
    ),
    question("centerness", 2, "13_fcos", "FCOS centerness from (l, t, r, b)", _HERE),
)
