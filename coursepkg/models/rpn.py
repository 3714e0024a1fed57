"""The region proposal network (RPN) of Faster R-CNN: head, loss and proposals.

The RPN slides a small network over the backbone's feature map (Faster R-CNN §3.1). At every
location a 3×3 convolution and ReLU feed two sibling 1×1 convolutions: one scores each of the A
anchors there for "object vs background", the other predicts A box deltas
``(d_x, d_y, d_w, d_h)`` relative to the anchors (:mod:`coursepkg.ops.box_coding`).

Objectness comes as **one logit per anchor** with a sigmoid and binary cross-entropy, as in
torchvision. The paper and the lecture notes use **two scores per anchor** (object, background)
with a softmax and cross-entropy; the two are the same model: ``softmax(s_bg, s_obj)[obj] =
sigmoid(s_obj - s_bg)``, so a 2A-channel head carries one redundant channel per anchor.

Three normalisations of the RPN loss are in use, all available in :func:`rpn_loss`:

==============  ================================  =====================================  ====  =====
mode            objectness term                   box term                               λ     β
==============  ================================  =====================================  ====  =====
``paper``       Σ BCE over sampled / N_cls        Σ smooth-L1 over positives / N_reg     10    1
``notes``       mean BCE over sampled             Σ smooth-L1 over positives / #pos      10    1
``torchvision`` mean BCE over sampled             Σ smooth-L1 over positives / #sampled  1     1/9
==============  ================================  =====================================  ====  =====

(Faster R-CNN eq. 1: ``L = (1/N_cls) Σ L_cls + λ (1/N_reg) Σ p* L_reg`` with N_cls = 256, the
mini-batch, and N_reg ≈ 2,400, the number of anchor *locations*. β is smooth-L1's ``beta``, as in
``torch.nn.functional.smooth_l1_loss``; β = 1/9 is py-faster-rcnn's σ = 3.)

Shapes (one feature map of H × W locations, A anchors per location, N images)::

    features                       [N, C, H, W]
    RPNHead(...).objectness        [N, A, H, W]       logits
    RPNHead(...).deltas            [N, 4 * A, H, W]   channel 4a + j is delta j of anchor a
    flatten_predictions(...)       [N, H * W * A], [N, H * W * A, 4]
                                   in the order of coursepkg.models.anchors.generate_anchors
    generate_proposals(...)        boxes [R, 4], scores [R]   (one image)

Chapter: book/07_faster_rcnn (section "The RPN and its loss").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coursepkg.models.assignment import _match_anchors, _sample_balanced_many, _true_indices
from coursepkg.ops.box_coding import _decode_boxes, _encode_boxes
from coursepkg.ops.boxes import _box_iou, _clip_boxes_to_image
from coursepkg.ops.nms import _nms_core
from coursepkg.ops.validation import (
    check_boxes,
    check_finite,
    check_image_size,
    check_int,
    check_number,
    check_probability,
    check_reduction,
    check_tensor,
)

NORMALIZATIONS = ("paper", "notes", "torchvision")
# λ and smooth-L1 β of each normalisation (see the module docstring).
_DEFAULTS = {"paper": (10.0, 1.0), "notes": (10.0, 1.0), "torchvision": (1.0, 1.0 / 9.0)}


class RPNHeadOutput(NamedTuple):
    """Raw outputs of :class:`RPNHead`."""

    objectness: Tensor
    """[N, A, H, W] objectness logits (sigmoid gives the probability of an object)."""
    deltas: Tensor
    """[N, 4 * A, H, W] box deltas; channel ``4 a + j`` is delta ``j`` of anchor ``a``."""


class RPNHead(nn.Module):
    """3×3 conv + ReLU, then a 1×1 conv for A objectness logits and a 1×1 conv for 4A deltas.

    Faster R-CNN §3.1 (with a single sigmoid logit per anchor instead of the paper's two softmax
    scores, see the module docstring). Weights start from N(0, 0.01²) and biases at 0, as in the
    paper (§3.1.3) and torchvision's ``RPNHead``, whose parameters and outputs this matches.

    Args:
        in_channels: channels of the feature map (512 for VGG-16 conv5, 256 with an FPN).
        num_anchors: anchors per location, A (9 in the paper).

    Chapter: book/07_faster_rcnn (section "The RPN and its loss").
    """

    def __init__(self, in_channels: int, num_anchors: int) -> None:
        super().__init__()
        in_channels = check_int(in_channels, "in_channels", low=1)
        num_anchors = check_int(num_anchors, "num_anchors", low=1)
        self.conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, kernel_size=1)
        self.bbox_pred = nn.Conv2d(in_channels, 4 * num_anchors, kernel_size=1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: Tensor) -> RPNHeadOutput:
        """[N, C, H, W] features -> objectness [N, A, H, W] and deltas [N, 4A, H, W]."""
        channels = self.conv.in_channels
        check_tensor(features, "features", shape=("N", channels, "H", "W"), dtype="float")
        hidden = F.relu(self.conv(features))
        return RPNHeadOutput(self.cls_logits(hidden), self.bbox_pred(hidden))


class FlatPredictions(NamedTuple):
    """Result of :func:`flatten_predictions`: one row per anchor, in the anchors' order."""

    objectness: Tensor
    """[N, H * W * A] logits."""
    deltas: Tensor
    """[N, H * W * A, 4] box deltas."""


