"""Tests for coursepkg.ops.roi_pool against torchvision.ops.roi_pool / roi_align (values and gradients)."""

import math

import pytest
import torch
from torch.testing import assert_close
from torchvision.ops import roi_align as tv_roi_align
from torchvision.ops import roi_pool as tv_roi_pool

import coursepkg.ops.roi_pool as roi_module
from coursepkg.ops.roi_pool import roi_align, roi_pool, roi_pool_reference


def random_rois(num_rois, num_images, image_size, generator, dtype=torch.float32):
    """RoIs [K, 5] in image pixels: many partly or fully outside the image, some tiny or empty."""
    height, width = image_size
    scale = torch.tensor([width, height], dtype=dtype)
    batch = torch.randint(0, num_images, (num_rois, 1), generator=generator).to(dtype)
    xy = torch.rand(num_rois, 2, generator=generator, dtype=dtype) * scale * 1.4 - 0.2 * scale
    wh = torch.rand(num_rois, 2, generator=generator, dtype=dtype) * scale * 0.7
    tiny = torch.rand(num_rois, generator=generator) < 0.15
    wh[tiny] *= 0.01  # smaller than a feature cell, some zero-size after rounding
    wh[: max(1, num_rois // 20)] = 0.0  # zero-area boxes are legal
    return torch.cat([batch, xy, xy + wh], dim=1)


CASES = [
    # (N, C, H, W, K, spatial_scale)
    (1, 1, 1, 1, 5, 1.0),
    (2, 3, 10, 12, 40, 1.0),
    (2, 5, 13, 9, 60, 0.5),
    (3, 4, 25, 34, 50, 1 / 16),
    (1, 2, 7, 40, 30, 0.25),
]


@pytest.mark.parametrize("n, c, h, w, k, scale", CASES)
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 2])
@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_matches_torchvision(n, c, h, w, k, scale, sampling_ratio, aligned):
    g = torch.Generator().manual_seed(h * 100 + w)
    x = torch.randn(n, c, h, w, generator=g)
    rois = random_rois(k, n, (h / scale, w / scale), g)
    for output_size in [(7, 7), (2, 3), 1]:
        expected = tv_roi_align(x, rois, output_size, scale, sampling_ratio, aligned)
        assert_close(roi_align(x, rois, output_size, scale, sampling_ratio, aligned), expected)


@pytest.mark.parametrize("n, c, h, w, k, scale", CASES)
def test_roi_pool_reference_equals_fast_path_and_torchvision(n, c, h, w, k, scale):
    # Random RoIs include boxes partly or fully outside the map, tiny and zero-area ones.
    g = torch.Generator().manual_seed(h * 10 + w)
    x = torch.randn(n, c, h, w, generator=g)
    rois = random_rois(k, n, (h / scale, w / scale), g)
    for output_size in [(7, 7), (2, 3), (1, 1)]:
        reference = roi_pool_reference(x, rois, output_size, scale)
        assert_close(reference, tv_roi_pool(x, rois, output_size, scale), rtol=0, atol=0)
        assert_close(roi_pool(x, rois, output_size, scale), reference, rtol=0, atol=0)


def test_roi_pool_reference_edge_cases():
    # 4 x 5 map: RoIs on the border, beyond it, of one cell, bins of one cell (3 x 3 RoI, 3 x 3
    # bins), more bins than cells (bins share cells), a half-cell rounding (2.5 -> 3).
    x = torch.arange(2 * 2 * 4 * 5, dtype=torch.float32).view(2, 2, 4, 5).flip(-1)
    rois = torch.tensor(
        [
            [0, 0.0, 0.0, 4.0, 3.0],  # the whole map
            [1, 3.0, 2.0, 9.0, 9.0],  # over the bottom-right border
            [0, 6.0, 5.0, 8.0, 8.0],  # entirely outside: zeros
            [1, 2.0, 1.0, 2.0, 1.0],  # one cell
            [0, 1.0, 0.0, 3.0, 2.0],  # 3 x 3 cells: bins of one cell
            [1, -2.0, -3.0, 0.0, 0.0],  # over the top-left corner
            [0, 2.5, 1.5, 4.5, 3.5],  # halves round away from zero
        ]
    )
    for output_size, scale in [((3, 3), 1.0), ((7, 2), 1.0), ((1, 1), 1.0), ((3, 3), 0.5)]:
        reference = roi_pool_reference(x, rois, output_size, scale)
        assert_close(reference, tv_roi_pool(x, rois, output_size, scale), rtol=0, atol=0)
        assert_close(roi_pool(x, rois, output_size, scale), reference, rtol=0, atol=0)
    assert roi_pool_reference(x, rois, (3, 3))[2].abs().sum() == 0  # outside the map


