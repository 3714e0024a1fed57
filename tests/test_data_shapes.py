"""Tests for coursepkg.data.shapes (and the synthetic machinery it runs on)."""

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from coursepkg.data import (
    DEFAULT_SHAPE_CLASSES,
    SHAPE_CLASSES,
    ShapesDataset,
    check_target,
    collate_detection,
    shape_mask,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Render with one intra-op thread, as DataLoader workers do.

    Items are chains of small tensor operations; on a busy machine, handing each one to a second
    thread costs far more than it saves (10x slower on an oversubscribed 2-core box).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _slow_tight_box(mask: np.ndarray) -> list[float]:
    """Reference: the continuous box of a mask from the indices of its pixels."""
    rows, cols = np.nonzero(mask)
    return [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


# --- shape_mask -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "aspect", "area"),
    [
        ("circle", 1.0, math.pi),
        ("square", 1.0, 2.0),  # side sqrt(2)
        ("triangle", 1.0, 3 * math.sqrt(3) / 4),  # equilateral, circumradius 1
        # five kites, each two triangles (centre, tip, inner corner): 5 * r_in * sin(36 deg)
        ("star", 1.0, 5 * 0.45 * math.sin(math.pi / 5)),
        ("rectangle", 2.0, 4 * (1 / math.hypot(1, 0.5)) ** 2 / 2),
        ("ellipse", 2.0, math.pi / 2),
        # two arms 2L x 2tL minus the shared centre square (2tL)^2, L = 1 / hypot(1, t), t = 0.3
        ("cross", 1.0, (2 * 2 * 0.6 - 0.6**2) / (1 + 0.09)),
    ],
)
def test_shape_mask_areas_and_unit_disc(name, aspect, area):
    n = 1201
    coords = torch.linspace(-1.1, 1.1, n, dtype=torch.float64)
    v, u = torch.meshgrid(coords, coords, indexing="ij")
    inside = shape_mask(name, u, v, aspect=aspect)
    cell = (2.2 / (n - 1)) ** 2
    assert float(inside.sum()) * cell == pytest.approx(area, rel=0.01)
    # Every shape fits its circumscribed unit circle.
    assert not bool((inside & (u * u + v * v > 1.0 + 1e-9)).any())


def test_shape_mask_errors():
    u = torch.zeros(3)
    with pytest.raises(ValueError, match="name must be one of"):
        shape_mask("hexagon", u, u)
    with pytest.raises(ValueError, match="aspect must be >= 1"):
        shape_mask("rectangle", u, u, aspect=0.5)


# --- ShapesDataset --------------------------------------------------------------------------


def test_item_format_and_validity():
    data = ShapesDataset(12, image_size=(96, 128), seed=1)
    assert len(data) == 12 and data.classes == DEFAULT_SHAPE_CLASSES and data.num_classes == 5
    for i in range(len(data)):
        image, target = data[i]
        assert image.shape == (3, 96, 128) and image.dtype == torch.float32
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
        assert target["image_id"] == i
        assert 1 <= len(target["labels"]) <= 6
        check_target(target, (96, 128), num_classes=data.num_classes)  # inside, labels in range


def test_same_seed_and_index_give_the_same_item_in_any_order():
    a = ShapesDataset(10, seed=5)
    b = ShapesDataset(10, seed=5)
    forward = {i: a[i] for i in range(10)}
    for i in reversed(range(10)):
        image, target = b[i]
        torch.testing.assert_close(image, forward[i][0], rtol=0, atol=0)
        torch.testing.assert_close(target["boxes"], forward[i][1]["boxes"], rtol=0, atol=0)
        torch.testing.assert_close(target["labels"], forward[i][1]["labels"], rtol=0, atol=0)
    # Negative indices are Python's; a different seed gives different images.
    torch.testing.assert_close(a[-1][0], forward[9][0], rtol=0, atol=0)
    assert not torch.equal(ShapesDataset(10, seed=6)[0][0], forward[0][0])
    # A larger dataset with the same seed starts with the same items.
    torch.testing.assert_close(ShapesDataset(1000, seed=5)[3][0], forward[3][0], rtol=0, atol=0)


def test_data_do_not_depend_on_workers_or_shuffling():
    data = ShapesDataset(8, image_size=(64, 64), seed=2)

    def by_id(loader):
        out = {}
        for images, targets in loader:
            for image, target in zip(images, targets, strict=True):
                out[target["image_id"]] = (image, target["boxes"])
        return out

    plain = by_id(DataLoader(data, batch_size=3, collate_fn=collate_detection))
    shuffled = by_id(
        DataLoader(
            data,
            batch_size=2,
            shuffle=True,
            num_workers=2,
            collate_fn=collate_detection,
            generator=torch.Generator().manual_seed(0),
        )
    )
    assert sorted(plain) == sorted(shuffled) == list(range(8))
    for i in plain:
        torch.testing.assert_close(plain[i][0], shuffled[i][0], rtol=0, atol=0)
        torch.testing.assert_close(plain[i][1], shuffled[i][1], rtol=0, atol=0)


def test_boxes_are_the_tight_boxes_of_the_visible_masks():
    data = ShapesDataset(15, seed=3, max_occlusion=0.5)
    for i in range(len(data)):
        sample = data.render(i)
        assert sample.masks.shape == (len(sample.labels), 128, 128)
        for box, mask in zip(sample.boxes.tolist(), sample.masks.numpy(), strict=True):
            assert box == _slow_tight_box(mask)
        # Visible masks never overlap: each pixel shows at most one object.
        assert int(sample.masks.sum(dim=0).amax()) <= 1
        torch.testing.assert_close(sample.boxes, data[i][1]["boxes"], rtol=0, atol=0)


def test_masks_are_what_the_image_shows_without_clutter():
    """With a flat background and no noise, a visible mask is exactly one flat colour."""
    data = ShapesDataset(10, seed=4, clutter=False, max_objects=8)
    for i in range(len(data)):
        sample = data.render(i)
        image = sample.image.reshape(3, -1)  # [3, H*W]
        background = ~sample.masks.any(dim=0).reshape(-1)
        assert bool(background.any())
        assert image[:, background].unique(dim=1).shape[1] == 1
        for mask in sample.masks.reshape(len(sample.labels), -1):
            colours = image[:, mask].unique(dim=1)
            assert colours.shape[1] == 1
            assert not torch.equal(colours, image[:, background][:, :1])


def test_occlusion_cap():
    for cap in (0.0, 0.3):
        data = ShapesDataset(15, seed=7, max_occlusion=cap, max_objects=8, min_size=16)
        fractions = torch.cat([data.render(i).visible_fraction for i in range(len(data))])
        assert bool((fractions >= 1 - cap - 1e-6).all())
        assert bool((fractions <= 1).all())
        if cap == 0.0:
            torch.testing.assert_close(fractions, torch.ones_like(fractions))
        else:
            assert bool((fractions < 1).any())  # some overlap does happen


def test_sizes_cover_small_and_large_and_all_classes_appear():
    data = ShapesDataset(80, seed=8, min_size=8, max_size=64)
    targets = [data[i][1] for i in range(len(data))]
    boxes = torch.cat([t["boxes"] for t in targets])
    labels = torch.cat([t["labels"] for t in targets])
    longest = (boxes[:, 2:] - boxes[:, :2]).max(dim=1).values
    assert float(longest.max()) <= 64 + 1  # a disc of diameter s covers at most s + 1 pixels
    assert int((longest <= 12).sum()) >= 0.1 * len(longest)  # plenty of small objects
    assert int((longest >= 40).sum()) >= 0.1 * len(longest)  # and of large ones
    counts = torch.bincount(labels, minlength=5)
    assert bool((counts >= 0.1 * len(labels)).all())


def test_custom_classes_and_empty_images():
    data = ShapesDataset(6, classes=("star", "ellipse"), min_objects=0, max_objects=1, seed=0)
    assert data.classes == ("star", "ellipse")
    sizes = []
    for i in range(len(data)):
        _, target = data[i]
        sizes.append(len(target["labels"]))
        assert target["boxes"].shape == (sizes[-1], 4)
        assert set(target["labels"].tolist()) <= {0, 1}
    assert 0 in sizes and 1 in sizes
    assert set(SHAPE_CLASSES) >= set(DEFAULT_SHAPE_CLASSES)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_images": -1}, ValueError, "num_images"),
        ({"num_images": 2.5}, TypeError, "num_images"),
        ({"image_size": (0, 64)}, ValueError, "image_size"),
        ({"image_size": (64,)}, TypeError, "image_size"),
        ({"image_size": (64.0, 64.0)}, TypeError, "image_size"),
        ({"min_size": 40, "max_size": 20}, ValueError, "min_size"),
        ({"max_size": 200}, ValueError, "max_size"),
        ({"min_size": 0}, ValueError, "min_size"),
        ({"min_size": float("nan")}, ValueError, "min_size"),
        ({"min_objects": 5, "max_objects": 2}, ValueError, "min_objects"),
        ({"max_objects": 0}, ValueError, "max_objects"),
        ({"classes": ("circle", "blob")}, ValueError, "classes.*blob"),
        ({"classes": ("circle", "circle")}, ValueError, "classes"),
        ({"classes": ()}, ValueError, "classes"),
        ({"classes": "circle"}, TypeError, "classes"),
        ({"max_occlusion": 1.0}, ValueError, "max_occlusion"),
        ({"seed": "0"}, TypeError, "seed"),
    ],
)
def test_bad_parameters(kwargs, error, match):
    params = {"num_images": 4, **kwargs}
    with pytest.raises(error, match=match):
        ShapesDataset(**params)


def test_bad_index():
    data = ShapesDataset(3)
    with pytest.raises(IndexError):
        data[3]
    with pytest.raises(IndexError):
        data[-4]
    with pytest.raises(TypeError, match="index"):
        data[1.0]
    assert len(ShapesDataset(0)) == 0
