"""Tests for coursepkg.data.digits."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from coursepkg.data import (
    DIGIT_CLASSES,
    DigitsDetectionDataset,
    check_target,
    digit_split_indices,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Render with one intra-op thread, as DataLoader workers do (see test_data_shapes)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_splits_are_disjoint_and_cover_all_digits():
    train, test = digit_split_indices("train"), digit_split_indices("test")
    assert (len(train), len(test)) == (1437, 360)
    assert set(train.tolist()).isdisjoint(test.tolist())
    assert sorted(train.tolist() + test.tolist()) == list(range(1797))
    torch.testing.assert_close(digit_split_indices("train"), train)  # fixed, not random
    # Every class is in both splits.
    target = torch.as_tensor(load_digits().target)
    assert set(target[train].tolist()) == set(target[test].tolist()) == set(range(10))


def test_each_split_draws_only_its_own_digit_images():
    digits = load_digits()
    for split in ("train", "test"):
        data = DigitsDetectionDataset(1, split=split)
        indices = digit_split_indices(split).numpy()
        for label in range(10):
            expected = digits.images[indices[digits.target[indices] == label]] / 16.0
            np.testing.assert_allclose(data._by_class[label].numpy(), expected, rtol=0, atol=1e-7)


def test_item_format_labels_and_tight_boxes():
    data = DigitsDetectionDataset(10, image_size=(100, 120), seed=3)
    assert data.classes == DIGIT_CLASSES == tuple("0123456789")
    labels = []
    for i in range(len(data)):
        image, target = data[i]
        assert image.shape == (3, 100, 120) and image.dtype == torch.float32
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        check_target(target, (100, 120), num_classes=10)
        sample = data.render(i)
        for box, mask in zip(sample.boxes.tolist(), sample.masks.numpy(), strict=True):
            rows, cols = np.nonzero(mask)
            assert box == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        assert bool((sample.visible_fraction >= 1 - data.max_occlusion - 1e-6).all())
        labels += target["labels"].tolist()
    assert len(set(labels)) >= 6


def test_determinism_and_split_changes_the_digits():
    a, b = DigitsDetectionDataset(4, seed=9), DigitsDetectionDataset(4, seed=9)
    for i in (3, 0, 2):
        torch.testing.assert_close(a[i][0], b[i][0], rtol=0, atol=0)
        torch.testing.assert_close(a[i][1]["boxes"], b[i][1]["boxes"], rtol=0, atol=0)
    test_split = DigitsDetectionDataset(4, seed=9, split="test")
    assert not torch.equal(a[0][0], test_split[0][0])


def test_digit_sizes_follow_min_and_max_size():
    data = DigitsDetectionDataset(30, seed=1, min_size=16, max_size=48, clutter=False)
    heights = torch.cat([(t["boxes"][:, 3] - t["boxes"][:, 1]) for _, t in data])
    # The ink is at most the digit's height and, with 8 x 8 margins, rarely less than half of it.
    assert float(heights.max()) <= 48
    assert float(heights.min()) >= 0.4 * 16
    assert float(heights.max()) >= 30 and float(heights.min()) <= 20


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"split": "val"}, ValueError, "split"),
        ({"num_images": -3}, ValueError, "num_images"),
        ({"image_size": (32, -1)}, ValueError, "image_size"),
        ({"min_size": 50, "max_size": 30}, ValueError, "min_size"),
        ({"max_size": 129}, ValueError, "max_size"),
    ],
)
def test_bad_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        DigitsDetectionDataset(**{"num_images": 2, **kwargs})
    if "split" in kwargs:
        with pytest.raises(ValueError, match="split"):
            digit_split_indices(kwargs["split"])
