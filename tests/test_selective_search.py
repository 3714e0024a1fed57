"""Tests for coursepkg.models.selective_search: recall on synthetic shapes, grouping, ranking, validity."""

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from coursepkg.data import ShapesDataset
from coursepkg.models.selective_search import (
    MODES,
    SIMILARITIES,
    Strategy,
    group_regions,
    initial_regions,
    selective_search,
)
from coursepkg.ops.boxes import box_iou


@pytest.fixture(scope="module")
def shapes():
    data = ShapesDataset(6, image_size=(128, 128), seed=3)
    return [data[i] for i in range(len(data))]


def test_recall_on_shapes(shapes):
    """Every shape is covered by a proposal with IoU >= 0.5 (nearly all with >= 0.7)."""
    best = []
    for image, target in shapes:
        result = selective_search(image, min_size=20, generator=torch.Generator().manual_seed(0))
        best.append(box_iou(target["boxes"], result.boxes).max(dim=1).values)
    best = torch.cat(best)
    assert len(best) >= 15
    assert (best >= 0.5).float().mean() >= 0.95
    assert (best >= 0.7).float().mean() >= 0.85


def test_diversification_helps_recall(shapes):
    """More strategies find at least as many objects (the paper's argument for diversification)."""
    found = {}
    for mode in ("single", "fast"):
        hits = []
        for image, target in shapes[:4]:
            boxes = selective_search(
                image, mode=mode, generator=torch.Generator().manual_seed(0)
            ).boxes
            hits.append(box_iou(target["boxes"], boxes).max(dim=1).values >= 0.5)
        found[mode] = int(torch.cat(hits).sum())
    assert found["fast"] > found["single"]


def test_boxes_are_valid_unique_and_ranked(shapes):
    image, _ = shapes[0]
    result = selective_search(image, generator=torch.Generator().manual_seed(1))
    boxes = result.boxes
    assert boxes.dtype == torch.float32 and boxes.shape[1] == 4 and len(boxes) > 20
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert (boxes >= 0).all() and (boxes[:, 0::2] <= 128).all() and (boxes[:, 1::2] <= 128).all()
    assert_close(boxes, boxes.round())  # region boxes cover whole pixels
    assert torch.unique(boxes, dim=0).shape[0] == boxes.shape[0]
    assert (result.priority[1:] >= result.priority[:-1]).all()
    assert result.strategy.max() < len(MODES["light"])
    assert (boxes == torch.tensor([0.0, 0.0, 128.0, 128.0])).all(dim=1).any()  # the whole image


def test_ranking_is_reproducible_and_only_orders(shapes):
    image, _ = shapes[1]
    a = selective_search(image, generator=torch.Generator().manual_seed(5))
    b = selective_search(image, generator=torch.Generator().manual_seed(5))
    c = selective_search(image, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.priority, b.priority)
    assert not torch.equal(a.boxes, c.boxes)
    as_set = lambda boxes: {tuple(row) for row in boxes.tolist()}  # noqa: E731
    assert as_set(a.boxes) == as_set(c.boxes)


def test_hierarchy_has_two_n_minus_one_regions(shapes):
    image, _ = shapes[2]
    rgb = image.permute(1, 2, 0).double().numpy()
    from skimage.color import rgb2hsv
    from skimage.segmentation import felzenszwalb

    hsv = rgb2hsv(rgb)
    labels = felzenszwalb(hsv, scale=50, sigma=0.8, min_size=20)
    regions = initial_regions(labels, hsv)
    n = regions.size.shape[0]
    hierarchy = group_regions(regions)
    assert hierarchy.num_initial == n
    assert hierarchy.boxes.shape == (2 * n - 1, 4)
    assert hierarchy.merges.shape == (n - 1, 2)
    # Every region except the last is merged exactly once, and only after it exists.
    merged = hierarchy.merges.ravel()
    assert sorted(merged.tolist()) == list(range(2 * n - 2))
    assert (hierarchy.merges < np.arange(n, 2 * n - 1)[:, None]).all()
    # A merged region's box is the union of its parts'.
    for step, (i, j) in enumerate(hierarchy.merges[:50]):
        union = np.concatenate(
            [
                np.minimum(hierarchy.boxes[i, :2], hierarchy.boxes[j, :2]),
                np.maximum(hierarchy.boxes[i, 2:], hierarchy.boxes[j, 2:]),
            ]
        )
        np.testing.assert_array_equal(hierarchy.boxes[n + step], union)
    assert regions.size.sum() == 128 * 128
    np.testing.assert_allclose(regions.color.sum(axis=1), 1.0)
    np.testing.assert_allclose(regions.texture.sum(axis=1), 1.0)


