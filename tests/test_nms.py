"""Tests for coursepkg.ops.nms: torchvision.ops as the oracle, slow references, the notes' example."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torchvision.ops as tvops
from torch.testing import assert_close

import coursepkg.ops.nms as nms_module
from coursepkg.ops.boxes import box_iou
from coursepkg.ops.nms import (
    SoftNMSResult,
    batched_nms,
    malisiewicz_nms,
    malisiewicz_nms_steps,
    nms,
    nms_reference,
    nms_steps,
    soft_nms,
)

NOTES_BOXES = torch.tensor(
    [
        [100, 200, 350, 300],
        [100, 200, 400, 500],
        [100, 200, 300, 800],
        [1000, 100, 1150, 600],
        [1000, 100, 1200, 700],
    ],
    dtype=torch.float32,
)
NOTES_SCORES = torch.tensor([0.6, 0.7, 0.9, 0.7, 0.8])
THRESHOLDS = (0.0, 0.3, 0.5, 0.7, 1.0)


def random_detections(n, seed, dtype=torch.float32, clustered=True, tied=False):
    """``n`` boxes, either around n // 20 + 1 objects (like a detector's output) or uniform."""
    g = torch.Generator().manual_seed(seed)
    if clustered:
        centres = torch.rand(n // 20 + 1, 2, generator=g, dtype=torch.float64) * 500
        sizes = 20 + torch.rand(n // 20 + 1, 2, generator=g, dtype=torch.float64) * 100
        which = torch.randint(0, centres.shape[0], (n,), generator=g)
        ctr = (
            centres[which]
            + torch.randn(n, 2, generator=g, dtype=torch.float64) * sizes[which] * 0.15
        )
        wh = sizes[which] * torch.exp(torch.randn(n, 2, generator=g, dtype=torch.float64) * 0.15)
    else:
        ctr = torch.rand(n, 2, generator=g, dtype=torch.float64) * 500
        wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 100
    boxes = torch.cat([ctr - wh / 2, ctr + wh / 2], dim=1).to(dtype)
    scores = torch.rand(n, generator=g, dtype=dtype)
    if tied:
        scores = torch.randint(0, 4, (n,), generator=g).to(dtype) / 4  # four distinct values
    return boxes, scores


# --- the reference, the fast path and torchvision ---------------------------------------------


def nms_edge_cases():
    """(name, boxes, scores) edge cases: empty, one box, identical, ties, at threshold, zero area."""
    at_half = torch.tensor([[0.0, 0, 4, 1], [0.0, 0, 2, 1], [2.0, 0, 4, 1]])  # IoU 0.5 each
    yield "empty", torch.zeros(0, 4), torch.zeros(0)
    yield "one box", torch.tensor([[1.0, 2, 3, 4]]), torch.tensor([0.5])
    yield "identical", torch.tensor([[0.0, 0, 2, 2]] * 4), torch.tensor([0.2, 0.9, 0.9, 0.1])
    yield "ties", torch.tensor([[0.0, 0, 2, 2], [0.5, 0, 2.5, 2], [1.0, 0, 3, 2]]), torch.ones(3)
    yield "at threshold", at_half, torch.tensor([0.9, 0.8, 0.7])
    zero = torch.tensor([[1.0, 1, 1, 1], [1.0, 1, 1, 1], [0.0, 0, 2, 2], [2.0, 2, 2, 5]])
    yield "zero area", zero, torch.tensor([0.9, 0.8, 0.7, 0.6])


@pytest.mark.parametrize("case", list(nms_edge_cases()), ids=lambda case: case[0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nms_reference_equals_fast_path_and_torchvision_on_edge_cases(case, dtype):
    _, boxes, scores = case
    boxes, scores = boxes.to(dtype), scores.to(dtype)
    for threshold in (0.0, 0.3, 0.5, 0.7, 1.0):
        expected = tvops.nms(boxes, scores, threshold)
        assert torch.equal(nms_reference(boxes, scores, threshold), expected), threshold
        assert torch.equal(nms(boxes, scores, threshold), expected), threshold


@pytest.mark.parametrize(
    ("n", "clustered", "tied"), [(57, True, False), (400, True, True), (300, False, False)]
)
def test_nms_reference_equals_fast_path_and_torchvision_on_random_boxes(n, clustered, tied):
    boxes, scores = random_detections(n, seed=900 + n, clustered=clustered, tied=tied)
    for threshold in (0.3, 0.5, 0.7):
        reference = nms_reference(boxes, scores, threshold)
        assert torch.equal(reference, tvops.nms(boxes, scores, threshold)), threshold
        assert torch.equal(nms(boxes, scores, threshold), reference), threshold


# --- greedy NMS against torchvision ------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 10, 123, 700])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("clustered", [True, False])
def test_nms_matches_torchvision(n, dtype, clustered):
    boxes, scores = random_detections(n, seed=n, dtype=dtype, clustered=clustered)
    for threshold in THRESHOLDS:
        ours = nms(boxes, scores, threshold)
        assert ours.dtype == torch.int64
        assert torch.equal(ours, tvops.nms(boxes, scores, threshold)), threshold


@pytest.mark.parametrize("n", [7, 300, 900])
def test_nms_ties_follow_input_order_like_torchvision(n):
    boxes, scores = random_detections(n, seed=100 + n, tied=True)
    for threshold in (0.3, 0.5):
        ours = nms(boxes, scores, threshold)
        # torchvision's CPU kernel sorts stably, so its tie order is the input order too.
        assert torch.equal(ours, tvops.nms(boxes, scores, threshold))
        order = [(-scores[i].item(), i) for i in ours.tolist()]
        assert order == sorted(order)  # decreasing score, then increasing index


def test_nms_tie_examples():
    same = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3)
    assert nms(same, torch.ones(3), 0.5).tolist() == [0]  # the first of equal boxes wins
    apart = torch.tensor([[0.0, 0.0, 1.0, 1.0], [5.0, 5.0, 6.0, 6.0], [9.0, 9.0, 10.0, 10.0]])
    assert nms(apart, torch.tensor([0.5, 0.9, 0.5]), 0.5).tolist() == [1, 0, 2]


def test_nms_iou_exactly_at_threshold_survives():
    square = [0.0, 0.0, 10.0, 10.0]
    boxes = torch.tensor([square, [0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 10.0, 2.5]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert box_iou(boxes[:1], boxes[1:]).tolist() == [[0.5, 0.25]]  # exact in binary
    for dtype in (torch.float32, torch.float64):
        b, s = boxes.to(dtype), scores.to(dtype)
        assert nms(b, s, 0.5).tolist() == [0, 1, 2]  # IoU 0.5 is not > 0.5
        assert nms(b, s, 0.25).tolist() == [0, 2]  # box 1 (IoU 0.5) removed, box 2 (0.25) kept
        assert nms(b, s, 0.2).tolist() == [0]
        for t in (0.5, 0.25, 0.2):
            assert torch.equal(nms(b, s, t), tvops.nms(b, s, t))


def test_nms_suppression_chain_across_blocks():
    # Box i overlaps box i + 1 with IoU 0.6 and nothing else. Greedy keeps 0, 2, 4, ...: box 2
    # survives because the box that overlaps it (1) was itself removed. 300 boxes span several
    # of the implementation's blocks.
    n = 300
    x = torch.arange(n, dtype=torch.float32) * 2.5
    boxes = torch.stack([x, torch.zeros(n), x + 10, torch.full((n,), 10.0)], dim=1)
    scores = torch.linspace(1, 0.1, n)
    assert_close(box_iou(boxes[:1], boxes[1:3]), torch.tensor([[0.6, 1 / 3]]))
    assert nms(boxes, scores, 0.5).tolist() == list(range(0, n, 2))
    assert torch.equal(nms(boxes, scores, 0.5), tvops.nms(boxes, scores, 0.5))
    reversed_scores = scores.flip(0)
    assert torch.equal(nms(boxes, reversed_scores, 0.5), tvops.nms(boxes, reversed_scores, 0.5))


def test_nms_zero_area_and_identical_boxes():
    boxes = torch.tensor(
        [[5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    # Zero-area boxes have IoU 0 with everything: never suppressed, never suppressing.
    assert nms(boxes, scores, 0.5).tolist() == [0, 1, 2]
    assert torch.equal(nms(boxes, scores, 0.5), tvops.nms(boxes, scores, 0.5))
    assert nms(boxes, scores, 1.0).tolist() == [0, 1, 2, 3]  # IoU 1 is not > 1


def test_nms_notes_example_keeps_box_0():
    assert nms(NOTES_BOXES, NOTES_SCORES, 0.3).tolist() == [2, 4, 0]
    assert tvops.nms(NOTES_BOXES, NOTES_SCORES, 0.3).tolist() == [2, 4, 0]
    # Box 0 lies inside box 2's band (80% of box 0 is covered) but their IoU is only 0.16.
    assert_close(box_iou(NOTES_BOXES[:1], NOTES_BOXES[2:3]), torch.tensor([[200 * 100 / 125000]]))


def greedy_reference(boxes, scores, threshold):
    """The textbook loop with torchvision's IoU formula, in the boxes' dtype, one box at a time.

    Like torchvision's C++ kernel, the IoU is compared with the threshold in double precision.
    """
    x1, y1, x2, y2 = boxes.unbind(dim=1)
    area = (x2 - x1) * (y2 - y1)
    order = torch.sort(scores, descending=True, stable=True).indices.tolist()
    suppressed, keep = set(), []
    for position, i in enumerate(order):
        if i in suppressed:
            continue
        keep.append(i)
        rest = torch.tensor(order[position + 1 :], dtype=torch.int64)
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest])).clamp(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest])).clamp(min=0)
        inter = w * h
        iou = inter / (area[i] + area[rest] - inter)
        suppressed.update(rest[iou.double() > threshold].tolist())
    return torch.tensor(keep, dtype=torch.int64)


@pytest.mark.parametrize(("block", "last_block"), [(1, 1), (3, 10), (7, 64), (63, 65), (200, 200)])
def test_nms_block_sizes_do_not_change_the_result(monkeypatch, block, last_block):
    # (1, 1): every block is one box, the textbook loop; blocks of 7, 63, 65 and 200 boxes pack
    # their bit rows into partly filled bytes. Inputs of 700 and 300 boxes go through both kinds
    # of block.
    monkeypatch.setitem(nms_module._BLOCK, "cpu", (block, last_block))
    for n, tied in [(700, False), (300, True)]:
        boxes, scores = random_detections(n, seed=5, tied=tied)
        for threshold in (0.0, 0.5, 1.0):
            expected = tvops.nms(boxes, scores, threshold)
            assert torch.equal(nms(boxes, scores, threshold), expected), (n, threshold)
        idxs = torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(block))
        ours = batched_nms(boxes, scores, idxs, 0.5)
        assert torch.equal(ours, per_class_reference(boxes, scores, idxs, 0.5))


@pytest.mark.parametrize("offset", [-1, 0, 1, 2])
def test_nms_on_both_sides_of_the_last_block(offset):
    # Up to `last` boxes are decided in one block; one more box takes a first block of `block`
    # boxes, then the rest.
    n = nms_module._BLOCK["cpu"][1] + offset
    for seed, tied in [(0, False), (1, True)]:
        boxes, scores = random_detections(n, seed=600 + seed, tied=tied)
        for threshold in (0.3, 0.5, 0.7):
            assert torch.equal(nms(boxes, scores, threshold), tvops.nms(boxes, scores, threshold))


def test_nms_threshold_is_compared_exactly():
    # IoU k/10 and k/7 against thresholds given as Python floats (doubles). In float32, 3/10
    # rounds to 0.30000001 > 0.3: torchvision (which compares in double) suppresses at 0.3.
    for denominator in (10, 7):
        wide = [0.0, 0.0, float(denominator), 1.0]
        boxes = torch.tensor([wide] + [[0.0, 0.0, float(k), 1.0] for k in range(1, denominator)])
        scores = torch.linspace(1, 0.1, denominator)
        for dtype in (torch.float32, torch.float64):
            b, s = boxes.to(dtype), scores.to(dtype)
            for k in range(1, denominator):
                for threshold in (k / denominator, 0.3):
                    expected = tvops.nms(b, s, threshold)
                    assert torch.equal(nms(b, s, threshold), expected), (dtype, k, threshold)
    b32 = torch.tensor([[0.0, 0.0, 10.0, 1.0], [0.0, 0.0, 3.0, 1.0]])
    assert nms(b32, torch.tensor([0.9, 0.8]), 0.3).tolist() == [0]
    assert nms(b32.double(), torch.tensor([0.9, 0.8]).double(), 0.3).tolist() == [0, 1]


@pytest.mark.parametrize("n", [40, 500])
def test_nms_float16_matches_the_reference_loop(n):
    # torchvision has no float16 NMS on the CPU; the reference computes in float16 as it would.
    boxes, scores = random_detections(n, seed=700 + n, dtype=torch.float16)
    for threshold in (0.3, 0.5, 0.7):
        expected = greedy_reference(boxes, scores, threshold)
        assert torch.equal(nms(boxes, scores, threshold), expected), threshold
    boxes, scores = random_detections(n, seed=800 + n)
    assert torch.equal(nms(boxes, scores, 0.5), greedy_reference(boxes, scores, 0.5))


def test_nms_bfloat16_is_computed_in_float32_and_mixed_dtypes_work():
    boxes, scores = random_detections(300, seed=11)
    b16, s16 = boxes.bfloat16(), scores.bfloat16()  # many tied scores: input order decides
    assert torch.equal(nms(b16, s16, 0.5), tvops.nms(b16.float(), s16.float(), 0.5))
    assert torch.equal(nms(boxes, scores.half(), 0.5), tvops.nms(boxes, scores.half().float(), 0.5))
    assert torch.equal(
        nms(boxes.double(), scores, 0.5), tvops.nms(boxes.double(), scores.double(), 0.5)
    )


def test_nms_signed_zero_scores_tie():
    boxes = torch.tensor([[0.0, 0, 1, 1], [2.0, 0, 3, 1], [4.0, 0, 5, 1], [6.0, 0, 7, 1]])
    scores = torch.tensor([0.0, -0.0, 0.0, -1.0])
    assert nms(boxes, scores, 0.5).tolist() == [0, 1, 2, 3]
    assert torch.equal(nms(boxes, scores, 0.5), tvops.nms(boxes, scores, 0.5))


def test_nms_odd_inputs_without_numpy_warnings():
    boxes, scores = random_detections(200, seed=12)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # NumPy's 0/0 and overflow warnings
        # The validation reads values of tensors that need grad; torch warns, harmlessly.
        warnings.filterwarnings("ignore", "Converting a tensor with requires_grad", UserWarning)
        # Tensors that need grad, a non-contiguous view, and an empty input.
        grad_boxes, grad_scores = boxes.clone().requires_grad_(), scores.clone().requires_grad_()
        assert torch.equal(nms(grad_boxes, grad_scores, 0.5), tvops.nms(boxes, scores, 0.5))
        strided = boxes.t().contiguous().t()  # the same values, stored column by column
        assert not strided.is_contiguous()
        assert torch.equal(nms(strided, scores, 0.5), tvops.nms(boxes, scores, 0.5))
        empty = nms(boxes[:0], scores[:0], 0.5)
        assert empty.dtype == torch.int64 and empty.shape == (0,)
        # Zero-area boxes (0/0 = NaN) and coordinates whose widths overflow to inf.
        huge = torch.tensor(
            [[-3e38, -3e38, 3e38, 3e38], [-3e38, -3e38, 3e38, 3e38], [5.0, 5.0, 5.0, 5.0]] * 2
        )
        huge_scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
        assert torch.equal(nms(huge, huge_scores, 0.5), tvops.nms(huge, huge_scores, 0.5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_nms_on_cuda_matches_the_cpu():
    boxes, scores = random_detections(700, seed=13)
    idxs = torch.randint(0, 3, (700,), generator=torch.Generator().manual_seed(13))
    for dtype in (torch.float16, torch.float32, torch.float64):
        b, s = boxes.to(dtype), scores.to(dtype)
        keep = nms(b.cuda(), s.cuda(), 0.5)
        assert keep.device.type == "cuda" and keep.dtype == torch.int64
        assert torch.equal(keep.cpu(), nms(b, s, 0.5))
        keep = batched_nms(b.cuda(), s.cuda(), idxs.cuda(), 0.5)
        assert keep.device.type == "cuda"
        assert torch.equal(keep.cpu(), batched_nms(b, s, idxs, 0.5))
    assert torch.equal(nms(boxes.cuda(), scores.cuda(), 0.5).cpu(), tvops.nms(boxes, scores, 0.5))


def test_nms_errors():
    boxes, scores = random_detections(5, seed=0)
    with pytest.raises(
        ValueError, match=r"scores must be \[N\] with N = len\(boxes\) = 5, got \[4\]"
    ):
        nms(boxes, scores[:4], 0.5)
    with pytest.raises(
        ValueError, match=r"scores must be \[N\] with N = len\(boxes\) = 5, got \[5, 1\]"
    ):
        nms(boxes, scores[:, None], 0.5)
    with pytest.raises(TypeError, match="scores must be a floating-point tensor, got torch.int64"):
        nms(boxes, torch.arange(5), 0.5)
    with pytest.raises(TypeError, match="scores must be a torch.Tensor, got list"):
        nms(boxes, [0.1] * 5, 0.5)
    bad = scores.clone()
    bad[1] = float("nan")
    with pytest.raises(ValueError, match="scores must be finite"):
        nms(boxes, bad, 0.5)
    with pytest.raises(ValueError, match=r"iou_threshold must be in \[0, 1\], got 1.5"):
        nms(boxes, scores, 1.5)
    with pytest.raises(ValueError, match=r"iou_threshold must be in \[0, 1\], got nan"):
        nms(boxes, scores, float("nan"))
    with pytest.raises(TypeError, match="iou_threshold must be a number, got True"):
        nms(boxes, scores, True)
    with pytest.raises(TypeError, match=r"\.float\(\)"):
        nms(boxes.long(), scores, 0.5)
    with pytest.raises(ValueError, match=r"boxes must be \[N, 4\], got \[5, 5\]"):
        nms(torch.zeros(5, 5), scores, 0.5)


# --- batched NMS ---------------------------------------------------------------------------------


def per_class_reference(boxes, scores, idxs, threshold):
    """Slow reference: torchvision's nms on each class, merged by decreasing score (stable)."""
    keep = []
    for c in torch.unique(idxs):
        members = torch.nonzero(idxs == c).squeeze(1)
        keep.append(members[tvops.nms(boxes[members], scores[members], threshold)])
    keep = torch.cat(keep).sort().values if keep else torch.zeros(0, dtype=torch.int64)
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]


@pytest.mark.parametrize("n", [0, 1, 50, 700])
@pytest.mark.parametrize("tied", [False, True])
def test_batched_nms_matches_torchvision(n, tied):
    boxes, scores = random_detections(n, seed=200 + n, tied=tied)
    idxs = torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(n))
    for threshold in (0.3, 0.5, 0.7):
        ours = batched_nms(boxes, scores, idxs, threshold)
        assert torch.equal(ours, per_class_reference(boxes, scores, idxs, threshold))
        theirs = tvops.batched_nms(boxes, scores, idxs, threshold)
        if tied:  # torchvision's final merge sort is not stable: same set, same scores order
            assert set(ours.tolist()) == set(theirs.tolist())
            assert torch.equal(scores[ours], scores[theirs])
        else:
            assert torch.equal(ours, theirs)


def test_batched_nms_classes_do_not_suppress_each_other():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3)
    scores = torch.tensor([0.5, 0.9, 0.7])
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [1, 2]
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 2], dtype=torch.int32), 0.5).tolist() == [
        1,
        2,
        0,
    ]
    # One class: plain NMS.
    many, many_scores = random_detections(300, seed=9)
    same = torch.zeros(300, dtype=torch.int64)
    assert torch.equal(batched_nms(many, many_scores, same, 0.5), nms(many, many_scores, 0.5))


