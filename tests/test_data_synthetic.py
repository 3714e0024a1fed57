"""Tests for coursepkg.data.synthetic: seeding, tight boxes, backgrounds, placement."""

import numpy as np
import pytest
import torch
from torchvision.ops import masks_to_boxes

from coursepkg.data import (
    SyntheticDetection,
    cluttered_background,
    item_generator,
    masks_to_tight_boxes,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Render with one intra-op thread, as DataLoader workers do (see test_data_shapes)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _slow_tight_box(mask: np.ndarray) -> list[float]:
    """Reference: the continuous box of a mask from the indices of its pixels."""
    rows, cols = np.nonzero(mask)
    return [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


# --- item_generator and masks_to_tight_boxes ---------------------------------------------------


def test_item_generator_depends_on_seed_and_index_only():
    a = torch.rand(5, generator=item_generator(3, 7))
    torch.testing.assert_close(a, torch.rand(5, generator=item_generator(3, 7)))
    # (seed, index) pairs that a naive seed + index would confuse get different streams.
    draws = {
        pair: torch.rand(3, generator=item_generator(*pair)).tolist()
        for pair in [(0, 1), (1, 0), (0, 0), (2**40, 5), (5, 2**40)]
    }
    assert len({tuple(v) for v in draws.values()}) == len(draws)


def test_masks_to_tight_boxes_against_torchvision_and_a_loop():
    gen = torch.Generator().manual_seed(0)
    for height, width, count in [(1, 1, 1), (5, 9, 3), (32, 17, 6)]:
        masks = torch.rand(count, height, width, generator=gen) > 0.7
        masks[:, gen.seed() % height, 0] = True  # no empty mask
        boxes = masks_to_tight_boxes(masks)
        # torchvision returns pixel indices (x_max, y_max of the last pixel): ours add 1.
        expected = masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])
        torch.testing.assert_close(boxes, expected)
        loop = torch.tensor([_slow_tight_box(m.numpy()) for m in masks], dtype=torch.float32)
        torch.testing.assert_close(boxes, loop)


def test_masks_to_tight_boxes_single_pixel_and_errors():
    mask = torch.zeros(1, 4, 6, dtype=torch.bool)
    mask[0, 2, 3] = True
    torch.testing.assert_close(masks_to_tight_boxes(mask), torch.tensor([[3.0, 2.0, 4.0, 3.0]]))
    assert masks_to_tight_boxes(torch.zeros(0, 4, 6, dtype=torch.bool)).shape == (0, 4)
    with pytest.raises(ValueError, match=r"masks\[1\] is empty"):
        masks_to_tight_boxes(torch.cat([mask, torch.zeros_like(mask)]))
    with pytest.raises(ValueError, match=r"masks must be \[G, H, W\]"):
        masks_to_tight_boxes(mask[0])


# --- cluttered_background ---------------------------------------------------------------------


def test_cluttered_background_is_deterministic_and_in_range():
    for size in [(16, 16), (40, 70)]:
        a = cluttered_background(size, torch.Generator().manual_seed(3))
        b = cluttered_background(size, torch.Generator().manual_seed(3))
        assert a.shape == (3, *size) and a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    backgrounds = [
        cluttered_background((32, 32), torch.Generator().manual_seed(s)) for s in range(4)
    ]
    assert all(not torch.equal(backgrounds[0], other) for other in backgrounds[1:])
    assert all(float(bg.std()) > 0 for bg in backgrounds)  # never a flat colour


# --- placement and boxes, with a shape whose box is known -----------------------------------


class Squares(SyntheticDetection):
    """Solid squares of side ceil(size): a fully visible square's box is exactly its crop."""

    classes = ("square",)

    def __init__(self, num_images, **kwargs):
        defaults = dict(min_objects=1, max_objects=5, min_size=4.0, max_size=20.0,
                        max_occlusion=0.0, clutter=False, seed=0, max_tries=50)  # fmt: skip
        super().__init__(num_images, (48, 64), **{**defaults, **kwargs})

    def _draw(self, label, size, generator):
        side = int(np.ceil(size))
        return torch.ones(side, side)


def test_boxes_of_unoccluded_squares_are_their_crops():
    data = Squares(30)
    sides = []
    for i in range(len(data)):
        sample = data.render(i)
        torch.testing.assert_close(sample.visible_fraction, torch.ones(len(sample.labels)))
        widths = sample.boxes[:, 2] - sample.boxes[:, 0]
        torch.testing.assert_close(widths, sample.boxes[:, 3] - sample.boxes[:, 1])
        torch.testing.assert_close(widths, sample.masks.sum(dim=(1, 2)).float().sqrt())
        assert float(sample.boxes[:, :2].min()) >= 0
        assert bool((sample.boxes[:, 2] <= 64).all()) and bool((sample.boxes[:, 3] <= 48).all())
        sides += widths.tolist()
    assert min(sides) >= 4 and max(sides) <= 20 and len(set(sides)) > 5


def test_occluded_squares_keep_the_visible_part():
    data = Squares(30, max_occlusion=0.6, max_objects=8, min_size=12, max_size=24)
    occluded = 0
    for i in range(len(data)):
        sample = data.render(i)
        assert bool((sample.visible_fraction >= 0.4 - 1e-6).all())
        for box, mask in zip(sample.boxes.tolist(), sample.masks.numpy(), strict=True):
            assert box == _slow_tight_box(mask)
        occluded += int((sample.visible_fraction < 1).sum())
    assert occluded > 0
