"""Anchor assignment for the RPN: which anchors are positive, negative or ignored, and the sampler.

Faster R-CNN (§3.1.2) labels each anchor from its IoU with the ground-truth boxes:

* positive (1): IoU >= 0.7 with some ground truth, *or* the anchor has the highest IoU of all
  anchors for some ground truth (so every object gets at least one anchor, even a badly covered one);
* negative (0): max IoU < 0.3 with every ground truth;
* ignored (-1): everything else; it contributes nothing to the loss.

Then 256 anchors per image are sampled for the loss, at most half of them positive, negatives
filling the rest.

Shapes::

    iou_matrix        [G, A]   IoU of every ground truth (rows) with every anchor (columns)
    matched_gt        [A]      int64, index of the anchor's best ground truth
    labels            [A]      int64, 1 positive / 0 negative / -1 ignored
    pos_idx, neg_idx  [P], [Q] int64 anchor indices, P + Q <= batch_size_per_image

Relation to torchvision's ``Matcher(0.7, 0.3, allow_low_quality_matches=True)``, which returns one
tensor ``matches`` with the ground-truth index for positives, ``BELOW_LOW_THRESHOLD = -1`` for
negatives and ``BETWEEN_THRESHOLDS = -2`` for ignored anchors: here the index and the label are
returned separately (detectron2's style), so ``labels = 1 where matches >= 0, 0 where matches ==
-1, -1 where matches == -2`` and ``matched_gt = matches`` wherever ``matches >= 0``.

Chapter: book/07_faster_rcnn (section "Which anchors are positive").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from coursepkg.ops.validation import check_int, check_probability, check_tensor

POSITIVE, NEGATIVE, IGNORED = 1, 0, -1


class AnchorMatch(NamedTuple):
    """Result of :func:`match_anchors`."""

    matched_gt: Tensor
    """[A] int64: the ground truth with the highest IoU for each anchor (first one on ties; -1 when
    there is no ground truth). Meaningful for positives; use it to build regression targets."""
    labels: Tensor
    """[A] int64: 1 positive, 0 negative, -1 ignored."""


class SampledAnchors(NamedTuple):
    """Result of :func:`sample_balanced`."""

    pos_idx: Tensor
    """[P] int64 indices of the sampled positives, sorted."""
    neg_idx: Tensor
    """[Q] int64 indices of the sampled negatives, sorted."""


def match_anchors(
    iou_matrix: Tensor,
    fg_iou_thresh: float = 0.7,
    bg_iou_thresh: float = 0.3,
    allow_low_quality_matches: bool = True,
) -> AnchorMatch:
    """Label anchors positive / negative / ignored from their IoU with the ground truths.

    Implements equation ``anchor-labels`` of book/07_faster_rcnn (Faster R-CNN §3.1.2): positive
    if ``max IoU >= fg_iou_thresh``; negative if ``max IoU < bg_iou_thresh``; ignored in between. With ``allow_low_quality_matches``, for every
    ground truth the anchors that reach its highest IoU (all of them on ties) also become positive,
    matched to *their own* best ground truth (torchvision's rule). A ground truth whose best IoU is 0
    (for example a zero-area box) adds no such match: torchvision would turn every anchor with IoU 0
    to it positive, a quirk inherited from py-faster-rcnn that we guard against. Otherwise the
    result equals torchvision's ``Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches)``.
    The best-anchor rule is applied last, so it wins over the negative rule; the lecture notes set
    the negatives last, which turns a best anchor with IoU below ``bg_iou_thresh`` back into a
    negative (the chapter runs their code to show it).

    Args:
        iou_matrix: [G, A] float, IoU of ground truth ``g`` with anchor ``a``. G = 0 (an image
            without objects) makes every anchor negative.
        fg_iou_thresh: IoU from which an anchor is positive (inclusive).
        bg_iou_thresh: IoU below which an anchor is negative (exclusive).
        allow_low_quality_matches: also make the best anchor(s) of each ground truth positive.

    Returns:
        ``AnchorMatch(matched_gt [A] int64, labels [A] int64)``.

    Raises:
        TypeError: if ``iou_matrix`` is not a floating tensor.
        ValueError: if ``iou_matrix`` is not 2-D or has a value outside ``[0, 1]`` (NaN
            included: it is not an IoU matrix), a threshold is not in ``[0, 1]``, or
            ``bg_iou_thresh > fg_iou_thresh``.

    Chapter: book/07_faster_rcnn (section "Which anchors are positive").
    """
    check_tensor(iou_matrix, "iou_matrix", shape=("G", "A"), dtype="float")
    fg_iou_thresh = check_probability(fg_iou_thresh, "fg_iou_thresh")
    bg_iou_thresh = check_probability(bg_iou_thresh, "bg_iou_thresh")
    if bg_iou_thresh > fg_iou_thresh:
        raise ValueError(
            f"bg_iou_thresh must be <= fg_iou_thresh, got low={bg_iou_thresh}, high={fg_iou_thresh}"
        )
    if iou_matrix.numel() > 0:
        low, high = torch.aminmax(iou_matrix)
        if not bool((low >= 0) & (high <= 1)):  # one host sync; NaN fails both tests
            raise ValueError(
                f"iou_matrix must hold IoU values in [0, 1] (no NaN), got min {low.item()} and max "
                f"{high.item()}"
            )
    return _match_anchors(iou_matrix, fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches)


def _match_anchors(
    iou_matrix: Tensor,
    fg_iou_thresh: float,
    bg_iou_thresh: float,
    allow_low_quality_matches: bool,
) -> AnchorMatch:
    """:func:`match_anchors` without the checks, for a matrix that :func:`box_iou` just built."""
    num_gt, num_anchors = iou_matrix.shape
    device = iou_matrix.device
    if num_gt == 0:
        # An image without objects: every anchor is background.
        return AnchorMatch(
            matched_gt=torch.full((num_anchors,), -1, dtype=torch.int64, device=device),
            labels=torch.full((num_anchors,), NEGATIVE, dtype=torch.int64, device=device),
        )

    best_iou, matched_gt = iou_matrix.max(dim=0)  # [A] each: best ground truth per anchor
    # torch.where, not labels[mask] = v: a boolean-mask assignment waits for the device on a GPU.
    positive = best_iou >= fg_iou_thresh  # [A]
    if allow_low_quality_matches and num_anchors > 0:
        best_per_gt = iou_matrix.max(dim=1).values  # [G]
        # Every anchor that reaches its ground truth's best IoU, ties included; skip best IoU 0.
        is_best = (iou_matrix == best_per_gt[:, None]) & (best_per_gt[:, None] > 0)  # [G, A]
        positive |= is_best.any(dim=0)
    labels = torch.where(
        positive,
        POSITIVE,
        torch.where(best_iou < bg_iou_thresh, NEGATIVE, IGNORED),
    ).to(torch.int64)  # [A]
    return AnchorMatch(matched_gt=matched_gt, labels=labels)


def sample_balanced(
    labels: Tensor,
    batch_size_per_image: int = 256,
    positive_fraction: float = 0.5,
    generator: torch.Generator | None = None,
) -> SampledAnchors:
    """Pick a mini-batch of anchors with at most ``positive_fraction`` positives.

    Implements equation ``balanced-sample`` of book/07_faster_rcnn.
    ``num_pos = min(#positives, int(batch_size_per_image * positive_fraction))`` positives and
    ``num_neg = min(#negatives, batch_size_per_image - num_pos)`` negatives, chosen uniformly at random
    without replacement (Faster R-CNN §3.1.3: 256 anchors, up to 1:1). When there are fewer than
    128 positives the batch is padded with negatives. Ignored anchors (-1) are never sampled.
    The counts equal torchvision's ``BalancedPositiveNegativeSampler``; the subsets are random.

    The lecture notes compute the negative budget as ``n_sample * np.sum(label == 1)`` (a product:
    32,768 for 128 positives, so no negative is ever dropped); it must be the difference
    ``n_sample - np.sum(label == 1)``.

    Args:
        labels: [A] integer or float labels, 1 positive, 0 negative, -1 ignored.
        batch_size_per_image: anchors per image in the batch (``RPN_BATCHSIZE`` = 256).
        positive_fraction: largest share of positives (``RPN_FG_FRACTION`` = 0.5).
        generator: random generator for reproducible draws (on the CPU; the indices are moved to
            the device of ``labels``).

    Returns:
        ``SampledAnchors(pos_idx [P] int64, neg_idx [Q] int64)``, each sorted, on the device of
        ``labels``.

    Raises:
        TypeError: if ``labels`` is not a tensor.
        ValueError: if ``labels`` is not 1-D or has values other than -1, 0, 1, if ``batch_size_per_image``
            is negative, or ``positive_fraction`` is outside [0, 1].

    Chapter: book/07_faster_rcnn (section "A balanced sample of 256 anchors").
    """
    check_tensor(labels, "labels", shape=("A",))
    batch_size_per_image = check_int(batch_size_per_image, "batch_size_per_image", low=0)
    positive_fraction = check_probability(positive_fraction, "positive_fraction")
    if not bool(((labels == POSITIVE) | (labels == NEGATIVE) | (labels == IGNORED)).all()):
        raise ValueError(
            "labels must only contain 1 (positive), 0 (negative) and -1 (ignored), got values "
            f"{torch.unique(labels).tolist()}"
        )
    return _sample_balanced(labels, batch_size_per_image, positive_fraction, generator)


def _sample_balanced(
    labels: Tensor,
    batch_size_per_image: int,
    positive_fraction: float,
    generator: torch.Generator | None,
) -> SampledAnchors:
    """:func:`sample_balanced` without the checks, for labels that a matcher just produced."""
    return _sample_balanced_many([labels], batch_size_per_image, positive_fraction, generator)[0]


def _sample_balanced_many(
    labels: Sequence[Tensor],
    batch_size_per_image: int,
    positive_fraction: float,
    generator: torch.Generator | None,
) -> list[SampledAnchors]:
    """:func:`_sample_balanced` for every image of a batch, with one host sync for all of them.

    The host needs each image's numbers of positives and negatives (``randperm`` draws on the CPU,
    and the sizes of the results depend on them): they come back together, in one transfer.
    The draws then happen image by image, positives before negatives, as one call per image
    would make them, so the samples are the same for the same generator.
    """
    if not labels:
        return []
    counts = torch.stack(
        [torch.stack([(each == POSITIVE).sum(), (each == NEGATIVE).sum()]) for each in labels]
    ).tolist()  # [B, 2]: the one host synchronisation

    def choose(candidates: Tensor, k: int) -> Tensor:
        order = torch.randperm(candidates.numel(), generator=generator)[:k].to(candidates.device)
        return candidates[order].sort().values

    samples = []
    for each, (num_positives, num_negatives) in zip(labels, counts, strict=True):
        positives = _true_indices(each == POSITIVE, num_positives)  # [#positives], increasing
        negatives = _true_indices(each == NEGATIVE, num_negatives)
        num_pos = min(num_positives, int(batch_size_per_image * positive_fraction))
        num_neg = min(num_negatives, batch_size_per_image - num_pos)  # the notes wrote "*" here
        samples.append(
            SampledAnchors(pos_idx=choose(positives, num_pos), neg_idx=choose(negatives, num_neg))
        )
    return samples


def _true_indices(mask: Tensor, count: int) -> Tensor:
    """``[count]`` increasing indices of the True entries of a 1-D ``mask`` that has ``count``.

    ``torch.nonzero_static`` is told the size, so on a GPU it does not wait for the device as
    ``nonzero`` must; other devices (MPS) use ``nonzero``.
    """
    if mask.device.type in ("cpu", "cuda"):
        return torch.nonzero_static(mask, size=count).squeeze(1)
    return torch.nonzero(mask).squeeze(1)