def test_batched_nms_errors():
    boxes, scores = random_detections(4, seed=0)
    with pytest.raises(TypeError, match="idxs must be an integer tensor, got torch.float32"):
        batched_nms(boxes, scores, torch.zeros(4), 0.5)
    with pytest.raises(ValueError, match=r"idxs must be \[N\] with N = 4, got \[3\]"):
        batched_nms(boxes, scores, torch.zeros(3, dtype=torch.int64), 0.5)
    with pytest.raises(TypeError, match="idxs must be a torch.Tensor"):
        batched_nms(boxes, scores, [0, 0, 0, 0], 0.5)


# --- the step-through generator ------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 40, 300])
def test_nms_steps_agree_with_nms(n):
    boxes, scores = random_detections(n, seed=300 + n, tied=n == 300)
    steps = list(nms_steps(boxes, scores, 0.5))
    assert [step.picked for step in steps] == nms(boxes, scores, 0.5).tolist()
    for step in steps:
        assert torch.equal(step.candidates, step.candidates.sort().values)
        assert_close(step.ious, box_iou(boxes[step.picked][None], boxes[step.candidates])[0])
        assert torch.equal(step.suppressed, step.candidates[step.ious > 0.5])
    assert steps == [] or steps[-1].kept == nms(boxes, scores, 0.5).tolist()


