"""Faster R-CNN's second stage (the Fast R-CNN head): RoI sampling, box head, loss, post-processing.

The region proposal network hands over a few hundred class-agnostic boxes per image. The second
stage turns each one into a class decision and a refined, class-specific box (Fast R-CNN §2):

1. **sample** (training only): label every proposal with the class of its best ground truth if their
   IoU is at least 0.5, else background, and keep at most 512 per image, 25 % of them foreground
   (:func:`sample_rois`; the ground-truth boxes are added to the proposals first, like torchvision);
2. **pool**: RoI Align cuts a fixed 7 × 7 grid of features out of the shared feature map for each
   proposal (:func:`coursepkg.ops.roi_pool.roi_align`, called by the detector);
3. **head**: two fully connected layers, then a softmax classifier over ``K + 1`` classes
   (background at index 0) and one box regressor per class (:class:`FastRCNNHead`);
4. **loss** (training): cross-entropy plus smooth-L1 on the true class's box (:func:`fastrcnn_loss`);
5. **post-process** (inference): softmax, per-class decoding, clipping, a score threshold, removal
   of tiny boxes, per-class NMS at 0.5 and the top 100 (:func:`postprocess_detections`).

Shapes::

    proposals                 [P, 4]           float xyxy, pixels (one image)
    gt_boxes, gt_labels       [G, 4], [G]      labels in 0..K-1 (the dataset's numbering)
    RoISample.labels          [S]              int64 in 0..K, 0 = background (softmax numbering)
    roi_features              [R, C, 7, 7]     RoI Align output
    class_logits              [R, K + 1]
    box_regression            [R, 4 * (K + 1)] one (d_x, d_y, d_w, d_h) per class, background too
    detections                boxes [D, 4], scores [D], labels [D] in 0..K-1

Box deltas are encoded with weights ``(10, 10, 5, 5)`` (torchvision's default for this stage, the
inverse of py-faster-rcnn's target standard deviations 0.1, 0.1, 0.2, 0.2).

Chapter: book/07_faster_rcnn (section "The second stage and end-to-end training").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coursepkg.models.assignment import (
    IGNORED,
    NEGATIVE,
    _match_anchors,
    _sample_balanced_many,
)
from coursepkg.ops.box_coding import _check_weights, _decode_boxes, _encode_boxes
from coursepkg.ops.boxes import _box_iou, _clip_boxes_to_image, _remove_small_boxes
from coursepkg.ops.labels import _to_softmax_labels
from coursepkg.ops.nms import _nms_core
from coursepkg.ops.validation import (
    check_boxes,
    check_finite,
    check_image_size,
    check_int,
    check_labels,
    check_number,
    check_positive_size,
    check_probability,
    check_reduction,
    check_tensor,
)

#: torchvision's ``bbox_reg_weights`` default for the second stage.
ROI_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


class RoISample(NamedTuple):
    """The proposals one image contributes to a training step, with their targets.

    Attributes:
        proposals: ``[S, 4]`` float xyxy, the sampled boxes (RoI Align pools these).
        labels: ``[S]`` int64 in ``0..K``; 0 is background (softmax numbering).
        regression_targets: ``[S, 4]`` encoded ``(t_x, t_y, t_w, t_h)`` towards each box's matched
            ground truth (meaningless, but finite, for background rows; the loss ignores them).
        matched_gt: ``[S]`` int64, index of the matched ground truth (0 for an image without any).
    """

    proposals: Tensor
    labels: Tensor
    regression_targets: Tensor
    matched_gt: Tensor


class FastRCNNOutput(NamedTuple):
    """Raw outputs of :class:`FastRCNNHead` for ``R`` RoIs.

    Attributes:
        class_logits: ``[R, K + 1]``, column 0 is background.
        box_regression: ``[R, 4 * (K + 1)]``, columns ``4c:4c+4`` are class ``c``'s deltas.
    """

    class_logits: Tensor
    box_regression: Tensor


class FastRCNNLoss(NamedTuple):
    """The two terms of the Fast R-CNN multi-task loss (Fast R-CNN Eq. (1), λ = 1).

    Attributes:
        classification: scalar, mean cross-entropy over the sampled RoIs (``reduction="mean"``;
            the sum for ``"sum"``, ``[N]`` per RoI for ``"none"``).
        box_regression: scalar, smooth-L1 summed over foreground RoIs divided by the number of
            sampled RoIs (torchvision's normaliser; the sum for ``"sum"``, ``[N]`` per RoI, 0 for
            background, for ``"none"``).
    """

    classification: Tensor
    box_regression: Tensor


def sample_rois(
    proposals: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    *,
    batch_size_per_image: int = 512,
    positive_fraction: float = 0.25,
    fg_iou_thresh: float = 0.5,
    add_gt_boxes: bool = True,
    box_weights: Sequence[float] = ROI_BOX_WEIGHTS,
    generator: torch.Generator | None = None,
) -> RoISample:
    """Label, sample and encode the training RoIs of one image (Fast R-CNN §2.3, "Mini-batch sampling").

    A proposal is foreground, with its best ground truth's class, if that IoU is at least
    ``fg_iou_thresh``; every other proposal is background (IoU in ``[0, fg_iou_thresh)``, as in
    torchvision; Fast R-CNN used ``[0.1, 0.5)``). Then at most ``batch_size_per_image`` are kept, at most
    ``positive_fraction`` of them foreground, the rest background
    (:func:`coursepkg.models.assignment.sample_balanced`). With ``add_gt_boxes`` the ground-truth boxes
    join the proposals first (torchvision's ``add_gt_proposals``): early in training the RPN
    proposes nothing useful and the head would otherwise see no foreground at all.

    Runs under ``torch.no_grad()``: targets are constants.

    Args:
        proposals: ``[P, 4]`` float xyxy, the RPN's boxes for this image.
        gt_boxes: ``[G, 4]`` float xyxy with positive widths and heights; ``G`` may be 0.
        gt_labels: ``[G]`` int64 in ``0..K-1``.
        batch_size_per_image: RoIs per image (torchvision 512; Fast R-CNN 64 per image, 128 per batch).
        positive_fraction: largest share of foreground RoIs (0.25 in both).
        fg_iou_thresh: IoU for foreground (0.5 in both).
        add_gt_boxes: append ``gt_boxes`` to ``proposals`` before matching.
        box_weights: box-coding weights (``weights`` of :func:`coursepkg.ops.box_coding.encode_boxes`),
            :data:`ROI_BOX_WEIGHTS` by default.
        generator: random source of the sampler.

    Returns:
        :class:`RoISample`; ``S <= batch_size_per_image`` rows, foreground first.

    Raises:
        TypeError: for integer boxes or non-int64 labels.
        ValueError: on bad shapes, mismatched lengths, a ground truth with zero width or height,
            or thresholds outside their range.

    Chapter: book/07_faster_rcnn (section "The second stage and end-to-end training").
    """
    check_boxes(proposals, "proposals")
    check_boxes(gt_boxes, "gt_boxes")
    check_labels(gt_labels, "gt_labels", gt_boxes.shape[0])
    check_positive_size(gt_boxes, "gt_boxes")
    settings = _check_sampling_settings(
        batch_size_per_image, positive_fraction, fg_iou_thresh, box_weights
    )
    return _sample_rois(proposals, gt_boxes, gt_labels, *settings, add_gt_boxes, generator)


def _check_sampling_settings(
    batch_size_per_image: int,
    positive_fraction: float,
    fg_iou_thresh: float,
    box_weights: Sequence[float],
) -> tuple[int, float, float, tuple[float, float, float, float]]:
    """The settings of :func:`sample_rois`, checked (on the host) and normalised."""
    return (
        check_int(batch_size_per_image, "batch_size_per_image", low=0),
        check_probability(positive_fraction, "positive_fraction"),
        check_number(fg_iou_thresh, "fg_iou_thresh", low=0.0, high=1.0, low_open=True),
        _check_weights(box_weights, "box_weights"),
    )


def _sample_rois(
    proposals: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    batch_size_per_image: int,
    positive_fraction: float,
    fg_iou_thresh: float,
    box_weights: tuple[float, float, float, float],
    add_gt_boxes: bool,
    generator: torch.Generator | None,
) -> RoISample:
    """:func:`sample_rois` without the checks, for a detector that validated its inputs."""
    return _sample_rois_batch(
        [proposals], [gt_boxes], [gt_labels], batch_size_per_image, positive_fraction,
        fg_iou_thresh, box_weights, add_gt_boxes, generator,
    )[0]  # fmt: skip


def _sample_rois_batch(
    proposals: Sequence[Tensor],
    gt_boxes: Sequence[Tensor],
    gt_labels: Sequence[Tensor],
    batch_size_per_image: int,
    positive_fraction: float,
    fg_iou_thresh: float,
    box_weights: tuple[float, float, float, float],
    add_gt_boxes: bool,
    generator: torch.Generator | None,
    min_iou: float = 0.0,
) -> list[RoISample]:
    """:func:`_sample_rois` for every image of a batch, with one host sync for all of them.

    Each image is labelled first; the sampler then reads every image's counts at once and draws
    image by image, as one call per image would (:func:`_sample_balanced_many`).

    Args:
        proposals, gt_boxes, gt_labels: one entry per image, validated by the caller.
        min_iou: leave out (never sample) the proposals whose best IoU with a ground truth is
            below it, all of them in an image without ground truth: Fast R-CNN's background
            range ``[0.1, 0.5)``. The same samples as removing them first with
            :func:`coursepkg.models.fast_rcnn.drop_easy_background`, without the boolean-mask
            selection (a host sync per image). The added ground truths are always kept.
        The other arguments: as :func:`sample_rois`.
    """
    with torch.no_grad():
        labelled = [
            _label_rois(p, g.to(p.dtype), fg_iou_thresh, add_gt_boxes, min_iou)
            for p, g in zip(proposals, gt_boxes, strict=True)
        ]
        draws = _sample_balanced_many(
            [fg_bg for _, _, fg_bg in labelled], batch_size_per_image, positive_fraction, generator
        )
        samples = []
        for (boxes, matched_gt, _), (pos_idx, neg_idx), gt, labels in zip(
            labelled, draws, gt_boxes, gt_labels, strict=True
        ):
            keep = torch.cat([pos_idx, neg_idx])  # [S]
            roi_labels = torch.zeros(keep.shape[0], dtype=torch.int64, device=boxes.device)
            if gt.shape[0] > 0:
                roi_labels[: pos_idx.shape[0]] = _to_softmax_labels(labels[matched_gt[pos_idx]])
                reference = gt.to(boxes.dtype)[matched_gt[keep]]  # [S, 4]
            else:
                reference = boxes[keep]  # background only: any finite target will do
            sampled = boxes[keep]
            targets = _encode_boxes(reference, sampled, box_weights)  # [S, 4]
            samples.append(RoISample(sampled, roi_labels, targets, matched_gt[keep]))
    return samples


def _label_rois(
    proposals: Tensor, gt_boxes: Tensor, fg_iou_thresh: float, add_gt_boxes: bool, min_iou: float
) -> tuple[Tensor, Tensor, Tensor]:
    """The boxes to sample from ``[P', 4]``, their matched ground truth and their label ``[P']``
    (1 foreground, 0 background, -1 left out: below ``min_iou``); no host synchronisation."""
    num_proposals = proposals.shape[0]
    if add_gt_boxes:
        proposals = torch.cat([proposals, gt_boxes])  # [P + G, 4]
    num = proposals.shape[0]
    if gt_boxes.shape[0] == 0:
        # No object: every proposal is background (or too easy a one), matched to a dummy index.
        matched_gt = proposals.new_zeros(num, dtype=torch.int64)
        fg_bg = torch.full_like(matched_gt, IGNORED if min_iou > 0 else NEGATIVE)
        return proposals, matched_gt, fg_bg
    iou = _box_iou(gt_boxes, proposals)  # [G, P']
    # Equal thresholds: nothing is ignored; no low-quality matches in the second stage.
    match = _match_anchors(iou, fg_iou_thresh, fg_iou_thresh, False)
    fg_bg = match.labels
    if min_iou > 0 and num_proposals > 0:
        easy = iou[:, :num_proposals].amax(dim=0) < min_iou  # [P]; the ground truths stay
        easy = F.pad(easy, (0, num - num_proposals))  # [P']
        fg_bg = torch.where(easy, IGNORED, fg_bg)
    return proposals, match.matched_gt.clamp(min=0), fg_bg


class FastRCNNHead(nn.Module):
    """Two fully connected layers, then a ``K + 1``-way classifier and per-class box deltas.

    The "TwoMLPHead" + "FastRCNNPredictor" of torchvision (Fast R-CNN §2: fc6, fc7, then two
    sibling layers). The sibling layers start small (std 0.01 for the scores, 0.001 for the
    deltas, detectron2's initialisation), so training from scratch starts from uniform class
    probabilities and boxes equal to the proposals.

    Args:
        in_channels: channels ``C`` of the pooled features.
        roi_size: side of the pooled grid (7).
        representation_size: width of fc6 and fc7 (torchvision 1024).
        num_classes: ``K``, object classes without background.

    Shapes:
        ``[R, C, roi_size, roi_size]`` -> :class:`FastRCNNOutput` with ``[R, K + 1]`` and
        ``[R, 4 * (K + 1)]``.

    Chapter: book/07_faster_rcnn (section "The second stage and end-to-end training").
    """

    def __init__(
        self, in_channels: int, roi_size: int, representation_size: int, num_classes: int
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (background is added), got {num_classes}")
        self.in_channels, self.roi_size = in_channels, roi_size
        self.fc6 = nn.Linear(in_channels * roi_size * roi_size, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)
        self.cls_score = nn.Linear(representation_size, num_classes + 1)
        self.bbox_pred = nn.Linear(representation_size, 4 * (num_classes + 1))
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, roi_features: Tensor) -> FastRCNNOutput:
        expected = (self.in_channels, self.roi_size, self.roi_size)
        if roi_features.dim() != 4 or tuple(roi_features.shape[1:]) != expected:
            raise ValueError(
                f"roi_features must be [R, {', '.join(map(str, expected))}], "
                f"got {list(roi_features.shape)}"
            )
        x = roi_features.flatten(start_dim=1)  # [R, C * 7 * 7]
        x = F.relu(self.fc6(x))  # [R, representation_size]
        x = F.relu(self.fc7(x))
        return FastRCNNOutput(self.cls_score(x), self.bbox_pred(x))


def fastrcnn_loss(
    class_logits: Tensor,
    box_regression: Tensor,
    labels: Tensor,
    regression_targets: Tensor,
    *,
    beta: float = 1.0 / 9,
    reduction: str = "mean",
) -> FastRCNNLoss:
    """The Fast R-CNN multi-task loss, normalised as torchvision does (Fast R-CNN Eq. (1)).

    ``L = L_cls + λ [u >= 1] L_loc`` with λ = 1, per RoI ``i``:

    * ``classification_i = CE(class_logits_i, u_i)``;
    * ``box_regression_i = smoothL1_beta(box_regression_i[u_i] - t_i)`` summed over the four deltas
      of the true class, for a foreground RoI (``u_i >= 1``); 0 for a background RoI.

    ``reduction`` as in ``torch.nn.functional``: ``"none"`` returns those per-RoI terms, ``"sum"``
    their sums, and ``"mean"`` (the default) divides both sums by the number of sampled RoIs ``N``
    (not by the number of foreground RoIs): torchvision's ``fastrcnn_loss`` exactly, including
    ``beta = 1/9`` (the paper's smooth-L1 is ``beta = 1``).

    With ``N = 0`` (no RoI at all) the reduced terms are zero, still attached to the graph, instead
    of the NaN a mean over nothing would give.

    Args:
        class_logits: ``[N, K + 1]`` float.
        box_regression: ``[N, 4 * (K + 1)]`` float.
        labels: ``[N]`` int64 in ``0..K``, 0 = background.
        regression_targets: ``[N, 4]`` float encoded targets (:func:`sample_rois`).
        beta: smooth-L1 transition point, as in ``torch.nn.functional.smooth_l1_loss``.
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.

    Returns:
        :class:`FastRCNNLoss` of two scalars, or of two ``[N]`` tensors for ``reduction="none"``.

    Raises:
        TypeError: if ``labels`` is not int64.
        ValueError: on inconsistent shapes, labels outside ``0..K`` or an unknown ``reduction``.

    Chapter: book/07_faster_rcnn (section "The second stage and end-to-end training").
    """
    check_reduction(reduction)
    check_tensor(class_logits, "class_logits", shape=("N", "K + 1"), dtype="float")
    if class_logits.shape[1] < 2:
        raise ValueError(f"class_logits must be [N, K + 1] with K >= 1, got {list(class_logits.shape)}")
    num, num_classes = class_logits.shape
    check_tensor(box_regression, "box_regression", shape=(num, 4 * num_classes), dtype="float")
    check_tensor(labels, "labels", shape=(num,), dtype=torch.int64)
    check_tensor(regression_targets, "regression_targets", shape=(num, 4), dtype="float")
    beta = check_number(beta, "beta", low=0.0)
    if num == 0 and reduction != "none":
        zero = class_logits.sum() + box_regression.sum()  # 0, but keeps the graph connected
        return FastRCNNLoss(zero, zero)
    if bool(((labels < 0) | (labels >= num_classes)).any()):
        raise ValueError(
            f"labels must be in 0..{num_classes - 1} (0 = background), got min "
            f"{int(labels.min())} and max {int(labels.max())}"
        )
    return _fastrcnn_loss(class_logits, box_regression, labels, regression_targets, beta, reduction)


def _fastrcnn_loss(
    class_logits: Tensor,
    box_regression: Tensor,
    labels: Tensor,
    regression_targets: Tensor,
    beta: float,
    reduction: str,
) -> FastRCNNLoss:
    """:func:`fastrcnn_loss` on checked inputs (labels a detector built), without host syncs."""
    num, num_classes = class_logits.shape
    if num == 0 and reduction != "none":
        zero = class_logits.sum() + box_regression.sum()  # 0, but keeps the graph connected
        return FastRCNNLoss(zero, zero)
    # The true class's four deltas of every RoI ([N, 4]; background's for background RoIs), and
    # a mask instead of selecting the foreground rows: a selection's size waits for the device.
    index = labels[:, None, None].expand(num, 1, 4)  # [N, 1, 4]
    deltas = box_regression.reshape(num, num_classes, 4).gather(1, index).squeeze(1)  # [N, 4]
    fg = (labels > 0)[:, None]  # [N, 1]
    # Background rows compare 0 with 0: no loss and no gradient (even from a NaN there).
    box = F.smooth_l1_loss(
        torch.where(fg, deltas, 0.0),
        torch.where(fg, regression_targets, 0.0),
        beta=beta,
        reduction="none" if reduction == "none" else "sum",
    )
    if reduction == "none":  # [N], 0 for background RoIs
        box = box.sum(1).to(box_regression.dtype)
        return FastRCNNLoss(F.cross_entropy(class_logits, labels, reduction="none"), box)
    classification = F.cross_entropy(class_logits, labels, reduction=reduction)
    # "mean": torchvision's normaliser, all sampled RoIs, foreground and background.
    return FastRCNNLoss(classification, box / num if reduction == "mean" else box)


def postprocess_detections(
    class_logits: Tensor,
    box_regression: Tensor,
    proposals: Tensor,
    image_size: Sequence[int],
    *,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
    min_size: float = 1e-2,
    box_weights: Sequence[float] = ROI_BOX_WEIGHTS,
) -> dict[str, Tensor]:
    """Turn the head's outputs for one image into final detections (torchvision's defaults).

    For every proposal and every object class ``c`` (background dropped): score
    ``softmax(class_logits)[c]``, box ``decode(box_regression[c], proposal)`` clipped to the image.
    Candidates scoring at most ``score_thresh`` or with a side below ``min_size`` go, NMS runs per
    class at ``nms_thresh`` (:func:`coursepkg.ops.nms.batched_nms`), and the best
    ``detections_per_img`` remain. One proposal may thus yield boxes of several classes.
    Same result as torchvision's ``RoIHeads.postprocess_detections``, with labels shifted back to
    ``0..K-1``.

    Args:
        class_logits: ``[R, K + 1]`` float.
        box_regression: ``[R, 4 * (K + 1)]`` float.
        proposals: ``[R, 4]`` float xyxy, the boxes the features were pooled from.
        image_size: ``(height, width)`` for clipping.
        score_thresh: keep scores strictly above this (0.05).
        nms_thresh: per-class NMS IoU threshold (0.5).
        detections_per_img: at most this many detections (100).
        min_size: smallest side in pixels after clipping (torchvision's 1e-2).
        box_weights: box-coding weights used in training.

    Returns:
        ``{"boxes": [D, 4], "scores": [D], "labels": [D] int64 in 0..K-1}``, scores decreasing.

    Raises:
        TypeError, ValueError: on inconsistent shapes, NaN or inf in the head's outputs, or a
            threshold, size or count outside its range.

    Chapter: book/07_faster_rcnn (section "Detections and mAP").
    """
    check_boxes(proposals, "proposals")
    num = proposals.shape[0]
    check_tensor(class_logits, "class_logits", shape=(num, "K + 1"), dtype="float")
    if class_logits.shape[1] < 2:
        raise ValueError(f"class_logits must be [{num}, K + 1] with K >= 1, got {list(class_logits.shape)}")
    num_classes = class_logits.shape[1]
    check_tensor(box_regression, "box_regression", shape=(num, 4 * num_classes), dtype="float")
    # One host sync for both; NaN scores would otherwise be dropped by the threshold in silence.
    if not bool(torch.isfinite(class_logits).all() & torch.isfinite(box_regression).all()):
        check_finite(class_logits, "class_logits")
        check_finite(box_regression, "box_regression")
    image_size = check_image_size(image_size)
    score_thresh = check_probability(score_thresh, "score_thresh")
    nms_thresh = check_probability(nms_thresh, "nms_thresh")
    detections_per_img = check_int(detections_per_img, "detections_per_img", low=0)
    min_size = check_number(min_size, "min_size", low=0.0)
    box_weights = _check_weights(box_weights, "box_weights")

    # Checked once above; the steps below call the unchecked cores.
    scores = F.softmax(class_logits, dim=-1)[:, 1:]  # [R, K], background dropped
    boxes = _decode_boxes(box_regression, proposals.to(box_regression.dtype), box_weights)
    boxes = boxes.reshape(num, num_classes, 4)
    boxes = _clip_boxes_to_image(boxes[:, 1:].reshape(-1, 4), image_size)  # [R * K, 4]
    labels = torch.arange(num_classes - 1, device=scores.device).repeat(num)  # [R * K]: 0..K-1
    scores = scores.reshape(-1)  # [R * K], row-major like boxes and labels

    keep = torch.nonzero(scores > score_thresh).flatten()
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = _remove_small_boxes(boxes, min_size)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = _nms_core(boxes, scores, nms_thresh, labels)[:detections_per_img]  # scores decreasing
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


def postprocess_batch(
    class_logits: Tensor,
    box_regression: Tensor,
    proposals: Sequence[Tensor],
    image_size: Sequence[int],
    *,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
    min_size: float = 1e-2,
    box_weights: Sequence[float] = ROI_BOX_WEIGHTS,
) -> list[dict[str, Tensor]]:
    """:func:`postprocess_detections` for a batch whose RoIs are all images' proposals in a row.

    The head runs once on the concatenated RoIs of a batch; this splits its outputs back per image
    (image ``i`` owns the next ``len(proposals[i])`` rows) and post-processes each image in float32,
    also when the head ran under mixed precision.

    Args:
        class_logits: ``[R, K + 1]`` with ``R = sum(len(p) for p in proposals)``.
        box_regression: ``[R, 4 * (K + 1)]``.
        proposals: per image ``[P_i, 4]`` float xyxy.
        image_size: ``(height, width)`` shared by the batch.
        score_thresh, nms_thresh, detections_per_img, min_size, box_weights: as in
            :func:`postprocess_detections`, with the same defaults.

    Returns:
        One detections dict per image, as :func:`postprocess_detections` returns.

    Raises:
        ValueError: if the head's rows do not add up to the proposals.
    """
    counts = [p.shape[0] for p in proposals]
    if class_logits.shape[0] != sum(counts) or box_regression.shape[0] != sum(counts):
        raise ValueError(
            f"the head returned {class_logits.shape[0]} class rows and {box_regression.shape[0]} "
            f"box rows for {sum(counts)} proposals ({counts} per image)"
        )
    return [
        postprocess_detections(
            logits,
            deltas,
            boxes,
            image_size,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
            min_size=min_size,
            box_weights=box_weights,
        )
        for logits, deltas, boxes in zip(
            class_logits.float().split(counts),
            box_regression.float().split(counts),
            proposals,
            strict=True,
        )
    ]
