"""Non-maximum suppression: keep the best box of every cluster of overlapping detections.

Greedy NMS: sort the boxes by score; take the best remaining box, keep it, and drop every
remaining box whose IoU with it is **greater than** ``iou_threshold``; repeat. That loop, written
to be read, is :func:`nms_reference`, the one the chapter shows. :func:`nms` computes the same
keeps faster (the tests check that it equals the reference and ``torchvision.ops.nms``): the
same keeps, in the same order, as ``torchvision.ops.nms`` on the CPU: equal scores are ranked by
input order (a stable sort), and an IoU exactly equal to the threshold does not suppress.
:func:`batched_nms` gives the same keeps as ``torchvision.ops.batched_nms`` (whose order among
equal scores can differ for large inputs, where it merges classes with an unstable sort).

Also here: the lecture notes' "fast" NMS of Malisiewicz (overlap measured as intersection
over the area of the *other* box, with the "+1" convention), Soft-NMS (Bodla et al., 2017), and
step-by-step generators (:func:`nms_steps`, :func:`malisiewicz_nms_steps`) for the chapter's
figures.

Shapes used in this module:

* ``boxes``: ``[N, 4]`` float xyxy; ``scores``: ``[N]`` float; ``idxs``: ``[N]`` int (class ids).
* results: ``[K]`` int64 indices into ``boxes``, in decreasing score order (ties: input order).

Chapter: book/03_nms
"""

from __future__ import annotations

import ctypes
import functools
import math
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import Tensor

from coursepkg.ops.boxes import box_iou
from coursepkg.ops.validation import check_boxes

# The fast path (:func:`_nms_core`) decides the boxes a block at a time: a block's boxes are
# compared with every box still in play, in one vectorised step, then decided in order on the
# host. A larger block means fewer passes (each some 20 torch calls, and on a GPU one transfer)
# but more comparisons wasted on block boxes that turn out to be suppressed. Once at most
# ``last`` boxes remain, one last block takes them all. The CPU sizes were fastest on clustered
# detections, N = 1,000 to 5,000 (benchmarks/bench_boxes_nms.py); on a GPU the comparisons are
# nearly free and each block costs a host-device round trip, so its blocks are large.
_BLOCK = {"cpu": (64, 200), "gpu": (2048, 4096)}  # (block, last block)
_BIT_WEIGHTS = 2 ** torch.arange(8, dtype=torch.uint8)  # [8]: bit j of a packed byte


