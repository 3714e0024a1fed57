"""Tests for coursepkg.ops.sliding_windows: brute-force references, the notes' off-by-one, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from coursepkg.ops.sliding_windows import (
    PyramidLevel,
    count_windows,
    image_pyramid,
    sliding_windows,
    window_positions,
)


def test_window_positions_includes_the_last_fit_the_notes_miss():
    # The notes' example: 64-pixel window, step 8, on a 128-pixel side.
    assert window_positions(128, 64, 8) == list(range(0, 65, 8))  # 0, 8, ..., 64: 9 positions
    notes = np.arange(0, 128 - 64, 8).tolist()  # the notes' range stops before 64
    assert notes == window_positions(128, 64, 8)[:-1]
    # When length - window is not a multiple of the step, both agree.
    assert window_positions(130, 64, 8) == np.arange(0, 130 - 64, 8).tolist()


@pytest.mark.parametrize(
    ("length", "window", "step"), [(64, 64, 8), (65, 64, 8), (100, 7, 3), (480, 64, 16), (9, 1, 1)]
)
def test_window_positions_properties(length, window, step):
    positions = window_positions(length, window, step)
    assert len(positions) == (length - window) // step + 1
    assert positions[0] == 0 and set(np.diff(positions).tolist()) <= {step}
    assert positions[-1] + window <= length < positions[-1] + step + window  # last that fits


def test_window_positions_errors():
    with pytest.raises(ValueError, match=r"window \(65\) must not be larger than length \(64\)"):
        window_positions(64, 65, 8)
    with pytest.raises(ValueError, match="step must be an int >= 1, got 0"):
        window_positions(64, 32, 0)
    with pytest.raises(ValueError, match="length must be an int >= 1, got -3"):
        window_positions(-3, 2, 1)
    with pytest.raises(TypeError, match="step must be an int, got float 2.5"):
        window_positions(64, 32, 2.5)


@pytest.mark.parametrize(
    ("image_size", "window_size", "step"),
    [((100, 150), (64, 64), 16), ((96, 200), (32, 48), (8, 24)), ((64, 64), (64, 64), 5)],
)
def test_sliding_windows_matches_nested_loops(image_size, window_size, step):
    step_y, step_x = (step, step) if isinstance(step, int) else step
    expected = [
        [x, y, x + window_size[1], y + window_size[0]]
        for y in range(0, image_size[0] - window_size[0] + 1, step_y)
        for x in range(0, image_size[1] - window_size[1] + 1, step_x)
    ]
    windows = sliding_windows(image_size, window_size, step)
    assert windows.dtype == torch.float32
    assert windows.tolist() == expected  # row-major: x varies fastest
    assert (windows[:, 2] <= image_size[1]).all() and (windows[:, 3] <= image_size[0]).all()


def test_sliding_windows_dtype_and_errors():
    windows = sliding_windows((50, 60), (10, 20), 10, dtype=torch.float64)
    assert windows.dtype == torch.float64 and windows.shape == (5 * 5, 4)
    with pytest.raises(
        ValueError, match=r"window_size \(64, 64\) must fit in image_size \(50, 100\)"
    ):
        sliding_windows((50, 100), (64, 64), 8)
    with pytest.raises(ValueError, match="step must be an int >= 1, got 0"):
        sliding_windows((100, 100), (64, 64), (8, 0))
    with pytest.raises(ValueError, match=r"step must be an int or a \(y, x\) pair"):
        sliding_windows((100, 100), (64, 64), (8, 8, 8))


def test_image_pyramid_levels():
    image = torch.rand(3, 100, 150, generator=torch.Generator().manual_seed(0))
    levels = list(image_pyramid(image, scale=1.5, min_size=(30, 30)))
    assert all(isinstance(level, PyramidLevel) for level in levels)
    assert [tuple(level.image.shape[1:]) for level in levels] == [(100, 150), (66, 100), (44, 66)]
    assert [level.factor for level in levels] == [1.0, 1.5, 2.25]
    assert levels[0].image is image
    # Each level is resized from the original, with antialiasing.
    expected = F.interpolate(image[None], size=(44, 66), mode="bilinear", antialias=True)[0]
    assert_close(levels[2].image, expected)
    # Antialiasing: the mean brightness is kept.
    assert_close(levels[2].image.mean(), image.mean(), atol=0.02, rtol=0)


def test_image_pyramid_errors():
    image = torch.rand(3, 40, 40)
    with pytest.raises(TypeError, match=r"image must be a floating-point tensor in \[0, 1\], got torch.uint8"):
        next(image_pyramid((image * 255).to(torch.uint8)))
    with pytest.raises(ValueError, match=r"image must be \[C, H, W\], got \[40, 40\]"):
        next(image_pyramid(image[0]))
    with pytest.raises(ValueError, match="scale must be > 1"):
        next(image_pyramid(image, scale=1.0))
    with pytest.raises(ValueError, match=r"image \(40, 40\) is smaller than min_size \(64, 64\)"):
        next(image_pyramid(image, min_size=(64, 64)))


def test_count_windows_matches_building_them():
    image_size, window, step, scale = (240, 320), (64, 64), 8, 1.5
    image = torch.zeros(1, *image_size)
    expected = [
        sliding_windows(tuple(level.image.shape[1:]), window, step).shape[0]
        for level in image_pyramid(image, scale=scale, min_size=window)
    ]
    counted = count_windows(image_size, window, step, scale)
    assert counted.per_level == expected
    assert counted.total == sum(expected)
    assert counted.sizes == [(240, 320), (160, 213), (106, 142), (71, 94)]


def test_count_windows_known_total():
    # A 480 x 640 image, 64 x 64 windows every 8 pixels, pyramid scale 1.5: 6,111 windows.
    counted = count_windows((480, 640), (64, 64), 8, 1.5)
    assert counted.per_level == [53 * 73, 33 * 46, 19 * 28, 10 * 16, 4 * 8]
    assert counted.total == 6111


def test_count_windows_errors():
    with pytest.raises(ValueError, match=r"min_size \(32, 32\) must be at least window_size"):
        count_windows((100, 100), (64, 64), 8, 1.5, min_size=(32, 32))
    with pytest.raises(ValueError, match="scale must be > 1"):
        count_windows((100, 100), (64, 64), 8, 0.5)
    with pytest.raises(ValueError, match="must fit in image_size"):
        count_windows((50, 100), (64, 64), 8)
