"""Tests for coursepkg.data.targets: the item format, its validator, batching."""

import pytest
import torch
from torch.utils.data import DataLoader

from coursepkg.data import (
    ShapesDataset,
    check_target,
    collate_detection,
)


def _target(boxes, labels):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


# --- check_target ---------------------------------------------------------------------------


def test_check_target_accepts_valid_targets_including_edges():
    check_target(_target([[0, 0, 64, 48], [10, 5, 10, 5]], [0, 2]), (48, 64), num_classes=3)
    check_target(_target([], []), (10, 10))  # an image without objects
    check_target({**_target([[1, 2, 3, 4]], [7]), "image_id": 3, "difficult": None}, (8, 8))


@pytest.mark.parametrize(
    ("target", "image_size", "num_classes", "error", "match"),
    [
        ("not a dict", (8, 8), None, TypeError, "target must be a dict, got str"),
        (
            {"boxes": torch.zeros(0, 4)},
            (8, 8),
            None,
            ValueError,
            r"target is missing key\(s\) \['labels'\]",
        ),
        (_target([[0, 0, 9, 4]], [0]), (8, 8), None, ValueError, r"box 0 is \[0.0, 0.0, 9.0"),
        (
            _target([[0, 0, 4, 4], [-0.5, 0, 4, 4]], [0, 0]),
            (8, 8),
            None,
            ValueError,
            "inside the image.*box 1",
        ),
        (_target([[0, 0, 4, 9]], [0]), (8, 16), None, ValueError, "box 0"),
        (_target([[4, 0, 2, 4]], [0]), (8, 8), None, ValueError, "row 0"),
        (
            _target([[0, 0, 4, 4]], [3]),
            (8, 8),
            3,
            ValueError,
            r"in 0..2 \(dataset labels 0..K-1\), label 0 is 3",
        ),
        (_target([[0, 0, 4, 4]], [-1]), (8, 8), None, ValueError, ">= 0"),
        (
            {"boxes": torch.zeros(2, 4), "labels": torch.zeros(3, dtype=torch.int64)},
            (8, 8),
            None,
            ValueError,
            r"target\['labels'\] must be \[2\] \(one label per box\), got \[3\]",
        ),
        (
            {"boxes": torch.zeros(1, 4), "labels": torch.zeros(1)},
            (8, 8),
            None,
            TypeError,
            "int64",
        ),
        (
            {"boxes": torch.zeros(1, 4, dtype=torch.int64), "labels": torch.zeros(1).long()},
            (8, 8),
            None,
            TypeError,
            "floating-point",
        ),
        (
            {"boxes": torch.zeros(1, 3), "labels": torch.zeros(1).long()},
            (8, 8),
            None,
            ValueError,
            r"\[N, 4\]",
        ),
        (_target([[0, 0, 4, 4]], [0]), (0, 8), None, ValueError, "image_size"),
    ],
)
def test_check_target_errors(target, image_size, num_classes, error, match):
    with pytest.raises(error, match=match):
        check_target(target, image_size, num_classes)


def test_check_target_rejects_nan_boxes():
    target = _target([[0, 0, 4, 4]], [0])
    target["boxes"][0, 2] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        check_target(target, (8, 8))


# --- collate_detection ----------------------------------------------------------------------


def test_collate_stacks_images_and_keeps_targets_in_order():
    batch = [(torch.full((3, 4, 5), float(i)), {"labels": torch.tensor([i])}) for i in range(3)]
    images, targets = collate_detection(batch)
    assert images.shape == (3, 3, 4, 5)
    for i in range(3):
        torch.testing.assert_close(images[i], batch[i][0])
        assert targets[i] is batch[i][1]


def test_collate_in_a_dataloader():
    loader = DataLoader(ShapesDataset(5, image_size=(32, 48), max_size=16), batch_size=2,
                        collate_fn=collate_detection)  # fmt: skip
    sizes = [(images.shape, len(targets)) for images, targets in loader]
    assert sizes == [((2, 3, 32, 48), 2), ((2, 3, 32, 48), 2), ((1, 3, 32, 48), 1)]


def test_collate_errors():
    with pytest.raises(ValueError, match="empty batch"):
        collate_detection([])
    with pytest.raises(ValueError, match=r"one size.*\(3, 4, 5\).*\(3, 6, 5\)"):
        collate_detection([(torch.zeros(3, 4, 5), {}), (torch.zeros(3, 6, 5), {})])
    with pytest.raises(TypeError, match=r"batch\[1\] must be an \(image, target\) pair"):
        collate_detection([(torch.zeros(3, 4, 5), {}), torch.zeros(3, 4, 5)])
    with pytest.raises(TypeError, match=r"batch\[0\] image must be a torch.Tensor"):
        collate_detection([([0.0], {})])
