"""Grading tests of ``mean_average_precision(preds, targets, iou_threshold)`` (exercise 04_evaluation).

Compared with ``coursepkg.evaluation.voc_average_precision(preds, targets, iou_threshold,
"all-point").map`` on the notes' example, on the cases each step of mAP is about (labels, classes
without ground truth, ranking across images, images without detections) and on seeded random
multi-image, multi-class scenes.
"""

from __future__ import annotations

import pytest
import torch

from coursepkg.evaluation import voc_average_precision
from coursepkg.grading.expect import Case, call, expect_number, generator
from coursepkg.grading.part1._scenes import scene

LABELS = "match each class separately: a detection can only be a true positive for a ground truth of its own label"
ONLY_GT_CLASSES = "average over the classes that have ground truth; a class seen only in the predictions has no AP"
RANKING = "rank ALL the class's detections, from every image, by score before computing precision and recall"
ALL_OBJECTS = "recall divides by all the class's ground-truth objects, also those in images without detections"


def _image(boxes, labels, scores=None) -> dict:
    out = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }
    if scores is not None:
        out["scores"] = torch.tensor(scores, dtype=torch.float32)
    return out


def _case(title: str, preds: list, targets: list, iou_threshold: float, hint: str = "") -> Case:
    return Case(title, {"preds": preds, "targets": targets, "iou_threshold": iou_threshold}, hint)


def _random(num_images: int, num_classes: int, threshold: float, seed: int) -> Case:
    g = generator(seed)
    preds, targets = scene(g, num_images, num_classes)
    while sum(len(t["labels"]) for t in targets) == 0:  # mAP needs at least one object
        preds, targets = scene(g, num_images, num_classes)
    return _case(
        f"random scene: {num_images} images, {num_classes} classes, threshold {threshold} (seed {seed})",
        preds,
        targets,
        threshold,
    )


CASES = [
    _case(
        "one image, one class, every object found once",
        [_image([[0, 0, 10, 10], [20, 20, 40, 30]], [0, 0], [0.9, 0.8])],
        [_image([[1, 0, 10, 10], [20, 21, 40, 30]], [0, 0])],
        0.5,
    ),
    _case(
        "the notes' example: three images, three detections, four objects, threshold 0.3",
        [
            _image([[280, 69, 696, 435]], [0], [0.92]),
            _image([[499, 286, 791, 455], [138, 173, 335, 330]], [0, 0], [0.77, 0.33]),
            _image([], [], []),
        ],
        [
            _image([[207, 108, 624, 474]], [0]),
            _image([[106, 195, 303, 352], [548, 250, 841, 419]], [0, 0]),
            _image([[434, 223, 715, 386]], [0]),
        ],
        0.3,
        ALL_OBJECTS,
    ),
    _case(
        "two classes: a detection with the wrong label",
        [_image([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1], [0.9, 0.6])],
        [_image([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1])],
        0.5,
        LABELS,
    ),
    _case(
        "a class that appears only in the predictions",
        [_image([[0, 0, 10, 10], [50, 50, 60, 60]], [0, 2], [0.9, 0.8])],
        [_image([[0, 0, 10, 10]], [0])],
        0.5,
        ONLY_GT_CLASSES,
    ),
    _case(
        "detections of two images ranked together by score",
        [
            _image([[0, 0, 10, 10], [50, 50, 60, 60]], [0, 0], [0.9, 0.3]),
            _image([[70, 70, 80, 80], [0, 0, 10, 10]], [0, 0], [0.8, 0.7]),
        ],
        [_image([[0, 0, 10, 10]], [0]), _image([[0, 0, 10, 10]], [0])],
        0.5,
        RANKING,
    ),
    _random(2, 1, 0.5, seed=51),
    _random(3, 2, 0.5, seed=52),
    _random(5, 3, 0.5, seed=53),
    _random(8, 3, 0.3, seed=54),
    _random(12, 4, 0.7, seed=55),
    _random(20, 5, 0.5, seed=56),
]


def _mistakes(preds: list, targets: list, threshold: float):
    def every_class() -> float:
        ap = voc_average_precision(preds, targets, threshold).ap
        return float(ap.clamp(min=0).mean())

    def no_labels() -> float:
        def relabel(images):
            return [{**image, "labels": torch.zeros_like(image["labels"])} for image in images]

        return voc_average_precision(relabel(preds), relabel(targets), threshold).map

    yield ONLY_GT_CLASSES, every_class
    yield LABELS, no_labels


@pytest.mark.parametrize("case", CASES, ids=str)
def test_mean_average_precision(student, case: Case) -> None:
    got = call(student, case)
    preds, targets, threshold = case.inputs()
    expected = voc_average_precision(preds, targets, threshold, "all-point").map
    expect_number(
        got, expected, case, atol=1e-7, rtol=1e-6, diagnoses=_mistakes(preds, targets, threshold)
    )
