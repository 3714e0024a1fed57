"""Tests for coursepkg.models.anchors: the notes' counts and torchvision's AnchorGenerator."""

import math

import pytest
import torch
from torch.testing import assert_close
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

from coursepkg.models.anchors import anchors_inside, generate_anchors


def torchvision_anchors(image_size, feature_size):
    generator = AnchorGenerator(sizes=((128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),))
    images = ImageList(torch.zeros(1, 3, *image_size), [tuple(image_size)])
    return generator(images, [torch.zeros(1, 8, *feature_size)])[0]


def test_notes_800x800_counts():
    """The notes: 50 * 50 * 9 = 22,500 anchors, 8,940 fully inside, with centres at 16 j + 8."""
    anchors = generate_anchors((50, 50), 16)
    assert anchors.shape == (22_500, 4)
    assert int(anchors_inside(anchors, (800, 800)).sum()) == 8_940


@pytest.mark.parametrize("round_base_anchors", [False, True])
def test_corner_centres_count_9321(round_base_anchors):
    """torchvision's convention (centres at 16 j) keeps 9,321; rounding does not change it."""
    anchors = generate_anchors((50, 50), 16, offset=0.0, round_base_anchors=round_base_anchors)
    assert int(anchors_inside(anchors, (800, 800)).sum()) == 9_321
    assert int(anchors_inside(torchvision_anchors((800, 800), (50, 50)), (800, 800)).sum()) == 9_321