def test_nms_steps_notes_example():
    steps = list(nms_steps(NOTES_BOXES, NOTES_SCORES, 0.3))
    assert [s.picked for s in steps] == [2, 4, 0]
    assert steps[0].candidates.tolist() == [0, 1, 3, 4]
    assert_close(steps[0].ious, torch.tensor([0.16, 0.4, 0.0, 0.0]))
    assert steps[0].suppressed.tolist() == [1]
    assert steps[1].suppressed.tolist() == [3]
    assert steps[2].suppressed.tolist() == []


# --- the notes' NMS (Malisiewicz) ----------------------------------------------------------------


def notes_nms_reference(boxes, probs, overlap_thresh, plus_one=1.0):
    """The notes' numpy code, with np.argsort made stable and descending-by-index for ties.

    The notes pop the last index of ``np.argsort(probs)``; sorting ``-probs`` stably and popping
    the first gives the same picks when scores are distinct, and input order among ties.
    """
    boxes = boxes.astype(float)
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1 + plus_one) * (y2 - y1 + plus_one)
    idxs = list(np.argsort(-probs, kind="stable"))
    pick = []
    while idxs:
        i, rest = idxs[0], np.array(idxs[1:], dtype=int)
        pick.append(int(i))
        w = np.maximum(0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + plus_one)
        h = np.maximum(0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + plus_one)
        overlap = w * h / np.maximum(area[rest], np.finfo(float).tiny)
        idxs = [int(j) for j, o in zip(rest, overlap, strict=True) if not o > overlap_thresh]
    return pick