def test_histograms_and_first_merge_by_hand():
    """Three vertical stripes: left and right are the same colour, the middle differs.

    Left and middle, and middle and right, are the only neighbours; with colour only, both pairs
    score the same, and the tie goes to the smaller ids (0, 1)."""
    image = np.zeros((6, 9, 3))
    image[:, 0:3] = (0.9, 0.1, 0.1)
    image[:, 3:6] = (0.1, 0.1, 0.9)
    image[:, 6:9] = (0.9, 0.1, 0.1)
    labels = np.repeat(np.array([[0, 0, 0, 1, 1, 1, 2, 2, 2]]), 6, axis=0)
    regions = initial_regions(labels, image)
    assert regions.size.tolist() == [18.0, 18.0, 18.0]
    np.testing.assert_array_equal(regions.box, [[0, 0, 3, 6], [3, 0, 6, 6], [6, 0, 9, 6]])
    # Colour histograms: one bin per channel, each worth 1/3 after L1 normalisation.
    red = regions.color[0]
    assert np.count_nonzero(red) == 3 and np.allclose(red[red > 0], 1 / 3)
    assert red[int(0.9 * 25)] == pytest.approx(1 / 3)
    assert regions.pairs.tolist() == [[0, 1], [1, 2]]
    hierarchy = group_regions(regions, ("color",))
    assert hierarchy.merges.tolist() == [[0, 1], [2, 3]]
    # Fill prefers the pair whose union box is filled; size the smaller pair: same here.
    np.testing.assert_array_equal(hierarchy.boxes[3], [0, 0, 6, 6])
    np.testing.assert_array_equal(hierarchy.boxes[4], [0, 0, 9, 6])


def test_size_similarity_merges_small_regions_first():
    """Regions: a big one (0) between two small ones; with size only, small pairs go first."""
    labels = np.array([[1, 0, 0, 0, 0, 0, 0, 2, 3]] * 4)
    image = np.zeros((4, 9, 3))
    hierarchy = group_regions(initial_regions(labels, image), ("size",))
    assert hierarchy.merges[0].tolist() == [2, 3]


def test_rectangle_on_a_background_is_proposed_exactly():
    image = np.full((64, 80, 3), 0.2)
    image[10:30, 20:55] = (0.9, 0.8, 0.1)
    result = selective_search(
        image, mode="single", min_size=10, generator=torch.Generator().manual_seed(0)
    )
    assert (result.boxes == torch.tensor([20.0, 10.0, 55.0, 30.0])).all(dim=1).any()


def test_uniform_image_gives_the_whole_image():
    result = selective_search(torch.full((3, 20, 30), 0.5), mode="single")
    assert result.boxes.tolist() == [[0.0, 0.0, 30.0, 20.0]]


def test_tensor_numpy_and_uint8_inputs_agree(shapes):
    image, _ = shapes[4]
    as_uint8 = (image * 255).round().to(torch.uint8)
    from_tensor = selective_search(
        as_uint8, mode="single", generator=torch.Generator().manual_seed(0)
    )
    from_numpy = selective_search(
        as_uint8.permute(1, 2, 0).numpy(), mode="single", generator=torch.Generator().manual_seed(0)
    )
    from_float = selective_search(
        as_uint8.float() / 255, mode="single", generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(from_tensor.boxes, from_numpy.boxes)
    assert torch.equal(from_tensor.boxes, from_float.boxes)


def test_custom_strategies():
    image = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(0))
    strategies = [Strategy("rgb", 200.0, ("fill",)), Strategy("lab", 200.0, SIMILARITIES)]
    result = selective_search(
        image, strategies=strategies, generator=torch.Generator().manual_seed(0)
    )
    assert set(result.strategy.tolist()) <= {0, 1} and len(result.boxes) > 1


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: selective_search(torch.rand(4, 8, 8)), ValueError, r"image must be \[3, H, W\]"),
        (lambda: selective_search(np.zeros((8, 8))), ValueError, r"image must be \[H, W, 3\]"),
        (lambda: selective_search(torch.rand(3, 8, 8) * 2), ValueError, r"must lie in \[0, 1\]"),
        (lambda: selective_search(torch.full((3, 8, 8), float("nan"))), ValueError, "NaN"),
        (
            lambda: selective_search(torch.zeros(3, 8, 8, dtype=torch.int32)),
            TypeError,
            "uint8 or floating",
        ),
        (lambda: selective_search(torch.rand(3, 1, 8)), ValueError, "at least 2 x 2"),
        (lambda: selective_search([[0.0]]), TypeError, "image must be a torch.Tensor"),
        (
            lambda: selective_search(torch.rand(3, 8, 8), mode="quality"),
            ValueError,
            "mode must be one of",
        ),
        (
            lambda: selective_search(torch.rand(3, 8, 8), strategies=[]),
            ValueError,
            "non-empty sequence",
        ),
        (lambda: Strategy("xyz"), ValueError, "color_space must be one of"),
        (lambda: Strategy("hsv", -1.0), ValueError, "k must be a positive"),
        (lambda: Strategy("hsv", 100.0, ("colour",)), ValueError, "similarities must be"),
        (
            lambda: initial_regions(np.zeros((3, 3), dtype=int), np.zeros((4, 4, 3))),
            ValueError,
            "labels must be",
        ),
    ],
)
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