@pytest.mark.parametrize("n, c, h, w, k, scale", CASES)
def test_roi_pool_matches_torchvision(n, c, h, w, k, scale):
    g = torch.Generator().manual_seed(h * 100 + w)
    x = torch.randn(n, c, h, w, generator=g)
    rois = random_rois(k, n, (h / scale, w / scale), g)
    for output_size in [(7, 7), (2, 3), 1]:
        expected = tv_roi_pool(x, rois, output_size, scale)
        assert_close(roi_pool(x, rois, output_size, scale), expected, rtol=0, atol=0)
        with torch.enable_grad():  # the gradient path finds the same values another way
            got = roi_pool(x.clone().requires_grad_(), rois, output_size, scale)
        assert_close(got.detach(), expected, rtol=0, atol=0)


@pytest.mark.parametrize("sampling_ratio, aligned", [(-1, False), (2, True), (0, True)])
def test_roi_align_gradient_matches_torchvision(sampling_ratio, aligned):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 4, 15, 17, generator=g)
    rois = random_rois(50, 2, (60, 68), g)
    grad_out = torch.randn(50, 4, 5, 4, generator=g)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    roi_align(ours, rois, (5, 4), 0.25, sampling_ratio, aligned).backward(grad_out)
    tv_roi_align(theirs, rois, (5, 4), 0.25, sampling_ratio, aligned).backward(grad_out)
    assert_close(ours.grad, theirs.grad)


@pytest.mark.parametrize("with_ties", [False, True])
def test_roi_pool_gradient_matches_torchvision(with_ties):
    g = torch.Generator().manual_seed(8)
    x = torch.randn(2, 4, 15, 17, generator=g)
    if with_ties:  # ReLU'd integer features: many equal maxima; the gradient goes to the first
        x = x.mul(2).round().clamp(min=0)
    rois = random_rois(50, 2, (60, 68), g)
    grad_out = torch.randn(50, 4, 3, 5, generator=g)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    roi_pool(ours, rois, (3, 5), 0.25).backward(grad_out)
    tv_roi_pool(theirs, rois, (3, 5), 0.25).backward(grad_out)
    assert_close(ours.grad, theirs.grad)


def test_negative_zero_ties_with_zero_like_torchvision():
    x = torch.tensor([[[[-0.0, 0.0], [0.0, -0.0]]]], requires_grad=True)
    rois = torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0]])
    roi_pool(x, rois, 1).sum().backward()
    assert x.grad.flatten().tolist() == [1.0, 0.0, 0.0, 0.0]


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 2, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    rois = random_rois(6, 2, (10, 12), g, torch.float64)
    gradcheck = torch.autograd.gradcheck
    assert gradcheck(lambda t: roi_align(t, rois, (3, 2), 0.5, -1, True), (x,), fast_mode=True)
    assert gradcheck(lambda t: roi_align(t, rois, 2, 0.5, 2, False), (x,), fast_mode=True)
    assert gradcheck(lambda t: roi_pool(t, rois, (3, 2), 0.5), (x,), fast_mode=True)
    # float64 keys rank values instead of reading their bits: the same winners as torchvision.
    assert_close(roi_pool(x, rois, (3, 2), 0.5), tv_roi_pool(x, rois, (3, 2), 0.5))


def test_many_chunks_give_the_same_result(monkeypatch):
    g = torch.Generator().manual_seed(10)
    x = torch.randn(2, 3, 20, 20, generator=g)
    rois = random_rois(60, 2, (80, 80), g)
    expected_align = roi_align(x, rois, 4, 0.25, 2)
    expected_pool = roi_pool(x, rois, 4, 0.25)
    monkeypatch.setattr(roi_module, "_CHUNK_ELEMENTS", 64)  # about one RoI per chunk
    assert_close(roi_align(x, rois, 4, 0.25, 2), expected_align)
    assert_close(roi_pool(x, rois, 4, 0.25), expected_pool)
    assert_close(roi_pool(x, rois, 4, 0.25), tv_roi_pool(x, rois, 4, 0.25))


@pytest.mark.parametrize("table_elements", [0, 1 << 40])
def test_roi_pool_every_table_plan_matches_torchvision(monkeypatch, table_elements):
    """No room for a second table (every bin read cell by cell along rows, in runs along columns
    of one cell) and unlimited room (two runs per axis): same values and gradients, ties included."""
    monkeypatch.setattr(roi_module, "_TABLE_ELEMENTS", table_elements)
    g = torch.Generator().manual_seed(12)
    x = torch.randn(2, 3, 23, 29, generator=g).mul(2).round().clamp(min=0)  # many ties
    rois = random_rois(80, 2, (92, 116), g)
    grad_out = torch.randn(80, 3, 4, 3, generator=g)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = roi_pool(ours, rois, (4, 3), 0.25)
    out.backward(grad_out)
    tv_roi_pool(theirs, rois, (4, 3), 0.25).backward(grad_out)
    assert_close(out.detach(), tv_roi_pool(x, rois, (4, 3), 0.25), rtol=0, atol=0)
    assert_close(roi_pool(x, rois, (4, 3), 0.25), tv_roi_pool(x, rois, (4, 3), 0.25))
    assert_close(ours.grad, theirs.grad)


