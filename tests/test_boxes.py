"""Tests for coursepkg.ops.boxes: torchvision.ops as the oracle, the notes' worked examples, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torchvision.ops as tvops
from torch.testing import assert_close

from coursepkg.ops.boxes import (
    BOX_FORMATS,
    box_area,
    box_convert,
    box_iou,
    box_iou_reference,
    clip_boxes_to_image,
    convert_to_absolute_values,
    matched_box_iou,
    remove_small_boxes,
    xyxy_to_yolo,
    yolo_to_xyxy,
)
from coursepkg.ops.validation import check_boxes, check_image_size

SIZES = (0, 1, 7, 64, 257)
DTYPES = (torch.float32, torch.float64)


def random_boxes(n: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` xyxy boxes in a 600 x 600 image; about one in ten has zero width or height."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 500
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 150
    wh[torch.rand(n, 2, generator=g) < 0.05] = 0
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


A = torch.tensor([[100.0, 100.0, 400.0, 400.0]])
B = torch.tensor([[200.0, 200.0, 300.0, 300.0]])
TOUCH_A = torch.tensor([[100.0, 100.0, 200.0, 200.0]])


# --- check_boxes -------------------------------------------------------------------------------


def test_check_boxes_accepts_valid_empty_and_zero_area():
    check_boxes(random_boxes(10, 0))
    check_boxes(torch.zeros(0, 4))
    check_boxes(torch.tensor([[5.0, 5.0, 5.0, 5.0]], dtype=torch.float64))
    # Finite coordinates whose width overflows float32 are still valid boxes.
    check_boxes(torch.tensor([[-3e38, 0.0, 3e38, 1.0]]))


def test_check_boxes_type_errors():
    with pytest.raises(TypeError, match="boxes must be a torch.Tensor, got list"):
        check_boxes([[0, 0, 1, 1]])
    with pytest.raises(TypeError, match=r"floating-point tensor, got torch.int64.*\.float\(\)"):
        check_boxes(torch.tensor([[0, 0, 1, 1]]))


@pytest.mark.parametrize(
    ("shape", "text"), [((3, 5), r"\[3, 5\]"), ((4,), r"\[4\]"), ((2, 3, 4), r"\[2, 3, 4\]")]
)
def test_check_boxes_shape_errors(shape, text):
    with pytest.raises(ValueError, match=rf"^anchors must be \[N, 4\], got {text}$"):
        check_boxes(torch.zeros(shape), "anchors")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_check_boxes_non_finite_names_the_row(bad):
    boxes = random_boxes(4, 1)
    boxes[2, 3] = bad
    with pytest.raises(ValueError, match="boxes must be finite, row 2 is"):
        check_boxes(boxes)


def test_check_boxes_reversed_corners_names_the_first_bad_row():
    boxes = random_boxes(5, 2)
    boxes[3] = torch.tensor([10.0, 10.0, 20.0, 5.0])  # y2 < y1
    boxes[4] = torch.tensor([10.0, 10.0, 5.0, 20.0])  # x2 < x1
    with pytest.raises(
        ValueError, match=r"x2 >= x1 and y2 >= y1, row 3 is \[10.0, 10.0, 20.0, 5.0\]"
    ):
        check_boxes(boxes)


def test_check_image_size():
    assert check_image_size((480, 640)) == (480, 640)
    assert check_image_size((np.int64(3), torch.tensor(4))) == (3, 4)
    with pytest.raises(TypeError, match="image_size must hold ints"):
        check_image_size((480.0, 640))
    with pytest.raises(TypeError, match="image_size must hold ints"):
        check_image_size((True, 640))
    with pytest.raises(TypeError, match=r"\(height, width\) pair"):
        check_image_size((480, 640, 3))
    with pytest.raises(ValueError, match=r"positive \(height, width\), got \(0, 640\)"):
        check_image_size((0, 640))


# --- formats -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("in_fmt", "out_fmt"), list(itertools.product(BOX_FORMATS, repeat=2)))
@pytest.mark.parametrize("dtype", DTYPES)
def test_box_convert_matches_torchvision(in_fmt, out_fmt, dtype):
    for n in SIZES:
        boxes = tvops.box_convert(random_boxes(n, n, dtype), "xyxy", in_fmt)
        ours = box_convert(boxes, in_fmt, out_fmt)
        assert ours.dtype == dtype
        assert_close(ours, tvops.box_convert(boxes, in_fmt, out_fmt))


@pytest.mark.parametrize("fmt", BOX_FORMATS)
def test_box_convert_round_trip(fmt):
    boxes = random_boxes(100, 3, torch.float64)
    assert_close(box_convert(box_convert(boxes, "xyxy", fmt), fmt, "xyxy"), boxes)


def test_box_convert_known_values():
    xyxy = torch.tensor([[10.0, 20.0, 50.0, 80.0]])
    assert box_convert(xyxy, "xyxy", "xywh").tolist() == [[10.0, 20.0, 40.0, 60.0]]
    assert box_convert(xyxy, "xyxy", "cxcywh").tolist() == [[30.0, 50.0, 40.0, 60.0]]


def test_box_convert_errors():
    boxes = random_boxes(3, 0)
    with pytest.raises(ValueError, match="in_fmt must be one of xyxy, xywh, cxcywh; got 'xxyy'"):
        box_convert(boxes, "xxyy", "xyxy")
    with pytest.raises(ValueError, match="out_fmt must be one of xyxy, xywh, cxcywh; got 'yolo'"):
        box_convert(boxes, "xyxy", "yolo")
    with pytest.raises(
        ValueError, match=r"boxes \(xywh\) must have non-negative width and height, row 0"
    ):
        box_convert(torch.tensor([[0.0, 0.0, -1.0, 2.0]]), "xywh", "xyxy")
    with pytest.raises(ValueError, match="x2 >= x1"):
        box_convert(torch.tensor([[5.0, 0.0, 1.0, 2.0]]), "xyxy", "xywh")
    with pytest.raises(TypeError, match=r"\.float\(\)"):
        box_convert(torch.tensor([[0, 0, 1, 1]]), "xywh", "xyxy")
    with pytest.raises(ValueError, match=r"must be finite"):
        box_convert(torch.tensor([[0.0, float("nan"), 1.0, 1.0]]), "cxcywh", "xyxy")


NOTES_YOLO_BOX = (0.572656, 0.523958, 0.698438, 0.589583)


def test_convert_to_absolute_values_notes_example():
    assert convert_to_absolute_values((640, 480), NOTES_YOLO_BOX) == (143, 110, 590, 393)


def test_convert_to_absolute_values_rounding_and_clipping():
    # Binary-exact inputs: x_in = round(0.5) = 0, y_in = round(2.5) = 2, x_end = 0 + round(1.0),
    # y_end = 2 + round(0.5) = 2. Python rounds halves to even; half-up would give (1, 3, 2, 4).
    assert convert_to_absolute_values((4, 4), (0.25, 0.6875, 0.25, 0.125)) == (0, 2, 1, 2)
    # A box over the whole image and beyond is clipped to [0, W - 1] x [0, H - 1].
    assert convert_to_absolute_values((640, 480), (0.5, 0.5, 1.5, 1.2)) == (0, 0, 639, 479)


def test_convert_to_absolute_values_errors():
    with pytest.raises(TypeError, match=r"size must be a \(width, height\) pair"):
        convert_to_absolute_values((640,), NOTES_YOLO_BOX)
    with pytest.raises(TypeError, match="size must hold ints"):
        convert_to_absolute_values((640.0, 480), NOTES_YOLO_BOX)
    with pytest.raises(ValueError, match=r"size must be positive \(width, height\)"):
        convert_to_absolute_values((640, 0), NOTES_YOLO_BOX)
    with pytest.raises(ValueError, match=r"box must be 4 numbers \(cx, cy, w, h\), got \(0.5, 0.5, 0.1\)"):
        convert_to_absolute_values((640, 480), (0.5, 0.5, 0.1))
    with pytest.raises(ValueError, match=r"box\[1\] must be a finite number, got nan"):
        convert_to_absolute_values((640, 480), (0.5, float("nan"), 0.1, 0.1))
    # A negative width used to give an inverted box (x_end < x_in) without a word.
    with pytest.raises(ValueError, match=r"box\[2\] must be a finite number >= 0, got -0.1"):
        convert_to_absolute_values((640, 480), (0.5, 0.5, -0.1, 0.1))


def test_yolo_to_xyxy_notes_example_is_continuous():
    boxes = yolo_to_xyxy(torch.tensor([NOTES_YOLO_BOX], dtype=torch.float64), (480, 640))
    assert_close(
        boxes, torch.tensor([[143.0, 110.0, 590.0, 393.0]], dtype=torch.float64), atol=1e-3, rtol=0
    )


def test_yolo_round_trip_and_height_width_order():
    image_size = (300, 500)  # (height, width): x is scaled by 500, y by 300
    rel = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    assert yolo_to_xyxy(rel, image_size).tolist() == [[200.0, 120.0, 300.0, 180.0]]
    boxes = random_boxes(50, 4, torch.float64)
    assert_close(yolo_to_xyxy(xyxy_to_yolo(boxes, image_size), image_size), boxes)
    with pytest.raises(ValueError, match=r"boxes \(cxcywh\) must have non-negative width"):
        yolo_to_xyxy(torch.tensor([[0.5, 0.5, -0.1, 0.1]]), image_size)
    with pytest.raises(TypeError, match="image_size"):
        yolo_to_xyxy(rel, 640)


# --- areas and IoU -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_box_area_matches_torchvision(dtype):
    for n in SIZES:
        boxes = random_boxes(n, 10 + n, dtype)
        assert_close(box_area(boxes), tvops.box_area(boxes), rtol=0, atol=0)


def test_box_area_legacy_plus_one():
    boxes = torch.tensor([[100.0, 100.0, 400.0, 400.0], [3.0, 3.0, 3.0, 3.0]])
    assert box_area(boxes).tolist() == [90000.0, 0.0]
    assert box_area(boxes, legacy_plus_one=True).tolist() == [301.0**2, 1.0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_box_iou_matches_torchvision(dtype):
    for n, m in [(0, 5), (5, 0), (0, 0), (1, 1), (37, 53), (257, 64)]:
        boxes1, boxes2 = random_boxes(n, n, dtype), random_boxes(m, 1000 + m, dtype)
        ours, theirs = box_iou(boxes1, boxes2), tvops.box_iou(boxes1, boxes2)
        assert ours.shape == (n, m) and ours.dtype == dtype
        # Same operations in the same order: equal bit for bit, except where torchvision
        # divides 0 by 0 (two zero-area boxes) and returns NaN.
        nan = torch.isnan(theirs)
        assert_close(ours[~nan], theirs[~nan], rtol=0, atol=0)
        assert (ours[nan] == 0).all()


IOU_EDGE_CASES = {
    "touching": ([[0.0, 0, 2, 2]], [[2.0, 0, 4, 2]]),
    "identical": ([[1.0, 1, 3, 3]] * 2, [[1.0, 1, 3, 3]]),
    "zero area": ([[1.0, 1, 1, 1], [0.0, 1, 4, 1]], [[1.0, 1, 1, 1], [0.0, 0, 4, 4]]),
    "inside": ([[0.0, 0, 10, 10]], [[2.0, 3, 5, 7], [0.0, 0, 10, 10]]),
    "half": ([[0.0, 0, 10, 10]], [[0.0, 0, 10, 5], [5.0, 0, 15, 10]]),
    "disjoint": ([[0.0, 0, 1, 1]], [[5.0, 5, 6, 6]]),
}


@pytest.mark.parametrize("case", IOU_EDGE_CASES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_box_iou_reference_equals_fast_path_and_torchvision_on_edge_cases(case, dtype):
    boxes1, boxes2 = (torch.tensor(b, dtype=dtype) for b in IOU_EDGE_CASES[case])
    reference = box_iou_reference(boxes1, boxes2)
    assert_close(box_iou(boxes1, boxes2), reference, rtol=0, atol=0)
    assert_close(tvops.box_iou(boxes1, boxes2).nan_to_num(0.0), reference, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_box_iou_reference_equals_fast_path_and_torchvision_on_random_boxes(dtype):
    for n, m in [(0, 3), (1, 1), (17, 23), (64, 40)]:
        boxes1, boxes2 = random_boxes(n, 50 + n, dtype), random_boxes(m, 60 + m, dtype)
        reference = box_iou_reference(boxes1, boxes2)
        assert reference.shape == (n, m) and reference.dtype == dtype
        # The reference computes in double: float32 results agree to the last bit or so.
        tol = {"rtol": 0, "atol": 0} if dtype == torch.float64 else {"rtol": 2e-7, "atol": 1e-7}
        assert_close(box_iou(boxes1, boxes2), reference, **tol)
        assert_close(tvops.box_iou(boxes1, boxes2).nan_to_num(0.0), reference, **tol)


def test_box_iou_huge_float32_coordinates_do_not_overflow():
    # Areas of boxes near 1e30 overflow float32 (max 3.4e38): torchvision gives inf / inf = NaN.
    # Ours equal the IoUs computed in float64, rounded to float32, and keep their gradient.
    rng = torch.Generator().manual_seed(7)
    boxes1 = random_boxes(20, 8, torch.float64) * 1e27  # up to ~1e30
    boxes2 = torch.cat([boxes1[:5], random_boxes(15, 9, torch.float64) * 1e27])
    boxes2 = boxes2 + torch.rand(20, 4, generator=rng, dtype=torch.float64) * 1e28
    boxes2[:, 2:] = torch.maximum(boxes2[:, 2:], boxes2[:, :2])
    b1, b2 = boxes1.float(), boxes2.float()
    assert torch.isnan(tvops.box_iou(b1, b2)).any()  # the bug this guards against
    expected = box_iou(b1.double(), b2.double()).float()
    assert_close(box_iou(b1, b2), expected, rtol=1e-6, atol=1e-7)
    assert_close(box_iou_reference(b1, b2), expected, rtol=1e-6, atol=1e-7)
    assert_close(matched_box_iou(b1, b2), expected.diagonal(), rtol=1e-6, atol=1e-7)
    assert_close(
        box_iou(b1, b2, legacy_plus_one=True), box_iou(b1.double(), b2.double()).float()
    )  # +1 on a 1e29-wide box changes nothing
    # Up to the float32 limit, and in float64 near its own limit.
    edge = torch.tensor([[-3e38, -3e38, 3e38, 3e38], [0.0, 0, 3e38, 3e38]])
    assert_close(box_iou(edge, edge), torch.tensor([[1.0, 0.25], [0.25, 1.0]]))
    assert_close(box_iou(edge.double() * 1e269, edge.double() * 1e269)[0, 1].item(), 0.25)
    grad = b1.clone().requires_grad_()
    box_iou(grad, b2).sum().backward()
    assert torch.isfinite(grad.grad).all()


def test_box_iou_notes_examples():
    assert_close(box_iou(A, B, legacy_plus_one=True), torch.tensor([[101.0**2 / 301.0**2]]))
    assert round(box_iou(A, B, legacy_plus_one=True).item(), 5) == 0.11259
    assert_close(box_iou(A, B), torch.tensor([[1 / 9]]))
    # Boxes that only touch at a corner: one shared pixel under +1, nothing in continuous terms.
    assert_close(box_iou(TOUCH_A, B, legacy_plus_one=True), torch.tensor([[1 / 20401]]))
    assert f"{box_iou(TOUCH_A, B, legacy_plus_one=True).item():.4e}" == "4.9017e-05"
    assert box_iou(TOUCH_A, B).item() == 0.0


def test_box_iou_edge_cases():
    point = torch.tensor([[5.0, 5.0, 5.0, 5.0]])
    line = torch.tensor([[0.0, 5.0, 10.0, 5.0]])
    square = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    assert box_iou(point, point).item() == 0.0  # empty union: 0, not NaN
    assert box_iou(point, square).item() == 0.0
    assert box_iou(line, line).item() == 0.0
    assert box_iou(square, square).item() == 1.0
    assert box_iou(point, point, legacy_plus_one=True).item() == 1.0  # one pixel each
    half = torch.tensor([[0.0, 0.0, 10.0, 5.0]])
    assert box_iou(square, half).item() == 0.5
    assert box_iou(square, torch.tensor([[20.0, 20.0, 30.0, 30.0]])).item() == 0.0


def test_box_iou_properties():
    boxes1, boxes2 = random_boxes(40, 5, torch.float64), random_boxes(30, 6, torch.float64)
    iou = box_iou(boxes1, boxes2)
    assert_close(iou, box_iou(boxes2, boxes1).T, rtol=0, atol=0)  # symmetric
    assert ((iou >= 0) & (iou <= 1)).all()
    positive = box_area(boxes1) > 0
    assert_close(
        box_iou(boxes1, boxes1).diagonal()[positive],
        torch.ones(int(positive.sum()), dtype=torch.float64),
    )
    # Invariant under a common translation and scaling of the image.
    assert_close(box_iou(boxes1 * 3 + 7, boxes2 * 3 + 7), iou)
    # On integer corners, +1 IoU equals the continuous IoU of boxes one pixel larger.
    ints1, ints2 = boxes1.round(), boxes2.round()
    grow = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    assert_close(box_iou(ints1, ints2, legacy_plus_one=True), box_iou(ints1 + grow, ints2 + grow))


def test_box_iou_gradcheck():
    boxes1 = torch.tensor([[0.0, 0.0, 10.0, 10.0], [2.0, 3.0, 8.0, 9.5]], dtype=torch.float64)
    boxes2 = torch.tensor(
        [[5.0, 4.0, 15.0, 12.0], [1.0, 1.5, 7.0, 6.0], [20.0, 20.0, 30.0, 30.0]],
        dtype=torch.float64,
    )
    assert torch.autograd.gradcheck(box_iou, (boxes1.requires_grad_(), boxes2.requires_grad_()))
    assert torch.autograd.gradcheck(
        matched_box_iou, (boxes1.detach().requires_grad_(), boxes2[:2].detach().requires_grad_())
    )


def test_box_iou_errors():
    boxes = random_boxes(3, 0)
    with pytest.raises(ValueError, match=r"boxes2 must be \[N, 4\], got \[3, 5\]"):
        box_iou(boxes, torch.zeros(3, 5))
    with pytest.raises(
        TypeError, match=r"boxes1 must be a floating-point tensor.*boxes1\.float\(\)"
    ):
        box_iou(boxes.long(), boxes)
    with pytest.raises(TypeError, match="same dtype, got torch.float32 and torch.float64"):
        box_iou(boxes, boxes.double())
    bad = boxes.clone()
    bad[1, 0] = bad[1, 2] + 1
    with pytest.raises(ValueError, match="boxes2 .*row 1"):
        box_iou(boxes, bad)


@pytest.mark.parametrize("legacy", [False, True])
def test_matched_box_iou_is_the_diagonal(legacy):
    boxes1, boxes2 = random_boxes(50, 7), random_boxes(50, 8)
    expected = box_iou(boxes1, boxes2, legacy_plus_one=legacy).diagonal()
    assert_close(matched_box_iou(boxes1, boxes2, legacy_plus_one=legacy), expected, rtol=0, atol=0)
    assert matched_box_iou(boxes1[:0], boxes2[:0]).shape == (0,)
    with pytest.raises(ValueError, match="same length, got 50 and 49"):
        matched_box_iou(boxes1, boxes2[:49])


# --- clipping and filtering --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_boxes_to_image_matches_torchvision(dtype):
    for n in SIZES:
        boxes = random_boxes(n, 20 + n, dtype) - 50  # some boxes leave the image on each side
        for image_size in [(300, 500), (500, 300)]:
            ours = clip_boxes_to_image(boxes, image_size)
            assert_close(ours, tvops.clip_boxes_to_image(boxes, image_size), rtol=0, atol=0)


def test_clip_boxes_to_image_height_width_order():
    boxes = torch.tensor([[-5.0, -5.0, 1000.0, 1000.0]])
    assert clip_boxes_to_image(boxes, (300, 500)).tolist() == [[0.0, 0.0, 500.0, 300.0]]
    with pytest.raises(ValueError, match="image_size must be positive"):
        clip_boxes_to_image(boxes, (300, -1))


@pytest.mark.parametrize("min_size", [0.0, 1.0, 20.0, 75.5])
def test_remove_small_boxes_matches_torchvision(min_size):
    for n in SIZES:
        boxes = random_boxes(n, 30 + n)
        ours = remove_small_boxes(boxes, min_size)
        assert ours.dtype == torch.int64
        assert torch.equal(ours, tvops.remove_small_boxes(boxes, min_size))


def test_remove_small_boxes_boundary_and_errors():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 9.99], [0.0, 0.0, 0.0, 0.0]])
    assert remove_small_boxes(boxes, 10.0).tolist() == [0]  # a side equal to min_size stays
    assert remove_small_boxes(boxes, 0.0).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="min_size must be a finite number >= 0, got -1"):
        remove_small_boxes(boxes, -1)
    with pytest.raises(ValueError, match="min_size"):
        remove_small_boxes(boxes, float("nan"))