def flatten_predictions(objectness: Tensor, deltas: Tensor) -> FlatPredictions:
    """Reorder the head's maps to one row per anchor, in :func:`generate_anchors` order.

    Args:
        objectness: [N, A, H, W] logits.
        deltas: [N, 4 * A, H, W] deltas.

    Returns:
        ``(objectness [N, H * W * A], deltas [N, H * W * A, 4])``: row ``(i * W + j) * A + a`` is
        anchor ``a`` at location ``(i, j)``, like :func:`coursepkg.models.anchors.generate_anchors`.

    Raises:
        ValueError: if the shapes do not fit together.

    Chapter: book/07_faster_rcnn (section "The RPN and its loss").
    """
    check_tensor(objectness, "objectness", shape=("N", "A", "H", "W"))
    check_tensor(deltas, "deltas", shape=("N", "4A", "H", "W"))
    n, a, h, w = objectness.shape
    if deltas.shape != (n, 4 * a, h, w):
        raise ValueError(f"deltas must be [{n}, {4 * a}, {h}, {w}], got {list(deltas.shape)}")
    flat_objectness = objectness.permute(0, 2, 3, 1).reshape(n, -1)  # [N, H, W, A] -> [N, HWA]
    flat_deltas = (
        deltas.reshape(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
    )  # [N, HWA, 4]
    return FlatPredictions(flat_objectness, flat_deltas)


class RPNLoss(NamedTuple):
    """Result of :func:`rpn_loss`: scalars, or ``[M]`` per anchor for ``reduction="none"``."""

    objectness: Tensor
    """Classification term (normalised for ``reduction="mean"``)."""
    box: Tensor
    """Box-regression term, before λ (normalised for ``reduction="mean"``)."""
    total: Tensor
    """``objectness + λ * box``."""


def rpn_loss(
    objectness: Tensor,
    deltas: Tensor,
    labels: Tensor,
    target_deltas: Tensor,
    *,
    normalization: str = "torchvision",
    box_loss_weight: float | None = None,
    beta: float | None = None,
    num_locations: int | None = None,
    reduction: str = "mean",
) -> RPNLoss:
    """The RPN loss (Faster R-CNN eq. 1) under one of three normalisations.

    Implements equation ``rpn-loss`` of book/07_faster_rcnn; the chapter checks it against the sums
    written out by hand and against the lecture notes' own code (λ = 10).

    Objectness: binary cross-entropy with logits over the sampled anchors (``labels`` 0 or 1).
    Boxes: smooth-L1 (``beta``) between ``deltas`` and ``target_deltas`` summed over the positive
    anchors (``p* = 1``). The normalisers per ``normalization``:

    * ``"paper"``: objectness sum / N_cls (the number of sampled anchors, 256 in the paper); box
      sum / N_reg = ``num_locations`` (anchor locations, H × W ≈ 2,400); λ = 10, β = 1.
    * ``"notes"``: objectness mean over sampled (the notes' ``cross_entropy(..., ignore_index=-1)``);
      box sum / number of positives; λ = 10, β = 1.
    * ``"torchvision"``: objectness mean over sampled; box sum / number of sampled anchors, exactly
      ``RegionProposalNetwork.compute_loss``; λ = 1 (the two terms are added), β = 1/9.

    Empty sets give 0, never NaN (each normaliser is at least 1).

    ``reduction`` as in ``torch.nn.functional``: ``"mean"`` (the default) divides by the normalisers
    of ``normalization`` above; ``"sum"`` returns the two sums undivided (``normalization`` then
    only picks λ and β), for a caller that normalises itself; ``"none"`` returns per-anchor ``[M]``
    terms: the BCE of every sampled anchor (0 where ``labels == -1``) and the smooth-L1 summed over
    the four deltas of every positive anchor (0 elsewhere).

    Args:
        objectness: [M] logits, all anchors of the batch concatenated.
        deltas: [M, 4] predicted deltas.
        labels: [M] after sampling: 1 sampled positive, 0 sampled negative, -1 not in the loss.
        target_deltas: [M, 4] regression targets (only rows with label 1 are read).
        normalization: ``"paper"``, ``"notes"`` or ``"torchvision"``.
        box_loss_weight: weight of the box term; None takes the mode's value.
        beta: smooth-L1 ``beta``; None takes the mode's value.
        num_locations: N_reg for ``"paper"`` with ``reduction="mean"`` (required there, ignored
            otherwise).
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.

    Returns:
        ``RPNLoss(objectness, box, total)``, scalars (``[M]`` each for ``reduction="none"``);
        ``total = objectness + box_loss_weight * box``.

    Raises:
        ValueError: on unknown ``normalization`` or ``reduction``, mismatched shapes, labels outside
            {-1, 0, 1}, a missing or non-positive ``num_locations`` in paper mode with
            ``reduction="mean"``, or a λ / β that is not a finite number >= 0.
        TypeError: if a float input is not floating point.

    Chapter: book/07_faster_rcnn (section "The RPN and its loss").
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    default_lambda, default_beta = _DEFAULTS[normalization]
    box_loss_weight = (
        default_lambda
        if box_loss_weight is None
        else check_number(box_loss_weight, "box_loss_weight", low=0.0)
    )
    beta = default_beta if beta is None else check_number(beta, "beta", low=0.0)
    check_reduction(reduction)
    _check_loss_inputs(objectness, deltas, labels, target_deltas)
    if normalization == "paper" and reduction == "mean":
        if num_locations is None:
            raise ValueError("normalization='paper' needs num_locations > 0 (N_reg), got None")
        num_locations = check_int(num_locations, "num_locations", low=1)

    return _rpn_loss(
        objectness, deltas, labels, target_deltas, normalization, box_loss_weight, beta,
        num_locations, reduction,
    )  # fmt: skip


def _rpn_loss(
    objectness: Tensor,
    deltas: Tensor,
    labels: Tensor,
    target_deltas: Tensor,
    normalization: str,
    box_loss_weight: float,
    beta: float,
    num_locations: int | None,
    reduction: str,
) -> RPNLoss:
    """:func:`rpn_loss` on checked inputs, without host syncs: masks, not selections, pick the
    sampled and positive anchors (a selection's size waits for the device on a GPU)."""
    sampled = labels >= 0
    positive = labels == 1
    if reduction == "none":
        cls_each = F.binary_cross_entropy_with_logits(
            objectness, labels.clamp(min=0).to(objectness.dtype), reduction="none"
        )
        cls_each = torch.where(sampled, cls_each, torch.zeros_like(cls_each))  # [M]
        box_each = F.smooth_l1_loss(deltas, target_deltas, beta=beta, reduction="none").sum(1)
        box_each = torch.where(positive, box_each, torch.zeros_like(box_each))  # [M]
        return RPNLoss(cls_each, box_each, cls_each + box_loss_weight * box_each)
    # Anchors outside the sum see logit 0 and target 0 (and deltas 0 against targets 0), so they
    # add exactly 0 and pass no gradient back, even from a NaN in their own outputs.
    cls_sum = torch.where(
        sampled,
        F.binary_cross_entropy_with_logits(
            torch.where(sampled, objectness, 0.0),
            labels.clamp(min=0).to(objectness.dtype),
            reduction="none",
        ),
        0.0,
    ).sum()
    box_sum = F.smooth_l1_loss(
        torch.where(positive[:, None], deltas, 0.0),
        torch.where(positive[:, None], target_deltas, 0.0),
        beta=beta,
        reduction="sum",
    )
    if reduction == "sum":
        return RPNLoss(cls_sum, box_sum, cls_sum + box_loss_weight * box_sum)
    # Eq. 1's normalisers, kept on the device: N_cls for the objectness term, N_reg for the box.
    n_cls = sampled.sum().clamp(min=1)
    n_reg = {
        "paper": num_locations,  # anchor locations, ~2,400 for a 1000 x 600 image
        "notes": positive.sum().clamp(min=1),  # the notes' N_reg = (gt_rpn_score > 0).sum()
        "torchvision": n_cls,
    }[normalization]
    cls_term, box_term = cls_sum / n_cls, box_sum / n_reg
    return RPNLoss(cls_term, box_term, cls_term + box_loss_weight * box_term)


def _check_loss_inputs(
    objectness: Tensor, deltas: Tensor, labels: Tensor, target_deltas: Tensor
) -> None:
    check_tensor(objectness, "objectness", shape=("M",), dtype="float")
    m = objectness.shape[0]
    check_tensor(deltas, "deltas", shape=(m, 4), dtype="float")
    check_tensor(labels, "labels", shape=(m,))  # float labels too, as torchvision passes them
    check_tensor(target_deltas, "target_deltas", shape=(m, 4), dtype="float")
    if not ((labels == 1) | (labels == 0) | (labels == -1)).all():
        raise ValueError("labels must only contain 1 (positive), 0 (negative) and -1 (not sampled)")


class Proposals(NamedTuple):
    """Result of :func:`generate_proposals` (one image)."""

    boxes: Tensor
    """[R, 4] float xyxy proposals, clipped to the image, by decreasing score."""
    scores: Tensor
    """[R] objectness probabilities (sigmoid of the logits)."""


def generate_proposals(
    objectness: Tensor,
    deltas: Tensor,
    anchors: Tensor,
    image_size: Sequence[int],
    pre_nms_top_n: int,
    post_nms_top_n: int,
    nms_thresh: float = 0.7,
    min_size: float = 1e-3,
    score_thresh: float = 0.0,
) -> Proposals:
    """Turn the RPN's outputs for one image into proposals (Faster R-CNN §3.3).

    Steps, as torchvision's ``RegionProposalNetwork.filter_proposals`` for one feature level:
    keep the ``pre_nms_top_n`` anchors with the highest logits; decode their deltas
    (:func:`coursepkg.ops.box_coding.decode_boxes`, weights 1); sigmoid the logits; clip the boxes
    to the image; drop boxes with a side below ``min_size``; drop scores below ``score_thresh``;
    NMS at ``nms_thresh`` (:func:`coursepkg.ops.nms.nms`); keep the best ``post_nms_top_n``.
    The chapter writes these steps out with the public functions and checks it gets the same boxes.
    The paper uses 12,000 / 2,000 while training and 6,000 / 300 at test time; torchvision's
    defaults are 2,000 / 2,000 and 1,000 / 1,000. No gradient flows through proposals.

    Args:
        objectness: [A] logits of all anchors of the image.
        deltas: [A, 4] predicted deltas.
        anchors: [A, 4] float xyxy anchors, same order (see :func:`flatten_predictions`).
        image_size: ``(height, width)`` of the image in pixels.
        pre_nms_top_n: anchors kept before NMS.
        post_nms_top_n: proposals kept after NMS.
        nms_thresh: NMS IoU threshold (0.7 in the paper).
        min_size: smallest allowed box side in pixels.
        score_thresh: smallest allowed objectness probability (kept if ``>=``).

    Returns:
        ``Proposals(boxes [R, 4], scores [R])`` with ``R <= post_nms_top_n``, by decreasing score.

    Raises:
        TypeError, ValueError: on mismatched shapes, invalid anchors or image size, NaN or inf in
            ``objectness`` or ``deltas``, non-positive top-n values or thresholds outside their
            ranges.

    Chapter: book/07_faster_rcnn (section "Proposals").
    """
    check_boxes(anchors, "anchors")
    image_size = check_image_size(image_size)
    num = anchors.shape[0]
    check_tensor(objectness, "objectness", shape=(num,), dtype="float")
    check_tensor(deltas, "deltas", shape=(num, 4), dtype="float")
    # One host sync for both; a NaN logit would otherwise sort anywhere and vanish in silence.
    if not bool(torch.isfinite(objectness).all() & torch.isfinite(deltas).all()):
        check_finite(objectness, "objectness")
        check_finite(deltas, "deltas")
    settings = _check_proposal_settings(
        pre_nms_top_n, post_nms_top_n, nms_thresh, min_size, score_thresh
    )
    return _generate_proposals(objectness, deltas, anchors, image_size, *settings)


def _check_proposal_settings(
    pre_nms_top_n: int,
    post_nms_top_n: int,
    nms_thresh: float,
    min_size: float,
    score_thresh: float,
) -> tuple[int, int, float, float, float]:
    """The settings of :func:`generate_proposals`, checked (on the host) and normalised."""
    return (
        check_int(pre_nms_top_n, "pre_nms_top_n", low=1),
        check_int(post_nms_top_n, "post_nms_top_n", low=1),
        check_probability(nms_thresh, "nms_thresh"),
        check_number(min_size, "min_size", low=0.0),
        check_probability(score_thresh, "score_thresh"),
    )


def _generate_proposals(
    objectness: Tensor,
    deltas: Tensor,
    anchors: Tensor,
    image_size: tuple[int, int],
    pre_nms_top_n: int,
    post_nms_top_n: int,
    nms_thresh: float,
    min_size: float,
    score_thresh: float,
) -> Proposals:
    """:func:`generate_proposals` on checked inputs (each check is a host sync on a GPU)."""
    return _generate_proposals_batch(
        objectness[None], deltas[None], anchors, image_size, pre_nms_top_n, post_nms_top_n,
        nms_thresh, min_size, score_thresh,
    )[0]  # fmt: skip


def _generate_proposals_batch(
    objectness: Tensor,
    deltas: Tensor,
    anchors: Tensor,
    image_size: tuple[int, int],
    pre_nms_top_n: int,
    post_nms_top_n: int,
    nms_thresh: float,
    min_size: float,
    score_thresh: float,
) -> list[Proposals]:
    """:func:`_generate_proposals` for every image (``objectness`` [B, A], ``deltas`` [B, A, 4]):
    the sizes of all images' filtered candidates reach the host in one sync; NMS then runs image
    by image."""
    with torch.no_grad():
        candidates = []
        for scores_i, deltas_i in zip(objectness, deltas, strict=True):
            top = scores_i.topk(min(pre_nms_top_n, anchors.shape[0])).indices  # [k] by logit
            boxes = _decode_boxes(deltas_i[top], anchors[top].to(deltas.dtype))  # [k, 4]
            boxes = _clip_boxes_to_image(boxes, image_size)
            scores = torch.sigmoid(scores_i[top])  # [k]
            # Both filters in one mask: sides of at least min_size (remove_small_boxes) and
            # scores of at least score_thresh.
            wh = boxes[:, 2:] - boxes[:, :2]  # [k, 2]
            keep = (wh >= min_size).all(dim=1) & (scores >= score_thresh)  # [k]
            candidates.append((boxes, scores, keep))
        if not candidates:
            return []
        counts = torch.stack([keep.sum() for _, _, keep in candidates]).tolist()  # one sync
        proposals = []
        for (boxes, scores, keep), count in zip(candidates, counts, strict=True):
            kept = _true_indices(keep, count)  # [count], increasing
            boxes, scores = boxes[kept], scores[kept]
            best = _nms_core(boxes, scores, nms_thresh)[:post_nms_top_n]
            proposals.append(Proposals(boxes[best], scores[best]))
    return proposals


class RPNTargets(NamedTuple):
    """What the RPN is trained towards in one image (see :func:`assign_rpn_targets`).

    Attributes:
        labels: ``[N]`` int64 per anchor after sampling: 1 sampled positive, 0 sampled negative,
            -1 left out of the loss (ignored by the matcher or not drawn by the sampler).
        target_deltas: ``[N, 4]`` encoded ``(t_x, t_y, t_w, t_h)`` towards the matched ground
            truth for the positives, 0 elsewhere.
    """

    labels: Tensor
    target_deltas: Tensor


def assign_rpn_targets(
    anchors: Tensor,
    gt_boxes: Tensor,
    *,
    fg_iou_thresh: float = 0.7,
    bg_iou_thresh: float = 0.3,
    batch_size_per_image: int = 256,
    positive_fraction: float = 0.5,
    generator: torch.Generator | None = None,
) -> RPNTargets:
    """Label, sample and encode the anchors of one image for the RPN loss (Faster R-CNN §3.1.2).

    1. Match (:func:`coursepkg.models.assignment.match_anchors`): positive at IoU >= ``fg_iou_thresh``
       with some ground truth or if the anchor is a ground truth's best one, negative below
       ``bg_iou_thresh``, ignored in between. An image without objects has only negatives.
    2. Sample (:func:`coursepkg.models.assignment.sample_balanced`): ``batch_size_per_image`` anchors, at most
       ``positive_fraction`` of them positive; the rest get label -1.
    3. Encode (:func:`coursepkg.ops.box_coding.encode_boxes`, weights 1) the positives' ground truths.

    Every anchor takes part, also those crossing the image border (torchvision; the paper ignores
    cross-boundary anchors during training). Runs under ``torch.no_grad()``.

    Args:
        anchors: ``[N, 4]`` float xyxy.
        gt_boxes: ``[G, 4]`` float xyxy, ``G`` may be 0.
        fg_iou_thresh, bg_iou_thresh: the matcher's thresholds (0.7 and 0.3 in the paper).
        batch_size_per_image: anchors per image in the loss (256).
        positive_fraction: largest share of positives (0.5).
        generator: random source of the sampler.

    Returns:
        :class:`RPNTargets` with ``[N]`` labels and ``[N, 4]`` target deltas.

    Raises:
        TypeError, ValueError: for malformed boxes or thresholds (from the functions above).

    Chapter: book/07_faster_rcnn (section "Which anchors are positive").
    """
    check_boxes(anchors, "anchors")
    check_boxes(gt_boxes, "gt_boxes")
    fg_iou_thresh = check_probability(fg_iou_thresh, "fg_iou_thresh")
    bg_iou_thresh = check_probability(bg_iou_thresh, "bg_iou_thresh")
    if bg_iou_thresh > fg_iou_thresh:
        raise ValueError(
            f"bg_iou_thresh must be <= fg_iou_thresh, got {bg_iou_thresh} > {fg_iou_thresh}"
        )
    batch_size_per_image = check_int(batch_size_per_image, "batch_size_per_image", low=0)
    positive_fraction = check_probability(positive_fraction, "positive_fraction")
    return _assign_rpn_targets(
        anchors, gt_boxes, fg_iou_thresh, bg_iou_thresh, batch_size_per_image, positive_fraction,
        generator,
    )


def _assign_rpn_targets(
    anchors: Tensor,
    gt_boxes: Tensor,
    fg_iou_thresh: float,
    bg_iou_thresh: float,
    batch_size_per_image: int,
    positive_fraction: float,
    generator: torch.Generator | None,
) -> RPNTargets:
    """:func:`assign_rpn_targets` without the checks, for a detector that validated its inputs."""
    return _assign_rpn_targets_batch(
        anchors, [gt_boxes], fg_iou_thresh, bg_iou_thresh, batch_size_per_image,
        positive_fraction, generator,
    )[0]  # fmt: skip


def _assign_rpn_targets_batch(
    anchors: Tensor,
    gt_boxes: Sequence[Tensor],
    fg_iou_thresh: float,
    bg_iou_thresh: float,
    batch_size_per_image: int,
    positive_fraction: float,
    generator: torch.Generator | None,
) -> list[RPNTargets]:
    """:func:`_assign_rpn_targets` for every image of a batch (``gt_boxes`` one entry per image),
    with one host sync for all of them: the sampler's counts (:func:`_sample_balanced_many`)."""
    with torch.no_grad():
        gt_boxes = [boxes.to(anchors.dtype) for boxes in gt_boxes]
        matches = [
            _match_anchors(_box_iou(boxes, anchors), fg_iou_thresh, bg_iou_thresh, True)
            for boxes in gt_boxes
        ]
        draws = _sample_balanced_many(
            [match.labels for match in matches], batch_size_per_image, positive_fraction, generator
        )
        targets = []
        for boxes, match, (pos_idx, neg_idx) in zip(gt_boxes, matches, draws, strict=True):
            labels = torch.full_like(match.labels, -1)
            labels[pos_idx] = 1
            labels[neg_idx] = 0
            target_deltas = anchors.new_zeros(anchors.shape)  # [N, 4]
            if pos_idx.numel() > 0:
                target_deltas[pos_idx] = _encode_boxes(
                    boxes[match.matched_gt[pos_idx]], anchors[pos_idx], (1.0, 1.0, 1.0, 1.0)
                )
            targets.append(RPNTargets(labels, target_deltas))
    return targets
