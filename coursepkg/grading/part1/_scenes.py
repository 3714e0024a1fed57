"""Random detections and ground truth for the evaluation questions' tests.

Detections are noisy copies of ground-truth boxes (good ones, poor ones, duplicates) mixed with
boxes anywhere, so a random case has true positives, false positives, duplicates and misses.

Chapter: book/exercises
"""

from __future__ import annotations

import torch
from torch import Tensor

from coursepkg.grading.expect import random_boxes


def jitter(boxes: Tensor, g: torch.Generator, scale: float | Tensor) -> Tensor:
    """Move each corner by up to ``scale`` (a float or ``[N, 1]``) times the box's side."""
    sides = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)  # [N, 4]
    noise = (torch.rand(boxes.shape, generator=g, dtype=torch.float64) * 2 - 1) * scale
    moved = boxes + noise.to(boxes.dtype) * sides
    lo, hi = torch.minimum(moved[:, :2], moved[:, 2:]), torch.maximum(moved[:, :2], moved[:, 2:])
    return torch.cat([lo, hi], dim=1)


def detections(gt: Tensor, g: torch.Generator, num_false: int) -> tuple[Tensor, Tensor, Tensor]:
    """Noisy copies of the GT boxes (0 to 2 each) and ``num_false`` boxes anywhere, shuffled.

    Returns:
        ``[D, 4]`` float32 boxes, ``[D]`` float32 scores (distinct with probability 1) and ``[D]``
        int64 index of the GT each detection copies (-1 for the false alarms).
    """
    copies = torch.randint(0, 3, (gt.shape[0],), generator=g)
    source = torch.arange(gt.shape[0]).repeat_interleave(copies)  # [C]
    scale = torch.rand(source.numel(), 1, generator=g, dtype=torch.float64) * 0.4  # [C, 1]
    boxes = torch.cat([jitter(gt[source], g, scale), random_boxes(num_false, g)])
    source = torch.cat([source, torch.full((num_false,), -1)])
    order = torch.randperm(boxes.shape[0], generator=g)
    return boxes[order].float(), torch.rand(boxes.shape[0], generator=g), source[order]


def scene(
    g: torch.Generator, num_images: int, num_classes: int, max_gt: int = 4
) -> tuple[list, list]:
    """Per-image prediction and target dicts in the format of ``coursepkg.evaluation``.

    A copy of a GT box mostly carries its label, sometimes another; false alarms get any label.
    Some images have no objects, and a class may appear only in the predictions.
    """
    preds, targets = [], []
    for _ in range(num_images):
        num_gt = int(torch.randint(0, max_gt + 1, (1,), generator=g))
        gt = random_boxes(num_gt, g)
        gt_labels = torch.randint(0, num_classes, (num_gt,), generator=g)
        boxes, scores, source = detections(
            gt, g, num_false=int(torch.randint(0, 3, (1,), generator=g))
        )
        labels = torch.randint(0, num_classes, (boxes.shape[0],), generator=g)
        keep_label = (source >= 0) & (torch.rand(source.shape, generator=g) < 0.85)
        labels[keep_label] = gt_labels[source[keep_label]]
        preds.append({"boxes": boxes, "scores": scores, "labels": labels})
        targets.append({"boxes": gt, "labels": gt_labels})
    return preds, targets
