"""Tests for coursepkg.engine.train_shapes: every chapter's detector is one table entry."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from coursepkg.data.targets import collate_detection
from coursepkg.engine.train_shapes import DETECTORS, RETINANET_BOX_LOSSES, ShapesJob
from coursepkg.models.detector import Detector


def test_every_trained_detector_of_the_book_is_in_the_table():
    assert set(DETECTORS) == {
        "fast_rcnn", "faster_rcnn", "yolo_v1", "retinanet", "iou_aware_retinanet", "fcos",
        "retinanet_iou", "retinanet_giou", "retinanet_rectified",
    }
    assert set(RETINANET_BOX_LOSSES) < set(DETECTORS)


@pytest.mark.parametrize("name", sorted(RETINANET_BOX_LOSSES))
def test_box_loss_variants_are_retinanet_trained_alike_but_for_the_box_loss(name):
    base, variant = DETECTORS["retinanet"]("cpu"), DETECTORS[name]("cpu")
    assert variant.model.config.box_loss == RETINANET_BOX_LOSSES[name] != base.model.config.box_loss
    assert replace(variant.model.config, box_loss=base.model.config.box_loss) == base.model.config
    assert type(variant.model) is type(base.model)
    for key in ("epochs", "batch_size", "lr", "weight_decay"):
        assert getattr(variant, key) == getattr(base, key)
    assert len(variant.train_set) == len(base.train_set) and len(variant.val_set) == len(base.val_set)
    assert torch.equal(variant.train_set[3][0], base.train_set[3][0])


@pytest.mark.parametrize("name", ["faster_rcnn", "yolo_v1", "retinanet", "iou_aware_retinanet", "fcos",
                                  "retinanet_giou", "retinanet_rectified"])
def test_each_job_builds_its_chapters_model_and_data_and_its_losses_are_finite(name):
    job = DETECTORS[name]("smoke")
    assert isinstance(job, ShapesJob) and isinstance(job.model, Detector)
    assert len(job.train_set) > 0 and len(job.val_set) > 0 and job.epochs >= 1 and job.lr > 0
    torch.manual_seed(0)
    images, targets = collate_detection([job.train_set[i] for i in range(2)])[:2]
    losses = job.model.losses(images, targets)
    assert losses and all(bool(torch.isfinite(v)) for v in losses.values())


def test_main_reports_what_it_trained(tmp_path, capsys):
    from coursepkg.engine.train_shapes import main

    path = tmp_path / "report.json"
    report = main(["--detector", "yolo_v1", "--profile", "smoke", "--epochs", "1", "--num-train", "4",
                   "--batch-size", "2", "--no-val", "--report", str(path)])  # fmt: skip
    assert json.loads(path.read_text()) == report == json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["detector"] == "yolo_v1" and report["world_size"] == 1 and report["images"] == 4
    assert report["image_size"] == list(DETECTORS["yolo_v1"]("smoke").train_set[0][0].shape[-2:])
    assert report["images_per_second"] == pytest.approx(4 / report["train_seconds"])
    assert report["val_map_50"] is None
