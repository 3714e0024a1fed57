"""Sliding windows and image pyramids: the oldest way to turn a classifier into a detector.

A fixed-size window slides over the image with a step; each position is one candidate box. An
image pyramid (the same image shrunk again and again by ``scale``) lets a fixed window find
larger objects. The number of windows is what made this approach expensive
(:func:`count_windows`).

Shapes used in this module:

* ``image_size`` and ``window_size``: ``(height, width)`` in pixels.
* ``step``: an int (same step in both directions) or ``(step_y, step_x)``.
* windows: ``[N, 4]`` float xyxy boxes, row-major (left to right, then top to bottom).
* images: ``[C, H, W]`` floating-point tensors with values in ``[0, 1]`` (the datasets' convention;
  a uint8 image in ``0..255`` converts with ``image.float() / 255``).

Chapter: book/01_sliding_windows
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from coursepkg.ops.validation import check_image_size, check_int


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """An int or a ``(y, x)`` pair of positive ints, as a pair."""
    if isinstance(value, Sequence):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a (y, x) pair, got {value!r}")
        return check_int(value[0], name, low=1), check_int(value[1], name, low=1)
    side = check_int(value, name, low=1)
    return side, side


def window_positions(length: int, window: int, step: int) -> list[int]:
    """Start coordinates of a window of size ``window`` sliding along ``length`` pixels.

    The positions are ``0, step, 2 * step, ...`` up to and **including** ``length - window``,
    the last start at which the window still fits: ``range(0, length - window + 1, step)``.
    Implements Eq. (eq-window-positions) of book/01_sliding_windows:
    ``x_k = k * step`` for ``k < (length - window) // step + 1``.
    The notes write ``np.arange(0, W - win_w, step)``, whose stop is exclusive, so when
    ``W - win_w`` is a multiple of the step the last column (or row) of windows is missing:
    for ``W = 128, win_w = 64, step = 8`` the notes give 8 positions (0..56) where 9 fit (0..64).
    When ``length - window`` is not a multiple of ``step``, the last ``< step`` pixels are only
    covered by windows that start earlier, as in every fixed-step scan.

    Args:
        length: image width (or height) in pixels.
        window: window width (or height), ``1 <= window <= length``.
        step: distance between consecutive starts, ``>= 1``.

    Returns:
        The start coordinates, ``(length - window) // step + 1`` of them.

    Raises:
        TypeError: if an argument is not an int.
        ValueError: if an argument is not positive or the window is larger than ``length``.

    Chapter: book/01_sliding_windows
    """
    length = check_int(length, "length", low=1)
    window = check_int(window, "window", low=1)
    step = check_int(step, "step", low=1)
    if window > length:
        raise ValueError(f"window ({window}) must not be larger than length ({length})")
    return list(range(0, length - window + 1, step))


def _num_positions(length: int, window: int, step: int) -> int:
    """``len(window_positions(length, window, step))`` in closed form (checked inputs)."""
    return (length - window) // step + 1


def _largest_exact_integer(dtype: torch.dtype) -> int:
    """The largest ``n`` such that every integer in ``0..n`` is exact in ``dtype`` (2048 for float16)."""
    mantissa_bits = {torch.float16: 10, torch.bfloat16: 7, torch.float32: 23, torch.float64: 52}
    return 2 ** (mantissa_bits.get(dtype, 52) + 1)


def sliding_windows(
    image_size: Sequence[int],
    window_size: Sequence[int],
    step: int | Sequence[int],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Every window position as an xyxy box, row-major (x varies fastest).

    Implements Eq. (eq-window-positions) of book/01_sliding_windows along both axes: the boxes
    ``(x_k, y_j, x_k + win_w, y_j + win_h)`` for every start ``x_k`` and ``y_j``.

    Args:
        image_size: ``(height, width)`` of the image.
        window_size: ``(height, width)`` of the window, no larger than the image.
        step: an int, or ``(step_y, step_x)``.
        dtype: floating-point dtype of the result.
        device: device of the result.

    Returns:
        ``[N, 4]`` boxes ``(x, y, x + win_w, y + win_h)`` with
        ``N = len(window_positions(H, win_h, step_y)) * len(window_positions(W, win_w, step_x))``.

    Raises:
        TypeError, ValueError: as :func:`window_positions`, naming ``window_size`` or ``step``;
            ``TypeError`` if ``dtype`` is not floating point; ``ValueError`` if ``dtype`` cannot
            hold every pixel coordinate of the image exactly (float16 holds the integers up to
            2,048 only: a wider image would give windows that collide after rounding).

    Chapter: book/01_sliding_windows
    """
    height, width = check_image_size(image_size)
    win_h, win_w = check_image_size(window_size, "window_size")
    step_y, step_x = _pair(step, "step")
    if win_h > height or win_w > width:
        raise ValueError(
            f"window_size {(win_h, win_w)} must fit in image_size {(height, width)} (height, width)"
        )
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    if max(height, width) > _largest_exact_integer(dtype):
        raise ValueError(
            f"dtype {dtype} holds the integers up to {_largest_exact_integer(dtype)} exactly, so "
            f"the window coordinates of an image of size {(height, width)} would collide; "
            "use dtype=torch.float32"
        )
    # Positions in int64, converted once: exact for every dtype checked above.
    ys = torch.arange(0, height - win_h + 1, step_y, device=device).to(dtype)  # [ny]
    xs = torch.arange(0, width - win_w + 1, step_x, device=device).to(dtype)  # [nx]
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # [ny, nx] each
    x1, y1 = grid_x.reshape(-1), grid_y.reshape(-1)  # [N], row-major
    return torch.stack((x1, y1, x1 + win_w, y1 + win_h), dim=1)  # [N, 4]