def test_roi_pool_orders_special_floats_like_torchvision():
    """Infinities, signed zeros, denormals and equal negatives: the keys order them like floats.

    One difference is on purpose: a bin of nothing but -inf gives -inf, the maximum, where
    torchvision starts its search at -FLT_MAX and returns that, with no gradient. Those bins
    are left out of the comparison (and tested on their own below).
    """
    g = torch.Generator().manual_seed(13)
    special = torch.tensor([-math.inf, math.inf, -0.0, 0.0, -1e-45, 1e-45, -3.5, -3.5, -1e30])
    x = special[torch.randint(0, len(special), (2, 4, 9, 11), generator=g)]
    rois = random_rois(40, 2, (36, 44), g)
    expected = tv_roi_pool(x, rois, 3, 0.25)
    all_minus_inf = expected == -torch.finfo(torch.float32).max
    assert 0 < all_minus_inf.sum() < 0.1 * all_minus_inf.numel()
    grad_out = torch.randn(40, 4, 3, 3, generator=g).masked_fill(all_minus_inf, 0.0)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = roi_pool(ours, rois, 3, 0.25)
    out.backward(grad_out)
    tv_roi_pool(theirs, rois, 3, 0.25).backward(grad_out)
    assert (out[all_minus_inf] == -math.inf).all()
    assert_close(out.detach()[~all_minus_inf], expected[~all_minus_inf], rtol=0, atol=0)
    assert_close(ours.grad, theirs.grad)


def test_roi_pool_bin_of_minus_infinity_is_minus_infinity():
    x = torch.full((1, 1, 3, 3), -math.inf, requires_grad=True)
    out = roi_pool(x, torch.tensor([[0.0, 0.0, 0.0, 2.0, 2.0]]), 1)
    out.sum().backward()
    assert out.item() == -math.inf
    assert x.grad.flatten().tolist() == [1.0] + [0.0] * 8  # the first cell, as on any tie


def test_roi_pool_channels_last_input_keeps_its_layout():
    """A channels-last input (the course backbones' layout) is read without a copy; its gradient
    equals torchvision's."""
    g = torch.Generator().manual_seed(14)
    x = torch.randn(2, 5, 12, 14, generator=g).contiguous(memory_format=torch.channels_last)
    rois = random_rois(30, 2, (48, 56), g)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    roi_pool(ours, rois, 3, 0.25).sum().backward()
    tv_roi_pool(theirs, rois, 3, 0.25).sum().backward()
    assert_close(ours.grad, theirs.grad)
    assert_close(roi_pool(x, rois, 3, 0.25), tv_roi_pool(x, rois, 3, 0.25))


def test_list_of_boxes_equals_rois_tensor():
    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, 2, 9, 9, generator=g)
    per_image = [random_rois(n, 1, (9, 9), g)[:, 1:] for n in (4, 0, 3)]
    rois = torch.cat(
        [torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(per_image)]
    )
    assert_close(roi_align(x, per_image, 3), roi_align(x, rois, 3))
    assert_close(roi_pool(x, per_image, 3), roi_pool(x, rois, 3))
    assert_close(roi_align(x, per_image, 3), tv_roi_align(x, per_image, 3))
    assert_close(roi_pool(x, per_image, 3), tv_roi_pool(x, per_image, 3))


def test_roi_pool_by_hand():
    """A 4x4 map, the whole map as one RoI, 2x2 bins: the max of each quadrant."""
    x = torch.arange(16.0).view(1, 1, 4, 4)
    out = roi_pool(x, torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0]]), 2)
    assert out.flatten().tolist() == [5.0, 7.0, 13.0, 15.0]
    # A 3x3 window into 2x2 bins: rows [0, 2) and [1, 3) share the middle row.
    out = roi_pool(x, torch.tensor([[0.0, 0.0, 0.0, 2.0, 2.0]]), 2)
    assert out.flatten().tolist() == [5.0, 6.0, 9.0, 10.0]