def test_malisiewicz_notes_example():
    assert malisiewicz_nms(NOTES_BOXES, NOTES_SCORES, 0.3).tolist() == [2, 4]
    first, second = malisiewicz_nms_steps(NOTES_BOXES, NOTES_SCORES, 0.3)
    assert first.picked == 2
    assert first.candidates.tolist() == [0, 1, 3, 4]
    assert first.widths.tolist() == [201, 201, 0, 0]
    assert first.heights.tolist() == [101, 301, 401, 501]
    expected = torch.tensor([201 * 101 / (251 * 101), 201 * 301 / (301 * 301), 0.0, 0.0])
    assert_close(first.overlaps, expected)
    assert [round(v, 2) for v in first.overlaps.tolist()] == [0.80, 0.67, 0.0, 0.0]
    assert first.suppressed.tolist() == [0, 1]
    assert second.picked == 4 and second.candidates.tolist() == [3]
    assert second.overlaps.tolist() == [1.0]  # box 3 lies entirely inside box 4
    assert second.suppressed.tolist() == [3]


@pytest.mark.parametrize("legacy", [True, False])
@pytest.mark.parametrize("tied", [False, True])
def test_malisiewicz_matches_the_notes_code(legacy, tied):
    for n in (0, 1, 30, 200):
        boxes, scores = random_detections(n, seed=400 + n, dtype=torch.float64, tied=tied)
        boxes = boxes.round()
        for threshold in (0.3, 0.5):
            ours = malisiewicz_nms(boxes, scores, threshold, legacy_plus_one=legacy)
            reference = notes_nms_reference(
                boxes.numpy(), scores.numpy(), threshold, 1.0 if legacy else 0.0
            )
            assert ours.tolist() == reference