class PyramidLevel(NamedTuple):
    """One level of an image pyramid.

    Attributes:
        image: ``[C, h, w]`` the image at this level.
        factor: how much smaller than the original this level is (``scale ** level``): a box
            found at this level maps back to the original image by multiplying by ``factor``
            (exact up to the rounding of ``h`` and ``w`` down to whole pixels).
    """

    image: Tensor
    factor: float


def _pyramid_sizes(
    image_size: tuple[int, int], scale: float, min_size: tuple[int, int]
) -> list[tuple[int, int]]:
    """Level sizes ``floor(H / scale**k), floor(W / scale**k)`` while both fit ``min_size``."""
    sizes = []
    while True:
        factor = scale ** len(sizes)
        size = (int(image_size[0] / factor), int(image_size[1] / factor))
        if size[0] < min_size[0] or size[1] < min_size[1]:
            return sizes
        sizes.append(size)


def _check_scale(scale: float) -> float:
    if isinstance(scale, bool) or not isinstance(scale, int | float):
        raise TypeError(f"scale must be a number, got {scale!r}")
    if not scale > 1:  # also rejects NaN
        raise ValueError(f"scale must be > 1 (each level smaller than the previous), got {scale}")
    return float(scale)


def image_pyramid(
    image: Tensor, scale: float = 1.5, min_size: Sequence[int] = (32, 32)
) -> Iterator[PyramidLevel]:
    """Yield the image, then smaller and smaller copies, each ``scale`` times smaller.

    Level ``k`` has size ``(floor(H / scale**k), floor(W / scale**k))`` and is resized from the
    original (not from the previous level) with antialiased bilinear interpolation, so no
    error accumulates. The pyramid stops before the first level smaller than ``min_size``.

    Args:
        image: ``[C, H, W]`` floating-point image with values in ``[0, 1]`` (the datasets'
            convention; convert a uint8 image with ``image.float() / 255``).
        scale: shrink factor between levels, ``> 1``.
        min_size: ``(height, width)``, the smallest level to yield (usually the window size).

    Yields:
        :class:`PyramidLevel` ``(image, factor)``, starting with the original image and
        ``factor = 1.0``.

    Raises:
        TypeError: if ``image`` is not a floating-point tensor (integer images are refused rather
            than guessed at: ``0..255`` or ``0..1``?).
        ValueError: if ``image`` is not ``[C, H, W]``, has values outside ``[0, 1]`` (or NaN), is
            smaller than ``min_size``, or ``scale <= 1``.
        Both are raised when the iteration starts (it is a generator).

    Chapter: book/01_sliding_windows
    """
    if not isinstance(image, Tensor):
        raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if not image.is_floating_point():
        raise TypeError(
            f"image must be a floating-point tensor in [0, 1], got {image.dtype}; "
            "convert a uint8 image with image.float() / 255"
        )
    if image.dim() != 3:
        raise ValueError(f"image must be [C, H, W], got {list(image.shape)}")
    if image.numel() > 0:
        low, high = torch.aminmax(image)
        if not bool((low >= 0) & (high <= 1)):  # NaN fails both
            raise ValueError(
                f"image must hold values in [0, 1], got min {low.item()} and max {high.item()}; "
                "divide a 0..255 image by 255"
            )
    scale = _check_scale(scale)
    min_size = check_image_size(min_size, "min_size")
    height, width = image.shape[1:]
    if height < min_size[0] or width < min_size[1]:
        raise ValueError(f"image {(height, width)} is smaller than min_size {min_size}")
    for level, size in enumerate(_pyramid_sizes((height, width), scale, min_size)):
        if level == 0:
            yield PyramidLevel(image, 1.0)
            continue
        resized = F.interpolate(
            image[None], size=size, mode="bilinear", align_corners=False, antialias=True
        )[0]  # [C, h, w]
        yield PyramidLevel(resized, scale**level)


