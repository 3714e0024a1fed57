"""Part II questions: R-CNN's box regression, Fast R-CNN's RoI pooling, Faster R-CNN's RPN.

Each question's tests are the pytest module ``test_<name>.py`` beside this file. They compare the
student's function with the package's reference implementation (:mod:`coursepkg.ops.box_coding`,
:mod:`coursepkg.ops.roi_pool`, :mod:`coursepkg.models.anchors`, :mod:`coursepkg.models.assignment`,
:mod:`coursepkg.models.rpn`) on the worked examples, on edge cases (empty, identical boxes, values
exactly at a threshold, ties, boxes outside the feature map) and on seeded random inputs of
several sizes.

Chapter: book/exercises
"""

from pathlib import Path

from coursepkg.grading.questions import question

_HERE = Path(__file__).parent

QUESTIONS = (
    question(
        "regression_targets", 2, "05_rcnn", "bbox-regression targets (t_x, t_y, t_w, t_h)", _HERE
    ),
    question("apply_deltas", 2, "05_rcnn", "move proposals by predicted deltas (inverse)", _HERE),
    question("roi_max_pool", 3, "06_fast_rcnn", "RoI max pooling of one RoI", _HERE),
    question("make_anchors", 2, "07_faster_rcnn", "all anchors of a feature map", _HERE),
    question("label_anchors", 3, "07_faster_rcnn", "positive / negative / ignored anchors", _HERE),
    question("sample_anchors", 2, "07_faster_rcnn", "256 anchors, at most half positive", _HERE),
    question("rpn_loss", 2, "07_faster_rcnn", "the RPN loss in the notes' normalisation", _HERE),
)
