"""Part III questions: one-stage detectors (YOLOv1's responsible predictor and loss, the confidence
loss with BCE, focal loss and RetinaNet's anchor labels).

Each question's tests are the pytest module ``test_<name>.py`` beside this file. They compare the
student's function with the package's reference implementation (:mod:`coursepkg.models.yolo`,
:mod:`coursepkg.ops.confidence`, :mod:`coursepkg.data.confidence_scenario`,
:func:`coursepkg.ops.focal.sigmoid_focal_loss`, :func:`coursepkg.models.assignment.match_anchors`) on the worked
examples, on edge cases (centres on cell boundaries and on the image border, two objects in one
cell, extreme logits, empty inputs, every anchor ignored, images without objects) and on seeded
random inputs of several sizes.

Chapter: book/exercises
"""

from pathlib import Path

from coursepkg.grading.questions import question

_HERE = Path(__file__).parent

QUESTIONS = (
    question(
        "responsible_predictor", 3, "08_yolo", "YOLOv1: the cell and the predictor of each object", _HERE
    ),
    question("yolo_loss", 3, "08_yolo", "the YOLOv1 loss (Eq. 3), summed over a batch", _HERE),
    question(
        "bce_from_logits", 2, "09_confidence_bce", "per-element BCE from logits, stable", _HERE
    ),
    question(
        "confidence_over_anchors",
        2,
        "09_confidence_bce",
        "the notes' confidence loss over 100 anchors",
        _HERE,
    ),
    question("focal_loss", 3, "10_retinanet", "the focal loss of every element, from logits", _HERE),
    question(
        "label_retina_anchors", 3, "10_retinanet",
        "RetinaNet's anchor labels (0.5 / 0.4, ignore band) and matched ground truths", _HERE,
    ),
)