class WindowCount(NamedTuple):
    """How many windows a sliding-window detector evaluates.

    Attributes:
        sizes: ``(height, width)`` of each pyramid level.
        per_level: number of windows at each level.
        total: their sum.
    """

    sizes: list[tuple[int, int]]
    per_level: list[int]
    total: int


def count_windows(
    image_size: Sequence[int],
    window_size: Sequence[int],
    step: int | Sequence[int],
    scale: float = 1.5,
    min_size: Sequence[int] | None = None,
) -> WindowCount:
    """Count the windows of a sliding-window scan over an image pyramid, without building them.

    Uses the same level sizes as :func:`image_pyramid` and the same positions as
    :func:`window_positions`, counted in closed form (``(H - h) // step + 1`` per axis), so a
    gigapixel image answers at once. Implements Eq. (eq-window-count) of
    book/01_sliding_windows: the sum over levels of ``n_x * n_y``.

    Args:
        image_size: ``(height, width)`` of the original image.
        window_size: ``(height, width)`` of the window.
        step: an int, or ``(step_y, step_x)``, the same at every level.
        scale: shrink factor between pyramid levels, ``> 1``.
        min_size: smallest level, ``(height, width)``; defaults to ``window_size`` (the
            smallest level in which one window still fits).

    Returns:
        :class:`WindowCount` with the level sizes, the windows per level and the total.

    Raises:
        ValueError: if the window does not fit the image, ``min_size`` is smaller than the
            window, a step is not positive or ``scale <= 1``.

    Chapter: book/01_sliding_windows
    """
    image_size = check_image_size(image_size)
    window_size = check_image_size(window_size, "window_size")
    step_y, step_x = _pair(step, "step")
    scale = _check_scale(scale)
    min_size = window_size if min_size is None else check_image_size(min_size, "min_size")
    if window_size[0] > image_size[0] or window_size[1] > image_size[1]:
        raise ValueError(f"window_size {window_size} must fit in image_size {image_size}")
    if min_size[0] < window_size[0] or min_size[1] < window_size[1]:
        raise ValueError(f"min_size {min_size} must be at least window_size {window_size}")
    sizes = _pyramid_sizes(image_size, scale, min_size)  # one entry per level: ~log(H) of them
    per_level = [
        _num_positions(h, window_size[0], step_y) * _num_positions(w, window_size[1], step_x)
        for h, w in sizes
    ]
    return WindowCount(sizes, per_level, sum(per_level))
