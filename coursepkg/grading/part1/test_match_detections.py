"""Grading tests of ``match_detections(pred_boxes, pred_scores, gt_boxes, iou_threshold)``
(exercise 04_evaluation): the true-positive flags of one image and one class, VOC style.

Compared with the ``tp`` of :func:`coursepkg.evaluation.match_detections` on the notes' image,
on the cases each rule of the matching is about (duplicates, score order, a threshold met exactly,
no fallback to a second-best ground truth, ties, empty inputs) and on seeded random scenes.
"""

from __future__ import annotations

import pytest
import torch

from coursepkg.evaluation import match_detections
from coursepkg.grading.expect import Case, Picture, call, expect_tensor, generator, random_boxes
from coursepkg.grading.part1._scenes import detections

ONCE = "each ground-truth box can be claimed once: a second detection of the same object is a false positive"
ORDER = "visit the detections from the highest score down (the result is in that order too)"
AT_THRESHOLD = "a detection is a true positive when its IoU is >= iou_threshold (equal counts)"
NO_FALLBACK = (
    "VOC rule: a detection looks only at the ground truth it overlaps most; if that one is taken, "
    "the detection is a false positive (no second choice)"
)
TIES = "equal scores keep their input order: sort with torch.sort(scores, descending=True, stable=True)"


def _case(
    title: str, pred_boxes, pred_scores, gt_boxes, iou_threshold: float, hint: str = ""
) -> Case:
    def boxes(b):
        return b if torch.is_tensor(b) else torch.tensor(b, dtype=torch.float32).reshape(-1, 4)

    scores = (
        pred_scores
        if torch.is_tensor(pred_scores)
        else torch.tensor(pred_scores, dtype=torch.float32)
    )
    return Case(
        title,
        {
            "pred_boxes": boxes(pred_boxes),
            "pred_scores": scores,
            "gt_boxes": boxes(gt_boxes),
            "iou_threshold": iou_threshold,
        },
        hint,
    )


def _random(num_gt: int, num_false: int, threshold: float, seed: int) -> Case:
    g = generator(seed)
    gt = random_boxes(num_gt, g)
    boxes, scores, _ = detections(gt, g, num_false)
    return _case(
        f"random scene: {len(boxes)} detections, {num_gt} ground truths, threshold {threshold} (seed {seed})",
        boxes,
        scores,
        gt,
        threshold,
    )


CASES = [
    _case(
        "a detection with the same IoU (0.6) with two ground truths takes the first",
        [[2.5, 0, 12.5, 10], [5, 0, 15, 10]],
        [0.9, 0.8],
        [[0, 0, 10, 10], [5, 0, 15, 10]],
        0.5,
        "on equal IoUs the detection matches the ground truth that comes first (pycocotools "
        "keeps the first; torch.max/argmax return the first maximum): the second ground truth "
        "stays free for the second detection",
    ),
    _case(
        "the notes' image '297': two detections, two ground truths, threshold 0.3",
        [[499, 286, 791, 455], [138, 173, 335, 330]],
        [0.77, 0.33],
        [[106, 195, 303, 352], [548, 250, 841, 419]],
        0.3,
    ),
    _case(
        "two detections of the same object",
        [[0, 0, 10, 10], [1, 0, 11, 10]],
        [0.9, 0.8],
        [[0, 0, 10, 10]],
        0.5,
        ONCE,
    ),
    _case(
        "detections given in increasing score order",
        [[1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60]],
        [0.2, 0.6, 0.9],
        [[0, 0, 10, 10]],
        0.5,
        ORDER,
    ),
    _case(
        "IoU exactly at the threshold (0.5)",
        [[0, 0, 10, 20]],
        [0.7],
        [[0, 0, 10, 10]],
        0.5,
        AT_THRESHOLD,
    ),
    _case(
        "the best ground truth is already taken",
        [[0, 0, 10, 10], [2, 0, 12, 10]],
        [0.9, 0.8],
        [[0, 0, 10, 10], [5, 0, 15, 10]],
        0.5,
        NO_FALLBACK,
    ),
    _case(
        "tied scores: a miss listed before a hit",
        [[50, 50, 60, 60], [0, 0, 10, 10]],
        [0.5, 0.5],
        [[0, 0, 10, 10]],
        0.5,
        TIES,
    ),
    _case(
        "no ground truth: every detection is a false positive",
        [[0, 0, 5, 5], [3, 3, 9, 9]],
        [0.4, 0.6],
        torch.zeros(0, 4),
        0.5,
    ),
    _case(
        "no detections",
        torch.zeros(0, 4),
        torch.zeros(0),
        [[0, 0, 5, 5]],
        0.5,
        "with no detections return an empty bool tensor",
    ),
    _random(3, 1, 0.5, seed=31),
    _random(5, 2, 0.3, seed=32),
    _random(6, 3, 0.7, seed=33),
    _random(12, 5, 0.5, seed=34),
    _random(30, 10, 0.5, seed=35),
    _random(60, 20, 0.4, seed=36),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_match_detections(student, case: Case) -> None:
    got = call(student, case)
    pred_boxes, pred_scores, gt_boxes, threshold = case.inputs()
    expected = match_detections(pred_boxes, pred_scores, gt_boxes, threshold).tp
    picture = None
    if 0 < len(pred_boxes) + len(gt_boxes) <= 10:
        order = torch.sort(pred_scores, descending=True, stable=True).indices
        picture = Picture("ground truth (green), detections (blue) with score and expected TP/FP")
        picture.add(
            "ground truth", gt_boxes, "tab:green", texts=[f"gt {j}" for j in range(len(gt_boxes))]
        )
        verdict = {int(i): "TP" if bool(t) else "FP" for i, t in zip(order, expected, strict=True)}
        texts = [f"{float(s):.2f} {verdict[i]}" for i, s in enumerate(pred_scores)]
        picture.add("detections", pred_boxes, "tab:blue", dashed=True, texts=texts)
    expect_tensor(got, expected, case, picture=picture)
