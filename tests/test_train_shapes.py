"""Tests for coursepkg.engine.train_shapes: every chapter's detector is one table entry."""

from __future__ import annotations

import pytest
import torch

from coursepkg.data.targets import collate_detection
from coursepkg.engine.train_shapes import DETECTORS, ShapesJob
from coursepkg.models.detector import Detector


def test_every_trained_detector_of_the_book_is_in_the_table():
    assert set(DETECTORS) == {
        "fast_rcnn", "faster_rcnn", "yolo_v1", "retinanet", "iou_aware_retinanet", "fcos"
    }


@pytest.mark.parametrize("name", ["faster_rcnn", "yolo_v1", "retinanet", "iou_aware_retinanet", "fcos"])
def test_each_job_builds_its_chapters_model_and_data_and_its_losses_are_finite(name):
    job = DETECTORS[name]("smoke")
    assert isinstance(job, ShapesJob) and isinstance(job.model, Detector)
    assert len(job.train_set) > 0 and len(job.val_set) > 0 and job.epochs >= 1 and job.lr > 0
    torch.manual_seed(0)
    images, targets = collate_detection([job.train_set[i] for i in range(2)])[:2]
    losses = job.model.losses(images, targets)
    assert losses and all(bool(torch.isfinite(v)) for v in losses.values())