@pytest.mark.parametrize(
    "image_size, feature_size",
    [((800, 800), (50, 50)), ((480, 640), (30, 40)), ((64, 96), (4, 6)), ((50, 70), (1, 1))],
)
def test_equals_torchvision_anchor_generator(image_size, feature_size):
    stride = (image_size[0] // feature_size[0], image_size[1] // feature_size[1])
    ours = generate_anchors(feature_size, stride, offset=0.0, round_base_anchors=True)
    # Same ordering (location-major, then ratio, then scale): equal element for element.
    assert_close(ours, torchvision_anchors(image_size, feature_size), rtol=0, atol=0)


def test_without_rounding_differs_from_torchvision_by_at_most_half_a_pixel():
    ours = generate_anchors((50, 50), 16, offset=0.0)
    theirs = torchvision_anchors((800, 800), (50, 50))
    diff = (ours - theirs).abs()
    assert 0 < diff.max() <= 0.5


def test_first_location_by_hand():
    anchors = generate_anchors((2, 3), 16)
    r2 = math.sqrt(2)
    # Location (0, 0), centre (8, 8). Ratio 0.5 (h / w), scale 8: h = 128 / sqrt 2, w = 128 sqrt 2.
    h, w = 128 / r2, 128 * r2
    assert_close(anchors[0], torch.tensor([8 - w / 2, 8 - h / 2, 8 + w / 2, 8 + h / 2]))
    # Ratio 1, scale 16 is the 5th anchor of the location: 256 x 256.
    assert_close(anchors[4], torch.tensor([8 - 128.0, 8 - 128.0, 8 + 128.0, 8 + 128.0]))
    # Location (0, 1) starts at index 9, centre (24, 8); location (1, 0) at index 27, centre (8, 24).
    assert_close((anchors[9, 0] + anchors[9, 2]) / 2, torch.tensor(24.0))
    assert_close((anchors[27, 1] + anchors[27, 3]) / 2, torch.tensor(24.0))


def test_areas_and_ratios():
    anchors = generate_anchors(
        (3, 4), (8, 12), scales=(2, 4), ratios=(0.25, 1, 3), base_size=10, dtype=torch.float64
    )
    assert anchors.shape == (3 * 4 * 6, 4)
    w = anchors[:, 2] - anchors[:, 0]
    h = anchors[:, 3] - anchors[:, 1]
    sizes = torch.tensor([20.0, 40.0, 20.0, 40.0, 20.0, 40.0], dtype=torch.float64).repeat(12)
    ratios = torch.tensor([0.25, 0.25, 1.0, 1.0, 3.0, 3.0], dtype=torch.float64).repeat(12)
    assert_close(w * h, sizes**2)
    assert_close(h / w, ratios)
    centres_x = (anchors[:, 0] + anchors[:, 2]) / 2
    assert_close(
        centres_x.reshape(3, 4, 6)[0, :, 0],
        torch.tensor([6.0, 18.0, 30.0, 42.0], dtype=torch.float64),
    )


def test_empty_feature_map_and_dtype():
    assert generate_anchors((0, 5), 16).shape == (0, 4)
    assert generate_anchors((2, 2), 16, dtype=torch.float64).dtype == torch.float64


def test_anchors_inside_boundaries():
    anchors = torch.tensor(
        [
            [0.0, 0.0, 100.0, 50.0],  # touches right and bottom edges: inside
            [-0.01, 0.0, 10.0, 10.0],
            [0.0, 0.0, 100.01, 10.0],
            [0.0, 0.0, 10.0, 50.01],
            [0.0, -1.0, 10.0, 10.0],
            [40.0, 20.0, 40.0, 20.0],  # zero area, inside
        ]
    )
    assert anchors_inside(anchors, (50, 100)).tolist() == [True, False, False, False, False, True]
    assert anchors_inside(torch.zeros(0, 4), (50, 100)).shape == (0,)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: generate_anchors((50,), 16), "feature_size must be"),
        (lambda: generate_anchors((5, 2.5), 16), "feature_size must be"),
        (lambda: generate_anchors((5, 5), 0), "stride must be"),
        (lambda: generate_anchors((5, 5), (16, 16, 16)), "stride must be"),
        (lambda: generate_anchors((5, 5), 16, scales=()), "scales must be"),
        (lambda: generate_anchors((5, 5), 16, ratios=(1, -2)), r"ratios\[1\] must be a finite number > 0, got -2"),
        (lambda: generate_anchors((5, 5), 16, base_size=0), "base_size must be"),
        (lambda: generate_anchors((5, 5), 16, offset=math.nan), "offset must be a finite number, got nan"),
        (lambda: generate_anchors((5, 5), 16, dtype=torch.int64), "dtype must be a floating"),
        (
            lambda: anchors_inside(torch.zeros(3, 5), (10, 10)),
            r"anchors must be \[N, 4\], got \[3, 5\]",
        ),
        (lambda: anchors_inside(torch.zeros(3, 4, dtype=torch.int64), (10, 10)), "floating"),
        (lambda: anchors_inside(torch.zeros(3, 4), (10,)), "image_size must be"),
        (lambda: anchors_inside(torch.zeros(3, 4), (0, 10)), "image_size must be positive"),
        (lambda: anchors_inside(torch.tensor([[5.0, 0, 4, 4]]), (10, 10)), "x2 >= x1"),
    ],
)
def test_errors(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# --- Dense detectors: one grid for anchors and points, RetinaNet's anchors on every level ---

from torchvision.models.detection.retinanet import _default_anchorgen  # noqa: E402

from coursepkg.models.anchors import (  # noqa: E402
    location_grid,
    multilevel_anchors,
    multilevel_points,
)

PYRAMID_STRIDES = (8, 16, 32, 64, 128)


def pyramid_sizes(height, width):
    return [(-(-height // s), -(-width // s)) for s in PYRAMID_STRIDES]


def test_location_grid_by_hand_and_order():
    grid = location_grid((2, 3), 8)
    expected = torch.tensor([[4.0, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]])
    assert_close(grid, expected, rtol=0, atol=0)
    corner = location_grid((2, 3), (4, 10), offset=0.0, dtype=torch.float64)
    assert corner.dtype == torch.float64
    assert_close(corner[4], torch.tensor([10.0, 4.0], dtype=torch.float64))


def test_location_grid_is_fcos_mapping():
    """FCOS maps (x, y) to (floor(s / 2) + x s, floor(s / 2) + y s): (23, 30) at stride 8 -> (188, 244)."""
    height, width, stride = 40, 50, 8
    grid = location_grid((height, width), stride)
    x, y = 23, 30
    assert grid[y * width + x].tolist() == [188.0, 244.0]
    for stride in (8, 16, 32, 64, 128):
        grid = location_grid((3, 4), stride).reshape(3, 4, 2)
        j = torch.arange(4, dtype=torch.float32)
        assert_close(grid[1, :, 0], stride // 2 + j * stride, rtol=0, atol=0)


def test_generate_anchors_centres_come_from_the_grid():
    anchors = generate_anchors((5, 7), 16, offset=0.25)
    centres = ((anchors[:, :2] + anchors[:, 2:]) / 2).reshape(35, 9, 2)
    grid = location_grid((5, 7), 16, offset=0.25)
    assert_close(centres, grid[:, None, :].expand(35, 9, 2))


@pytest.mark.parametrize("image_size", [(256, 384), (800, 800), (100, 130), (64, 64), (333, 517)])
def test_multilevel_anchors_equal_torchvision_retinanet(image_size):
    height, width = image_size
    feature_sizes = pyramid_sizes(height, width)
    images = ImageList(torch.zeros(1, 3, height, width), [image_size])
    theirs = _default_anchorgen()(images, [torch.zeros(1, 1, *f) for f in feature_sizes])[0]
    # torchvision's stride per level is image_size // feature_size (61 on P6 of an 800 image).
    strides = [(height // h, width // w) for h, w in feature_sizes]
    ours = multilevel_anchors(
        feature_sizes, strides, offset=0.0, round_base_anchors=True, truncate_sizes=True
    )
    assert [len(a) for a in ours] == [h * w * 9 for h, w in feature_sizes]
    assert_close(torch.cat(ours), theirs, rtol=0, atol=0)


def test_multilevel_anchors_sizes_ratios_and_order():
    anchors = multilevel_anchors([(2, 2), (1, 1)], (8, 16), sizes=(32, 64), dtype=torch.float64)
    level = anchors[1].reshape(1, 9, 4)[0]  # the one location of level 1, centre (8, 8)
    w, h = level[:, 2] - level[:, 0], level[:, 3] - level[:, 1]
    scales = torch.tensor([1, 2 ** (1 / 3), 2 ** (2 / 3)], dtype=torch.float64)
    ratios = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    # Ratio outer, scale inner, as torchvision: anchor r * 3 + s.
    assert_close((w * h).sqrt(), (64 * scales).repeat(3))
    assert_close(h / w, ratios.repeat_interleave(3))
    assert_close((level[:, :2] + level[:, 2:]) / 2, torch.full((9, 2), 8.0, dtype=torch.float64))
    # The largest RetinaNet anchor: 512 * 2^(2/3) = 812.7 pixels on a side.
    big = multilevel_anchors([(1, 1)] * 5, PYRAMID_STRIDES)[4]
    assert abs(float((big[8, 2] - big[8, 0]) * (big[8, 3] - big[8, 1])) ** 0.5 - 812.75) < 0.01


def test_multilevel_points():
    points = multilevel_points([(4, 5), (2, 3)], (8, 16))
    assert [p.shape for p in points] == [(20, 2), (6, 2)]
    assert_close(points[1], location_grid((2, 3), 16))
    assert points[1][4].tolist() == [24.0, 24.0]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: location_grid((3,), 8), "feature_size must be"),
        (lambda: location_grid((3, 3), 0), "stride must be"),
        (lambda: location_grid((3, 3), 8, offset=math.inf), "offset must be a finite"),
        (lambda: location_grid((3, 3), 8, dtype=torch.int32), "dtype must be a floating"),
        (lambda: multilevel_anchors([(2, 2)], (8, 16), sizes=(32,)), "one entry per level"),
        (lambda: multilevel_anchors([(2, 2)], (8,)), r"sizes must have one entry per level \(1\)"),
        (lambda: multilevel_anchors([(2, 2)], (8,), sizes=(-1,)), r"sizes\[0\] must be"),
        (lambda: multilevel_points([(2, 2), (1, 1)], (8,)), "one entry per level"),
        (lambda: multilevel_points((2, 2), 8), "must be sequences"),
    ],
)
def test_dense_errors(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
