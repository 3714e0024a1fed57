"""Tests for coursepkg.ops.box_coding against torchvision's BoxCoder."""

import math

import pytest
import torch
from torch.testing import assert_close
from torchvision.models.detection._utils import BoxCoder

from coursepkg.ops.box_coding import DEFAULT_BBOX_XFORM_CLIP, decode_boxes, encode_boxes


def random_boxes(n, generator, dtype=torch.float32, size=400.0, min_side=0.5):
    xy = torch.rand(n, 2, generator=generator, dtype=dtype) * size
    wh = torch.rand(n, 2, generator=generator, dtype=dtype) * size / 2 + min_side
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("n", [0, 1, 7, 300])
@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_encode_matches_torchvision(n, weights, dtype):
    g = torch.Generator().manual_seed(n)
    gt, proposals = random_boxes(n, g, dtype), random_boxes(n, g, dtype)
    expected = BoxCoder(weights).encode_single(gt, proposals)
    assert_close(encode_boxes(gt, proposals, weights), expected)


@pytest.mark.parametrize("n", [0, 1, 7, 300])
@pytest.mark.parametrize("num_classes", [1, 3])
@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_decode_matches_torchvision(n, num_classes, weights):
    g = torch.Generator().manual_seed(100 + n)
    boxes = random_boxes(n, g)
    # Large deltas too, so the exp clamp is exercised (|d| up to 12 > log(1000/16) = 4.14).
    deltas = (torch.rand(n, 4 * num_classes, generator=g) - 0.5) * 24
    expected = BoxCoder(weights).decode_single(deltas, boxes)
    got = decode_boxes(deltas, boxes, weights)
    assert got.shape == (n, 4 * num_classes)
    assert_close(got, expected)


def test_decode_clip_is_used():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    huge = torch.tensor([[0.0, 0.0, 50.0, 50.0]])
    clip = math.log(1000.0 / 16)
    assert clip == DEFAULT_BBOX_XFORM_CLIP
    # exp(clip) * 10 = 625: a centred box of side 625.
    assert_close(decode_boxes(huge, boxes), torch.tensor([[-307.5, -307.5, 317.5, 317.5]]))
    assert_close(
        decode_boxes(huge, boxes, bbox_xform_clip=1.0),
        BoxCoder((1.0, 1.0, 1.0, 1.0), bbox_xform_clip=1.0).decode_single(huge, boxes),
    )


def test_worked_example_correct_formulas():
    """The R-CNN formulas written out by hand, with p_h (not p_x, not h) where the notes slip."""
    proposal = torch.tensor([[10.0, 20.0, 50.0, 100.0]])  # centre (30, 60), w 40, h 80
    gt = torch.tensor([[20.0, 10.0, 40.0, 170.0]])  # centre (30, 90), w 20, h 160
    expected = torch.tensor([[0.0, 30.0 / 80.0, math.log(0.5), math.log(2.0)]])
    assert_close(encode_boxes(gt, proposal), expected)
    assert_close(decode_boxes(expected, proposal), gt)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_round_trip(weights):
    g = torch.Generator().manual_seed(3)
    # Sides in [10, 210]: every ratio stays below exp(clip) = 62.5, so decoding inverts encoding.
    gt = random_boxes(200, g, torch.float64, min_side=10.0)
    anchors = random_boxes(200, g, torch.float64, min_side=10.0)
    assert_close(decode_boxes(encode_boxes(gt, anchors, weights), anchors, weights), gt)


def test_subpixel_ground_truth_round_trips():
    anchors = torch.tensor([[0.0, 0.0, 128.0, 128.0]])
    gt = torch.tensor([[10.0, 10.0, 10.25, 10.5]])  # smaller than a pixel
    t = encode_boxes(gt, anchors)
    assert torch.isfinite(t).all()
    assert_close(decode_boxes(t, anchors), gt)


def test_zero_size_reference_is_clamped_like_the_notes():
    """The notes clamp anchor widths at eps; torchvision would divide by zero here."""
    anchors = torch.tensor([[5.0, 5.0, 5.0, 9.0]])  # zero width
    gt = torch.tensor([[4.0, 5.0, 8.0, 9.0]])
    eps = torch.finfo(torch.float32).eps
    t = encode_boxes(gt, anchors)
    assert torch.isfinite(t).all()
    assert_close(t[0, 0], torch.tensor(1.0 / eps))
    assert_close(t[0, 2], torch.log(torch.tensor(4.0) / eps))
    assert not torch.isfinite(BoxCoder((1.0, 1.0, 1.0, 1.0)).encode_single(gt, anchors)).all()


def test_zero_width_ground_truth_gives_minus_inf_like_torchvision():
    anchors = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    gt = torch.tensor([[4.0, 4.0, 4.0, 8.0]])
    t = encode_boxes(gt, anchors)
    assert t[0, 2] == -math.inf
    assert_close(t, BoxCoder((1.0, 1.0, 1.0, 1.0)).encode_single(gt, anchors))