def test_roi_align_by_hand():
    """One sample at the centre of a 2x2 box on a linear ramp: bilinear interpolation is exact."""
    x = torch.arange(16.0).view(1, 1, 4, 4)  # value = 4 y + x at cell (y, x)
    out = roi_align(x, torch.tensor([[0.0, 1.0, 1.0, 3.0, 3.0]]), 1, sampling_ratio=1, aligned=True)
    # aligned: box (0.5, 0.5)..(2.5, 2.5) in cell coordinates, centre (1.5, 1.5) -> 4*1.5 + 1.5
    assert_close(out.flatten(), torch.tensor([7.5]))


def test_rois_outside_the_map_give_zeros_not_nan():
    x = torch.randn(1, 2, 5, 5)
    rois = torch.tensor([[0.0, 100.0, 100.0, 120.0, 130.0], [0.0, -50.0, -40.0, -20.0, -10.0]])
    for out in (roi_align(x, rois, 3), roi_align(x, rois, 3, aligned=True), roi_pool(x, rois, 3)):
        assert torch.isfinite(out).all() and (out == 0).all()
    assert_close(roi_pool(x, rois, 3), tv_roi_pool(x, rois, 3))


def test_empty_inputs():
    x = torch.randn(2, 3, 5, 5)
    assert roi_align(x, torch.zeros(0, 5), (2, 3)).shape == (0, 3, 2, 3)
    assert roi_pool(x, torch.zeros(0, 5), 2).shape == (0, 3, 2, 2)
    assert roi_align(x, [torch.zeros(0, 4), torch.zeros(0, 4)], 2).shape == (0, 3, 2, 2)
    assert roi_pool(torch.randn(1, 0, 5, 5), torch.zeros(2, 5), 2).shape == (2, 0, 2, 2)


def test_float64_and_device_follow_input():
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    rois = torch.tensor([[0.0, 0.5, 0.5, 4.0, 5.0]], dtype=torch.float64)
    assert roi_align(x, rois, 2).dtype == torch.float64
    assert roi_pool(x, rois, 2).dtype == torch.float64


@pytest.mark.parametrize("fn", [roi_align, roi_pool])
@pytest.mark.parametrize(
    "args, error, match",
    [
        ((torch.randn(1, 1, 4, 4), torch.tensor([[0.0, 3, 0, 2, 2]]), 2), ValueError, "x2 >= x1"),
        (
            (torch.randn(1, 1, 4, 4), torch.tensor([[1.0, 0, 0, 2, 2]]), 2),
            ValueError,
            r"batch index must be an integer in \[0, 1\)",
        ),
        (
            (torch.randn(2, 1, 4, 4), torch.tensor([[-1.0, 0, 0, 2, 2]]), 2),
            ValueError,
            "batch index",
        ),
        (
            (torch.randn(2, 1, 4, 4), torch.tensor([[0.5, 0, 0, 2, 2]]), 2),
            ValueError,
            "batch index",
        ),
        (
            (torch.randn(1, 1, 4, 4), torch.tensor([[0.0, float("nan"), 0, 2, 2]]), 2),
            ValueError,
            "finite",
        ),
        ((torch.randn(1, 1, 4, 4), torch.zeros(3, 4), 2), ValueError, r"boxes must be \[K, 5\]"),
        (
            (torch.randn(1, 1, 4, 4), [torch.zeros(3, 5)], 2),
            ValueError,
            r"boxes\[0\] must be \[L, 4\]",
        ),
        ((torch.randn(1, 4, 4), torch.zeros(1, 5), 2), ValueError, r"input must be \[N, C, H, W\]"),
        (
            (torch.randn(1, 1, 4, 4), torch.zeros(1, 5, dtype=torch.float64), 2),
            TypeError,
            "same dtype",
        ),
        (
            (torch.randn(1, 1, 4, 4), torch.zeros(1, 5, dtype=torch.int64), 2),
            TypeError,
            "floating-point",
        ),
        (
            (torch.ones(1, 1, 4, 4, dtype=torch.int64), torch.zeros(1, 5), 2),
            TypeError,
            "input must be a floating",
        ),
        ((torch.randn(1, 1, 4, 4), torch.zeros(1, 5), 0), ValueError, "output_size must be"),
        (
            (torch.randn(1, 1, 4, 4), torch.zeros(1, 5), (2, 2, 2)),
            ValueError,
            "output_size must be",
        ),
        ((torch.randn(1, 1, 4, 4), torch.zeros(1, 5), 2, 0.0), ValueError, "spatial_scale must be"),
        ((torch.randn(1, 1, 4, 4), "boxes", 2), TypeError, "boxes must be a Tensor"),
    ],
)
def test_errors(fn, args, error, match):
    with pytest.raises(error, match=match):
        fn(*args)


def test_sampling_ratio_must_be_int():
    with pytest.raises(ValueError, match="sampling_ratio must be an int"):
        roi_align(torch.randn(1, 1, 4, 4), torch.zeros(1, 5), 2, 1.0, 2.0)
