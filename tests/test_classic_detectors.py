"""Sliding windows and R-CNN as detectors: the chapters' pipelines, the contract, the capstone row."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch

from coursepkg.data import ShapesDataset
from coursepkg.engine import capstone
from coursepkg.engine.capstone import LATER_ROW_KEYS, ROW_KEYS, CapstoneData
from coursepkg.engine.classic_detectors import (
    CLASSIC_DETECTORS,
    RCNNDetector,
    SlidingWindowDetector,
    _selective_search,
    classic_num_train,
    train_classic,
    train_rcnn,
    train_sliding_windows,
    window_classifier,
)
from coursepkg.engine.recipes import rcnn_recipe, sliding_window_recipe
from coursepkg.engine.training import evaluate, fit, predict
from coursepkg.evaluation.error_analysis import ERROR_TYPES
from coursepkg.models.rcnn import ProposalCache, rcnn_detect
from coursepkg.ops.nms import nms
from coursepkg.ops.sliding_windows import count_windows, sliding_windows

BOOK = Path(__file__).resolve().parents[1] / "book"
NUM_CLASSES = 5


def _images(n: int, seed: int) -> list[torch.Tensor]:
    data = ShapesDataset(n, seed=seed)
    return [data[i][0] for i in range(n)]


def _untrained_windows(score_thresh: float = 0.15) -> SlidingWindowDetector:
    torch.manual_seed(0)
    recipe = dataclasses.replace(sliding_window_recipe("smoke"), score_thresh=score_thresh)
    return SlidingWindowDetector(window_classifier(NUM_CLASSES), NUM_CLASSES, recipe).eval()


# ----------------------------------------------------------------------------- sliding windows


def test_the_recipe_is_the_chapters():
    """The chapter keeps its settings in its cells: they must match the recipe the capstone uses."""
    text = (BOOK / "01_sliding_windows.md").read_text()
    recipes = {p: sliding_window_recipe(p) for p in ("smoke", "cpu", "gpu")}
    r = recipes["cpu"]
    assert f"WIN, STEP, SCALE = {r.window}, {r.step}, {r.scale}" in text
    num_train = ", ".join(f"{p}={recipes[p].num_train}" for p in recipes)
    assert re.search(rf"train_set = ShapesDataset\(PROFILE\.pick\({num_train}\)", text)
    epochs = ", ".join(f"{p}={recipes[p].epochs}" for p in recipes)
    assert f"epochs = PROFILE.pick({epochs})" in text
    assert float(re.search(r"Adam\(classifier\.parameters\(\), lr=([0-9.e-]+)\)", text)[1]) == r.lr
    assert f"split({r.batch_size})" in text
    assert f"best_target >= {r.fg_iou_thresh}" in text and f"best_target < {r.bg_iou_thresh}" in text
    assert f"best_any >= {r.bg_iou_thresh_lo}" in text
    assert f"s >= {r.score_thresh}" in text and f"iou_threshold={r.nms_thresh}" in text


def test_windows_are_the_pyramids_blocks_in_sliding_windows_order():
    detector = _untrained_windows()
    image = _images(1, seed=3)[0]
    patches, boxes = detector.windows(image)
    count = count_windows((128, 128), (24, 24), 4, scale=1.25)
    assert patches.shape == (count.total, 3, 24, 24) and boxes.shape == (count.total, 4)
    level0 = sliding_windows((128, 128), (24, 24), 4)
    assert torch.equal(boxes[: len(level0)], level0)
    for j in (0, 1, 27, 500, len(level0) - 1):  # level 0: plain crops of the image
        x1, y1, x2, y2 = level0[j].int().tolist()
        assert torch.equal(patches[j], image[:, y1:y2, x1:x2])
    assert boxes[-1].tolist() == pytest.approx([0.0, 0.0, 24 * 1.25**7, 24 * 1.25**7])


def test_sliding_window_detections_are_the_chapters_pipeline_per_class():
    """Score every window, keep probability >= threshold, NMS at 0.3 per class, merge by score."""
    detector = _untrained_windows()  # untrained: probabilities near 1/6, above the 0.15 used here
    for image in _images(2, seed=4):
        with torch.no_grad():
            patches, boxes = detector.windows(image)
            probs = detector.classifier(patches).softmax(dim=1)[:, 1:]  # [N, K]
            expected = []
            for k in range(NUM_CLASSES):
                s = probs[:, k]
                accepted = s >= detector.score_thresh
                kept = nms(boxes[accepted], s[accepted], iou_threshold=0.3)
                expected += [(float(v), k) for v in s[accepted][kept]]
            out = predict(detector, image)[0]
        assert len(out["boxes"]) == min(len(expected), 100) > 0
        expected.sort(key=lambda pair: -pair[0])
        assert out["scores"].tolist() == pytest.approx([v for v, _ in expected[:100]])
        assert (out["scores"] >= detector.score_thresh).all()
        assert out["labels"].dtype == torch.int64 and int(out["labels"].max()) < NUM_CLASSES


def test_training_sliding_windows_is_deterministic_and_lowers_the_loss():
    data = ShapesDataset(6, seed=0)
    recipe = dataclasses.replace(sliding_window_recipe("smoke"), epochs=3, score_thresh=0.3)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        history: list[float] = []
        detector = train_sliding_windows(data, recipe, seed=1, history=history)
        runs.append((detector, history))
    (first, history), (second, _) = runs
    assert not first.training and len(history) == 3 and history[-1] < history[0]
    images = _images(2, seed=9)
    for a, b in zip(predict(first, images), predict(second, images), strict=True):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(a[key], b[key])


# ----------------------------------------------------------------------------------- R-CNN


@pytest.fixture(scope="module")
def proposals():
    """One selective-search cache for every R-CNN test (the search is the slow part)."""
    return ProposalCache(_selective_search, max_proposals=2000)


@pytest.fixture(scope="module")
def small_rcnn(proposals):
    torch.manual_seed(0)
    recipe = dataclasses.replace(rcnn_recipe("smoke"), finetune_steps=5)
    history: list[float] = []
    detector = train_rcnn(ShapesDataset(3, seed=0), recipe, proposals=proposals, seed=0, history=history)
    return detector, recipe, history


def test_rcnn_detections_are_rcnn_detect_on_selective_search(small_rcnn, proposals):
    detector, _, history = small_rcnn
    assert isinstance(detector, RCNNDetector) and len(history) == 5 and not detector.training
    images = _images(2, seed=7)
    outs = predict(detector, images)
    for image, out in zip(images, outs, strict=True):
        expected = rcnn_detect(detector.rcnn, image, _selective_search(image)[:2000])
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(out[key], expected[key])
    assert sum(len(out["boxes"]) for out in outs) > 0
    # the net, K SVMs [K, D] + [K] and K regressors [K, P, 4] + [K, 4] are counted
    k, d = detector.svm_weight.shape
    pool5 = detector.regressor_weight.shape[1]
    extra = k * d + k + k * pool5 * 4 + k * 4
    assert sum(p.numel() for p in detector.parameters()) == sum(p.numel() for p in detector.net.parameters()) + extra
    assert not any(p.requires_grad for p in (detector.svm_weight, detector.regressor_weight))


def test_training_rcnn_is_deterministic(small_rcnn, proposals):
    detector, recipe, _ = small_rcnn
    torch.manual_seed(0)
    again = train_rcnn(ShapesDataset(3, seed=0), recipe, proposals=proposals, seed=0)
    images = _images(1, seed=7)
    for a, b in zip(predict(detector, images), predict(again, images), strict=True):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(a[key], b[key])


# ------------------------------------------------------------------------------- bad input


def test_bad_input_is_refused_with_a_clear_message(small_rcnn):
    data = ShapesDataset(2, seed=0)
    with pytest.raises(ValueError, match="name must be one of sliding_windows, rcnn"):
        train_classic("hog", "smoke", data)
    with pytest.raises(ValueError, match="profile must be one of"):
        classic_num_train("rcnn", "laptop")
    with pytest.raises(ValueError, match="train_set is empty"):
        train_sliding_windows(ShapesDataset(0, seed=0), sliding_window_recipe("smoke"))
    with pytest.raises(ValueError, match="train_set must be a map-style dataset"):
        train_rcnn([data[0]], rcnn_recipe("smoke"))
    with pytest.raises(ValueError, match="recipe must be a SlidingWindowRecipe"):
        train_sliding_windows(data, rcnn_recipe("smoke"))
    with pytest.raises(ValueError, match="recipe must be an RCNNRecipe"):
        train_rcnn(data, sliding_window_recipe("smoke"))
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        train_sliding_windows(data, sliding_window_recipe("smoke"), seed=-1)
    with pytest.raises(ValueError, match="window must be a positive multiple of 4"):
        window_classifier(5, window=10)
    with pytest.raises(ValueError, match="detector must be one of"):
        capstone.measure_detector("hog", "smoke")
    with pytest.raises(ValueError, match=r"images must be \[B, 3, H, W\]"):
        _untrained_windows().detect(torch.rand(3, 64, 64))
    detector = small_rcnn[0]
    with pytest.raises(NotImplementedError, match="train it with .*train_rcnn"):
        fit(detector, data, epochs=1, batch_size=2, lr=1e-3, progress=False)


# ---------------------------------------------------------------------------------- capstone


def test_capstone_rows_of_the_classic_detectors(monkeypatch):
    monkeypatch.setattr(capstone, "TIMING_IMAGES", 8)
    monkeypatch.setattr(capstone, "classic_num_train", lambda name, profile: 4)
    data = CapstoneData(num_val=4)
    assert capstone.capstone_detectors()[-2:] == list(CLASSIC_DETECTORS)
    for name, epochs in (("sliding_windows", 5), ("rcnn", 30)):  # the smoke recipes'
        row = capstone.measure_detector(name, "smoke", data=data)
        assert set(row) == {*ROW_KEYS, *LATER_ROW_KEYS} and row["detector"] == name
        assert row["final_iou"]["objects"] > 0
        assert list(row["delta_ap"]) == list(ERROR_TYPES)
        for key in ("map", "map_50", "map_75"):
            assert 0.0 <= row[key] <= 1.0
        assert row["train_images"] == 4 and row["epochs"] == epochs
        assert row["parameters"] > 10_000
        assert row["train_seconds"] > 0 and row["inference_images_per_second"] > 0


def test_evaluate_takes_the_wrapper_like_any_detector():
    metrics = evaluate(_untrained_windows(), ShapesDataset(2, seed=5))
    assert 0.0 <= metrics["map_50"] <= 1.0 and "map_small" in metrics