def test_decode_gradcheck():
    g = torch.Generator().manual_seed(0)
    boxes = random_boxes(5, g, torch.float64)
    deltas = (torch.rand(5, 8, generator=g, dtype=torch.float64) - 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda d: decode_boxes(d, boxes), (deltas,))


def test_dtype_follows_inputs():
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0]], dtype=torch.float64)
    assert decode_boxes(torch.zeros(1, 4), boxes).dtype == torch.float32
    assert encode_boxes(boxes, boxes.float()).dtype == torch.float64


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: encode_boxes(torch.zeros(2, 5), torch.zeros(2, 4)),
            r"reference_boxes must be \[N, 4\], got \[2, 5\]",
        ),
        (lambda: encode_boxes(torch.zeros(2, 4), torch.zeros(3, 4)), "same length, got 2 and 3"),
        (
            lambda: encode_boxes(torch.zeros(2, 4, dtype=torch.int64), torch.zeros(2, 4)),
            "reference_boxes must be a floating",
        ),
        (lambda: encode_boxes(torch.tensor([[5.0, 0, 4, 4]]), torch.zeros(1, 4)), "x2 >= x1"),
        (
            lambda: encode_boxes(torch.zeros(1, 4), torch.tensor([[0.0, float("nan"), 4, 4]])),
            "proposals must be finite",
        ),
        (
            lambda: encode_boxes(torch.zeros(1, 4), torch.zeros(1, 4), (1.0, 1.0, 1.0)),
            r"weights must be 4 numbers \(w_x, w_y, w_w, w_h\)",
        ),
        (
            lambda: encode_boxes(torch.zeros(1, 4), torch.zeros(1, 4), (1.0, 0.0, 1.0, 1.0)),
            r"weights\[\d\] must be a finite number > 0",
        ),
        (
            lambda: decode_boxes(torch.zeros(2, 6), torch.zeros(2, 4)),
            r"deltas must be \[N, 4 \* C\]",
        ),
        (lambda: decode_boxes(torch.zeros(2, 4), torch.zeros(3, 4)), "same length, got 2 and 3"),
        (
            lambda: decode_boxes(torch.full((1, 4), float("nan")), torch.zeros(1, 4)),
            r"deltas must be finite \(no NaN or inf\), element \[0, 0\] is nan",
        ),
        (
            lambda: decode_boxes(torch.zeros(1, 4, dtype=torch.int32), torch.zeros(1, 4)),
            "deltas must be a floating",
        ),
        (lambda: decode_boxes(torch.zeros(1, 4), [[0.0, 0, 1, 1]]), "boxes must be a torch.Tensor"),
    ],
)
def test_errors(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# --- FCOS's encoding: distances from a point to the four sides ---

from coursepkg.ops.box_coding import boxes_to_distances, distances_to_boxes  # noqa: E402


def test_distances_by_hand():
    points = torch.tensor([[188.0, 244.0], [10.0, 10.0]])
    boxes = torch.tensor([[150.0, 200.0, 250.0, 300.0], [20.0, 0.0, 40.0, 30.0]])
    distances = boxes_to_distances(points, boxes)
    # The second point lies left of its box: l < 0, not clamped.
    assert distances.tolist() == [[38.0, 44.0, 62.0, 56.0], [-10.0, 10.0, 30.0, 20.0]]
    assert distances_to_boxes(points, distances).tolist() == boxes.tolist()


def test_distances_round_trip_and_broadcast():
    generator = torch.Generator().manual_seed(0)
    points = torch.rand(7, 2, generator=generator, dtype=torch.float64) * 100
    xy = torch.rand(5, 2, generator=generator, dtype=torch.float64) * 100
    boxes = torch.cat((xy, xy + 1 + torch.rand(5, 2, generator=generator, dtype=torch.float64) * 50), 1)
    pairwise = boxes_to_distances(points[:, None, :], boxes[None, :, :])  # [7, 5, 4]
    assert pairwise.shape == (7, 5, 4)
    assert_close(pairwise[3, 2], boxes_to_distances(points[3], boxes[2]))
    assert_close(distances_to_boxes(points[:, None, :], pairwise), boxes.expand(7, 5, 4))
    # l + r is the width, t + b the height, wherever the point is.
    assert_close(pairwise[..., 0] + pairwise[..., 2], (boxes[:, 2] - boxes[:, 0]).expand(7, 5))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: boxes_to_distances(torch.zeros(3, 3), torch.zeros(3, 4)), ValueError, r"points must be \[\.\.\., 2\]"),
        (lambda: distances_to_boxes(torch.zeros(3, 2), torch.zeros(3, 2)), ValueError, r"distances must be \[\.\.\., 4\]"),
        (lambda: distances_to_boxes(torch.zeros(3, 2), torch.zeros(4, 4)), ValueError, "do not broadcast"),
        (lambda: boxes_to_distances(torch.zeros(3, 2, dtype=torch.int64), torch.zeros(3, 4)), TypeError, "points must be a floating"),
        (lambda: distances_to_boxes(torch.zeros(1, 2), torch.tensor([[0.0, float("nan"), 1, 1]])), ValueError, "distances must be finite"),
    ],
)
def test_distances_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