def test_malisiewicz_is_stricter_than_iou_nms():
    # A small box inside a big one: IoU 0.04 (kept by IoU-NMS at 0.3), overlap 1 (removed).
    boxes = torch.tensor([[0.0, 0.0, 100.0, 100.0], [10.0, 10.0, 30.0, 30.0]])
    scores = torch.tensor([0.9, 0.8])
    assert nms(boxes, scores, 0.3).tolist() == [0, 1]
    assert malisiewicz_nms(boxes, scores, 0.3, legacy_plus_one=False).tolist() == [0]
    # ... and asymmetric: with the small box first, the big one is only 4% covered.
    assert malisiewicz_nms(boxes, scores.flip(0), 0.3, legacy_plus_one=False).tolist() == [1, 0]


def test_malisiewicz_errors():
    with pytest.raises(ValueError, match=r"overlap_threshold must be in \[0, 1\], got -0.1"):
        malisiewicz_nms(NOTES_BOXES, NOTES_SCORES, -0.1)
    with pytest.raises(ValueError, match="scores must be"):
        list(malisiewicz_nms_steps(NOTES_BOXES, NOTES_SCORES[:3], 0.3))


# --- soft-NMS ------------------------------------------------------------------------------------


def iou_python(a, b):
    """IoU of two xyxy boxes given as lists of floats."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def soft_nms_reference(boxes, scores, method, sigma, nt, threshold):
    """Slow reference: Algorithm 1 of Bodla et al. (2017), one box at a time, in Python floats."""
    boxes, scores = boxes.tolist(), scores.tolist()
    remaining = [i for i in range(len(boxes)) if scores[i] >= threshold]
    keep, kept_scores = [], []
    while remaining:
        m = max(remaining, key=lambda i: (scores[i], -i))  # highest score, first index on ties
        keep.append(m)
        kept_scores.append(scores[m])
        remaining.remove(m)
        for i in remaining:
            iou = iou_python(boxes[m], boxes[i])
            if method == "linear":
                scores[i] *= 1 - iou if iou >= nt else 1.0
            else:
                scores[i] *= math.exp(-(iou**2) / sigma)
        remaining = [i for i in remaining if scores[i] >= threshold]
    return keep, kept_scores


@pytest.mark.parametrize("method", ["gaussian", "linear"])
@pytest.mark.parametrize("n", [0, 1, 25, 80])
def test_soft_nms_matches_reference(method, n):
    boxes, scores = random_detections(n, seed=500 + n, dtype=torch.float64)
    result = soft_nms(
        boxes, scores, method=method, sigma=0.5, iou_threshold=0.3, score_thresh=0.05
    )
    assert isinstance(result, SoftNMSResult)
    keep, kept_scores = soft_nms_reference(boxes, scores, method, 0.5, 0.3, 0.05)
    assert result.keep.tolist() == keep
    assert_close(result.scores, torch.tensor(kept_scores, dtype=torch.float64))
    assert (result.scores[:-1] >= result.scores[1:]).all()  # picked in decreasing order


def test_soft_nms_known_values_and_limits():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [50.0, 50, 60, 60]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    linear = soft_nms(boxes, scores, method="linear", iou_threshold=0.3)
    assert linear.keep.tolist() == [0, 2, 1]
    assert_close(linear.scores, torch.tensor([0.9, 0.7, 0.8 * 0.5]))
    gaussian = soft_nms(boxes, scores, sigma=0.5)
    # exp(-0.5**2 / 0.5) = 0.61: box 1 drops to 0.49, below box 2.
    assert gaussian.keep.tolist() == [0, 2, 1]
    assert_close(gaussian.scores, torch.tensor([0.9, 0.7, 0.8 * math.exp(-0.25 / 0.5)]))
    # A tiny sigma wipes out every overlapping box: hard NMS at threshold 0.
    many, many_scores = random_detections(200, seed=7, dtype=torch.float64)
    hard = soft_nms(many, many_scores, sigma=1e-9, score_thresh=1e-6).keep
    assert torch.equal(hard, nms(many, many_scores, 0.0))
    # The original scores are not modified.
    assert scores.tolist() == pytest.approx([0.9, 0.8, 0.7])


def test_soft_nms_errors():
    with pytest.raises(ValueError, match="method must be 'gaussian' or 'linear', got 'hard'"):
        soft_nms(NOTES_BOXES, NOTES_SCORES, method="hard")
    with pytest.raises(ValueError, match="sigma must be a finite number > 0, got 0"):
        soft_nms(NOTES_BOXES, NOTES_SCORES, sigma=0)
    with pytest.raises(ValueError, match="score_thresh must be a number >= 0, got -1"):
        soft_nms(NOTES_BOXES, NOTES_SCORES, score_thresh=-1)
    with pytest.raises(ValueError, match=r"iou_threshold must be in \[0, 1\]"):
        soft_nms(NOTES_BOXES, NOTES_SCORES, iou_threshold=2.0)