def _check_threshold(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not 0 <= value <= 1:  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def _check_scores(scores: Tensor, boxes: Tensor, name: str = "scores") -> None:
    if not isinstance(scores, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(scores).__name__}")
    if not scores.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {scores.dtype}")
    if scores.shape != boxes.shape[:1]:
        raise ValueError(
            f"{name} must be [N] with N = len(boxes) = {boxes.shape[0]}, got {list(scores.shape)}"
        )
    if scores.device != boxes.device:
        raise ValueError(
            f"{name} must be on the device of boxes ({boxes.device}), got {scores.device}"
        )
    if scores.numel() > 0 and not all(map(math.isfinite, torch.aminmax(scores))):
        raise ValueError(f"{name} must be finite (no NaN or inf)")


def nms_reference(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS written to be read: the loop of the chapter (R-CNN, Girshick et al. 2014, §2.1).

    Sort the boxes by score; keep the best one left; drop every remaining box whose IoU with it
    is greater than ``iou_threshold`` (Eq. (eq-nms-rule) of book/03_nms); repeat until no box is
    left. The tests check that the
    fast :func:`nms` (and ``torchvision.ops.nms``) return exactly these indices, on seeded random
    boxes and on edge cases (ties, IoU exactly at the threshold, zero-area boxes).

    Args:
        boxes: ``[N, 4]`` xyxy boxes, float32 or float64.
        scores: ``[N]`` scores.
        iou_threshold: in ``[0, 1]``.

    Returns:
        ``[K]`` int64 indices of the kept boxes, in decreasing score order (ties: input order).

    Chapter: book/03_nms
    """
    # Best first; a stable sort visits equal scores in input order, as torchvision does.
    remaining = torch.sort(scores, descending=True, stable=True).indices.tolist()
    keep = []
    while remaining:
        best, rest = remaining[0], remaining[1:]
        keep.append(best)  # the best box left is never suppressed
        ious = box_iou(boxes[best][None], boxes[rest])[0].tolist()  # [R] as Python floats
        # Strictly greater suppresses: a box exactly at the threshold stays. The comparison is
        # made in double precision, like torchvision's (a float IoU against a double threshold).
        remaining = [i for i, iou in zip(rest, ious, strict=True) if iou <= iou_threshold]
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device)


@functools.lru_cache(maxsize=64)
def _largest_at_most(value: float, dtype: torch.dtype) -> float:
    """The largest number of ``dtype`` that is ``<= value`` (as a Python float).

    For every ``x`` of that dtype, ``x > result`` exactly when ``x > value``. torchvision compares
    its float IoU with the threshold in double precision (C++ promotes the float); comparing with
    the threshold merely rounded to float32 would disagree on one IoU: float32(0.3) = 0.30000001
    is ``> 0.3``, so 3/10 suppresses at threshold 0.3, but it is not ``> float32(0.3)``.
    Cached: a detector asks for the same few thresholds at every step.
    """
    rounded = torch.tensor(value, dtype=dtype)  # nearest, possibly above
    if rounded.item() > value:
        rounded = torch.nextafter(rounded, torch.zeros_like(rounded))
    return rounded.item()


def _corner_rows(boxes: Tensor) -> Tensor:
    """``[5, N]`` rows ``x1, y1, -x2, -y2, area`` (the area as torchvision computes it)."""
    x1, y1, x2, y2 = boxes.unbind(1)
    return torch.stack((x1, y1, -x2, -y2, (x2 - x1) * (y2 - y1)))


def _iou_above(block: Tensor, others: Tensor, limit: float) -> Tensor:
    """``IoU > limit`` for every pair of ``block`` ``[5, B]`` and ``others`` ``[5, R]``: ``[B, R]`` bool.

    Columns are boxes as :func:`_corner_rows` stores them. With the far corners negated, every
    edge of an intersection is a ``maximum`` (``max(-a, -b) = -min(a, b)``), so one ``maximum``
    gives all four and one sum gives minus the width and height. Negation is exact, so the IoUs
    are torchvision's bit for bit and IoUs exactly at the threshold agree.
    """
    # ``...`` lets :func:`_nms_grouped` pass ``[5, G, S]`` (G groups at once): ``[G, S, S]``.
    edges = torch.maximum(block[:4, ..., None], others[:4, ..., None, :])  # [4, B, R]
    minus_wh = edges[:2].add_(edges[2:]).clamp_(max=0)  # [2, B, R]: -w, -h (0 if apart)
    inter = minus_wh[0].mul_(minus_wh[1])  # [B, R]
    # 0 only for two empty boxes
    union = (block[4, ..., None] + others[4, ..., None, :]).sub_(inter)
    return inter.div_(union) > limit  # 0/0 = NaN is not > limit


def _greedy_within_block(over: Tensor) -> list[int]:
    """The greedy decisions inside one block, from its ``[B, B]`` matrix of ``IoU > t``.

    Each row is packed into bytes on the device, copied to the host once and read as one Python
    integer whose bit ``j`` is set when box ``i`` suppresses box ``j`` (the bitmask trick of
    torchvision's CUDA kernel); deciding a box is then one bit test. Bits ``j <= i`` are
    harmless: those boxes are already decided when box ``i`` is kept.
    """
    size = over.shape[0]
    padded = torch.nn.functional.pad(over, (0, -size % 8)).view(size, -1, 8)  # [B, B8, 8]
    weights = _BIT_WEIGHTS if over.is_cpu else _BIT_WEIGHTS.to(over.device)
    packed = padded.to(torch.uint8).mul_(weights).sum(2, dtype=torch.uint8)
    packed = packed.cpu().contiguous()  # [B, B8]: the one transfer
    row_bytes = packed.shape[1]
    data = ctypes.string_at(packed.data_ptr(), packed.numel())  # the bytes, read in C
    suppressed, keep = 0, []
    for i in range(size):
        if not suppressed >> i & 1:
            keep.append(i)
            suppressed |= int.from_bytes(data[i * row_bytes : (i + 1) * row_bytes], "little")
    return keep


def _nms_core(
    boxes: Tensor, scores: Tensor, iou_threshold: float, labels: Tensor | None = None
) -> Tensor:
    """Greedy NMS (per class when ``labels`` are given) on inputs already validated.

    Same result as :func:`nms_reference`, organised for speed. The boxes still in play are
    taken a block at a time, best first:

    1. the IoU of each box of the block with every box in play, in one vectorised step;
    2. the greedy decisions inside the block, in order, on the host (one transfer per block);
    3. the block's kept boxes remove every box further down the list that they overlap; the
       survivors form the next blocks.

    The work is about (kept boxes) x (boxes in play), like torchvision's C++ loop. Everything
    stays on the boxes' device except the ``[B, B]`` bits of step 2. bfloat16 boxes are compared
    in float32.

    Args:
        boxes: ``[N, 4]`` xyxy; scores: ``[N]``; iou_threshold: in ``[0, 1]``;
        labels: ``[N]`` integer class ids, or ``None``.

    Returns:
        ``[K]`` int64 kept indices, best first.
    """
    if boxes.dtype == torch.bfloat16:  # float32 holds its values exactly
        boxes = boxes.float()
    block, last = _BLOCK["cpu" if boxes.device.type == "cpu" else "gpu"]
    order = torch.sort(scores.detach(), descending=True, stable=True).indices  # [N]
    rows = _corner_rows(boxes.detach()[order])  # [5, R] boxes in play, best first
    classes = None if labels is None else labels[order]  # [R]
    position = torch.arange(len(order), device=boxes.device)  # [R] place in ``order``
    limit = _largest_at_most(iou_threshold, rows.dtype)
    kept = []
    while len(position) > 0:
        size = block if len(position) > last else len(position)
        over = _iou_above(rows[:, :size], rows, limit)  # [B, R]
        if classes is not None:  # batched NMS: boxes of different classes never suppress
            over &= classes[:size, None] == classes[None, :]
        keep = _greedy_within_block(over[:, :size])  # [k] Python ints
        kept.append(position[keep])
        hit = over[keep, size:].any(dim=0)  # [R - B]: overlaps a kept box of the block
        survivors = hit.logical_not_().nonzero().squeeze(1).add_(size)  # [R'] among the rest
        rows, position = rows[:, survivors], position[survivors]
        if classes is not None:
            classes = classes[survivors]
    return order[torch.cat(kept)] if kept else order  # [K]


# Largest ``groups x size x size`` IoU block :func:`_nms_grouped` builds (about 16 bytes a pair
# while it computes); beyond it, it falls back to :func:`_nms_core`.
_GROUPED_MAX_PAIRS = 2**22
_GROUPED_CHUNK_PAIRS = 2**16  # pairs per step of the IoU computation


def _nms_grouped(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """Per-group greedy NMS that compares boxes only inside their group; inputs already validated.

    The same keeps, in the same order, as ``_nms_core(boxes, scores, iou_threshold, groups)``,
    but faster when there are many groups of few boxes each (a dense detector's candidates:
    one group per image and class, most boxes kept). :func:`_nms_core` compares each block with
    every box still in play, of any group; here the boxes are sorted by group (best first inside
    each), padded to ``[G, S]``, and one ``[G, S, S]`` IoU block holds every pair that can
    suppress. The greedy pass then reads each group's packed bit rows on the host, as
    :func:`_greedy_within_block` does. Falls back to :func:`_nms_core` when ``G * S * S`` would
    exceed ``_GROUPED_MAX_PAIRS`` (one very large group).

    Args:
        boxes: ``[N, 4]`` xyxy; scores: ``[N]``; groups: ``[N]`` integer group ids;
        iou_threshold: in ``[0, 1]``.

    Returns:
        ``[K]`` int64 kept indices, by decreasing score (ties: input order).
    """
    if boxes.dtype == torch.bfloat16:
        boxes = boxes.float()
    device = boxes.device
    order = torch.sort(scores.detach(), descending=True, stable=True).indices  # [N]
    order = order[torch.sort(groups[order], stable=True).indices]  # group-major, best first
    if len(order) == 0:
        return order
    _, counts = torch.unique_consecutive(groups[order], return_counts=True)  # [G]
    size = int(counts.max())
    if len(counts) * size * size > _GROUPED_MAX_PAIRS:
        return _nms_core(boxes, scores, iou_threshold, groups)
    starts = counts.cumsum(0) - counts  # [G] first place of each group in ``order``
    group_of = torch.repeat_interleave(torch.arange(len(counts), device=device), counts)  # [N]
    slot = torch.arange(len(order), device=device) - starts[group_of]  # [N] place in its group
    rows = boxes.new_zeros(5, len(counts), size)  # [5, G, S], padding boxes are never visited
    rows[:, group_of, slot] = _corner_rows(boxes.detach()[order])
    limit = _largest_at_most(iou_threshold, rows.dtype)
    # A few groups at a time, so that the temporaries stay small enough for the caches.
    step = max(1, _GROUPED_CHUNK_PAIRS // (size * size))
    over = torch.cat(
        [
            _iou_above(rows[:, g : g + step], rows[:, g : g + step], limit)
            for g in range(0, len(counts), step)
        ]
    )  # [G, S, S]
    # Pack each row's bits (bit j: suppresses box j of the group), one transfer to the host.
    padded = torch.nn.functional.pad(over, (0, -size % 8)).view(len(counts), size, -1, 8)
    weights = _BIT_WEIGHTS if over.is_cpu else _BIT_WEIGHTS.to(device)
    packed = padded.to(torch.uint8).mul_(weights).sum(3, dtype=torch.uint8).cpu().contiguous()
    row_bytes = packed.shape[2]
    data = ctypes.string_at(packed.data_ptr(), packed.numel())
    kept = []
    for group, (start, count) in enumerate(zip(starts.tolist(), counts.tolist(), strict=True)):
        suppressed = 0
        for i in range(count):
            if not suppressed >> i & 1:
                kept.append(start + i)
                at = (group * size + i) * row_bytes
                suppressed |= int.from_bytes(data[at : at + row_bytes], "little")
    keep = order[torch.tensor(kept, dtype=torch.int64, device=device)].sort().values  # input order
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression, identical to ``torchvision.ops.nms``.

    Visit the boxes in decreasing score order; keep a box unless a box kept before it has
    ``IoU > iou_threshold`` with it (strictly greater: IoU equal to the threshold survives);
    implements Eq. (eq-nms-rule) of book/03_nms. Equal scores are visited in input order (a stable sort), as torchvision does on the CPU.
    Validates the inputs, then runs the fast path, tested equal to :func:`nms_reference`; it
    stays on the boxes' device but for one small transfer per block of boxes. bfloat16 boxes are
    compared in float32.

    Args:
        boxes: ``[N, 4]`` xyxy boxes.
        scores: ``[N]`` floating-point scores, finite.
        iou_threshold: in ``[0, 1]``; 0.5 to 0.7 is usual.

    Returns:
        ``[K]`` int64 indices of the kept boxes, in decreasing score order.

    Raises:
        TypeError, ValueError: for invalid boxes or scores, mismatched lengths, or a threshold
            outside ``[0, 1]``.

    Chapter: book/03_nms
    """
    check_boxes(boxes)
    _check_scores(scores, boxes)
    iou_threshold = _check_threshold(iou_threshold, "iou_threshold")
    return _nms_core(boxes, scores, iou_threshold)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Per-class NMS: boxes only suppress boxes with the same ``idxs`` value.

    The same keeps as ``torchvision.ops.batched_nms``, computed exactly: torchvision shifts each
    class by a large offset and runs one NMS, which can round an IoU differently near the
    threshold; here the pairs of different classes are masked out instead. Equivalent to running
    :func:`nms` on each class and merging the results by score.

    Args:
        boxes: ``[N, 4]`` xyxy boxes.
        scores: ``[N]`` floating-point scores.
        idxs: ``[N]`` integer class (or image) ids.
        iou_threshold: in ``[0, 1]``.

    Returns:
        ``[K]`` int64 indices of the kept boxes, in decreasing score order across all classes
        (ties in input order).

    Chapter: book/03_nms
    """
    check_boxes(boxes)
    _check_scores(scores, boxes)
    if not isinstance(idxs, Tensor):
        raise TypeError(f"idxs must be a torch.Tensor, got {type(idxs).__name__}")
    if idxs.is_floating_point() or idxs.is_complex() or idxs.dtype == torch.bool:
        raise TypeError(f"idxs must be an integer tensor, got {idxs.dtype}")
    if idxs.shape != scores.shape:
        raise ValueError(f"idxs must be [N] with N = {boxes.shape[0]}, got {list(idxs.shape)}")
    if idxs.device != boxes.device:
        raise ValueError(f"idxs must be on the device of boxes ({boxes.device}), got {idxs.device}")
    iou_threshold = _check_threshold(iou_threshold, "iou_threshold")
    return _nms_core(boxes, scores, iou_threshold, idxs)


class NMSStep(NamedTuple):
    """One step of greedy NMS (see :func:`nms_steps`).

    Attributes:
        picked: index of the best remaining box, which is kept.
        candidates: ``[R]`` int64 indices of the other boxes still in play, increasing.
        ious: ``[R]`` IoU of each candidate with the picked box.
        suppressed: ``[S]`` int64 candidates removed at this step (``ious > iou_threshold``).
        kept: indices kept so far, this step's ``picked`` last.
    """

    picked: int
    candidates: Tensor
    ious: Tensor
    suppressed: Tensor
    kept: list[int]


def nms_steps(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Iterator[NMSStep]:
    """Greedy NMS one kept box at a time, written as the textbook loop, for figures.

    Implements Eq. (eq-nms-rule) of book/03_nms, one kept box per step.

    ``[step.picked for step in nms_steps(...)]`` equals ``nms(...).tolist()``.

    Args:
        boxes: ``[N, 4]`` xyxy boxes.
        scores: ``[N]`` scores.
        iou_threshold: in ``[0, 1]``.

    Yields:
        One :class:`NMSStep` per kept box.

    Raises:
        TypeError, ValueError: as :func:`nms`, when the iteration starts (it is a generator).

    Chapter: book/03_nms
    """
    check_boxes(boxes)
    _check_scores(scores, boxes)
    iou_threshold = _check_threshold(iou_threshold, "iou_threshold")
    remaining = torch.sort(scores, descending=True, stable=True).indices  # best first
    kept: list[int] = []
    while remaining.numel() > 0:
        picked, others = remaining[0], remaining[1:]
        kept.append(int(picked))
        ious = box_iou(boxes[picked][None], boxes[others])[0]  # [R]
        by_index = torch.argsort(others)
        yield NMSStep(
            picked=int(picked),
            candidates=others[by_index],
            ious=ious[by_index],
            suppressed=others[ious > iou_threshold].sort().values,
            kept=list(kept),
        )
        remaining = others[ious <= iou_threshold]


class MalisiewiczStep(NamedTuple):
    """One step of the notes' fast NMS (see :func:`malisiewicz_nms_steps`).

    Attributes:
        picked: index of the best remaining box, which is kept.
        candidates: ``[R]`` int64 indices of the other boxes still in play, increasing.
        widths: ``[R]`` intersection widths with the picked box (``+ 1`` in legacy mode).
        heights: ``[R]`` intersection heights.
        overlaps: ``[R]`` intersection area divided by the candidate's own area.
        suppressed: ``[S]`` int64 candidates removed (``overlaps > overlap_threshold``).
    """

    picked: int
    candidates: Tensor
    widths: Tensor
    heights: Tensor
    overlaps: Tensor
    suppressed: Tensor


def malisiewicz_nms_steps(
    boxes: Tensor, scores: Tensor, overlap_threshold: float, *, legacy_plus_one: bool = True
) -> Iterator[MalisiewiczStep]:
    """The lecture notes' NMS (Malisiewicz's "fast" variant), one kept box at a time.

    Like greedy NMS, except that the overlap of a candidate with the picked box is
    ``|picked ∩ candidate| / |candidate|``: the fraction of the *candidate* that is covered, not
    the IoU (Eq. (eq-nms-overlap) of book/03_nms). A small box inside a big one is covered entirely (overlap 1) even when their IoU is
    small. ``legacy_plus_one=True`` (the default here, as in the notes) adds 1 to every width and
    height. Equal scores are picked in input order; the notes' code (``np.argsort``, then pop
    from the end) would pick the later box first.

    Args:
        boxes: ``[N, 4]`` xyxy boxes.
        scores: ``[N]`` scores.
        overlap_threshold: in ``[0, 1]``; the notes use 0.3.
        legacy_plus_one: the notes' pixel-inclusive convention.

    Yields:
        One :class:`MalisiewiczStep` per kept box.

    Raises:
        TypeError, ValueError: as :func:`nms`, when the iteration starts (it is a generator).

    Chapter: book/03_nms
    """
    check_boxes(boxes)
    _check_scores(scores, boxes)
    overlap_threshold = _check_threshold(overlap_threshold, "overlap_threshold")
    one = 1.0 if legacy_plus_one else 0.0
    area = (boxes[:, 2] - boxes[:, 0] + one) * (boxes[:, 3] - boxes[:, 1] + one)  # [N]
    remaining = torch.sort(scores, descending=True, stable=True).indices  # best first
    while remaining.numel() > 0:
        picked, others = int(remaining[0]), remaining[1:]
        lt = torch.maximum(boxes[picked, :2], boxes[others, :2])  # [R, 2]
        rb = torch.minimum(boxes[picked, 2:], boxes[others, 2:])  # [R, 2]
        wh = (rb - lt + one).clamp(min=0)  # [R, 2]
        # The denominator is the candidate's own area (a zero-area candidate gets overlap 0).
        overlaps = wh[:, 0] * wh[:, 1] / area[others].clamp(min=torch.finfo(area.dtype).tiny)
        gone = overlaps > overlap_threshold
        by_index = torch.argsort(others)
        yield MalisiewiczStep(
            picked=picked,
            candidates=others[by_index],
            widths=wh[by_index, 0],
            heights=wh[by_index, 1],
            overlaps=overlaps[by_index],
            suppressed=others[gone].sort().values,
        )
        remaining = others[~gone]


def malisiewicz_nms(
    boxes: Tensor, scores: Tensor, overlap_threshold: float, *, legacy_plus_one: bool = True
) -> Tensor:
    """The lecture notes' NMS: overlap = intersection / area of the other box (see the steps).

    Implements Eq. (eq-nms-overlap) of book/03_nms. With ``legacy_plus_one=True`` it returns the
    same indices as the notes' numpy ``non_max_suppression`` (the chapter checks it on random
    boxes), except for equal scores, which it visits in input order.

    On the notes' five boxes with scores ``[0.6, 0.7, 0.9, 0.7, 0.8]`` and threshold 0.3 it
    keeps ``[2, 4]``, where IoU-based :func:`nms` keeps ``[2, 4, 0]``.

    Args:
        boxes: ``[N, 4]`` xyxy boxes.
        scores: ``[N]`` scores.
        overlap_threshold: in ``[0, 1]``.
        legacy_plus_one: the notes' pixel-inclusive convention (default ``True`` here).

    Returns:
        ``[K]`` int64 indices of the kept boxes, in decreasing score order.

    Chapter: book/03_nms
    """
    steps = malisiewicz_nms_steps(boxes, scores, overlap_threshold, legacy_plus_one=legacy_plus_one)
    return torch.tensor([step.picked for step in steps], dtype=torch.int64, device=boxes.device)


class SoftNMSResult(NamedTuple):
    """Output of :func:`soft_nms`.

    Attributes:
        keep: ``[K]`` int64 indices of the boxes that end with a score above the threshold, in
            the order they were picked (decreasing rescored score).
        scores: ``[K]`` their rescored scores.
    """

    keep: Tensor
    scores: Tensor


def soft_nms(
    boxes: Tensor,
    scores: Tensor,
    *,
    method: str = "gaussian",
    sigma: float = 0.5,
    iou_threshold: float = 0.3,
    score_thresh: float = 0.001,
) -> SoftNMSResult:
    """Soft-NMS (Bodla et al., 2017): lower the scores of overlapping boxes instead of removing them.

    Pick the box ``M`` with the highest current score, keep it, and rescale every remaining
    score ``s_i`` by a decreasing function of ``IoU(M, b_i)``:

    * ``"linear"``: ``s_i * (1 - IoU)`` if ``IoU >= iou_threshold``, else unchanged
      (Eq. (eq-soft-nms-linear) of book/03_nms);
    * ``"gaussian"``: ``s_i * exp(-IoU**2 / sigma)`` (``iou_threshold`` is not used;
      Eq. (eq-soft-nms-gaussian) of book/03_nms).

    Boxes whose score falls below ``score_thresh`` are dropped. Equal scores are picked in
    input order.

    Args:
        boxes: ``[N, 4]`` xyxy boxes.
        scores: ``[N]`` scores.
        method: ``"gaussian"`` or ``"linear"``.
        sigma: width of the Gaussian penalty, ``> 0`` (the paper uses 0.5).
        iou_threshold: ``N_t`` of the linear method, in ``[0, 1]``.
        score_thresh: final scores below this are dropped, ``>= 0``.

    Returns:
        :class:`SoftNMSResult` ``(keep, scores)``.

    Chapter: book/03_nms (section "Going further: Soft-NMS")
    """
    check_boxes(boxes)
    _check_scores(scores, boxes)
    if method not in ("gaussian", "linear"):
        raise ValueError(f"method must be 'gaussian' or 'linear', got {method!r}")
    if not (isinstance(sigma, int | float) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    iou_threshold = _check_threshold(iou_threshold, "iou_threshold")
    if not (isinstance(score_thresh, int | float) and score_thresh >= 0):
        raise ValueError(f"score_thresh must be a number >= 0, got {score_thresh!r}")
    current = scores.clone()
    remaining = torch.nonzero(current >= score_thresh).squeeze(1)  # increasing index
    keep, kept_scores = [], []
    while remaining.numel() > 0:
        best = int(torch.argmax(current[remaining]))  # first maximum: ties in input order
        picked = remaining[best]
        keep.append(picked)
        kept_scores.append(current[picked])
        remaining = torch.cat([remaining[:best], remaining[best + 1 :]])
        ious = box_iou(boxes[picked][None], boxes[remaining])[0]  # [R]
        if method == "linear":
            decay = torch.where(ious >= iou_threshold, 1 - ious, torch.ones_like(ious))
        else:
            decay = torch.exp(-(ious**2) / sigma)
        current[remaining] = current[remaining] * decay.to(current.dtype)
        remaining = remaining[current[remaining] >= score_thresh]
    if not keep:
        return SoftNMSResult(torch.empty(0, dtype=torch.int64, device=boxes.device), scores[:0])
    return SoftNMSResult(torch.stack(keep), torch.stack(kept_scores))
