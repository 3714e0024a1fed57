"""RetinaNet: a one-stage detector trained with the focal loss (Lin et al., 2017).

RetinaNet is one network with no proposal stage (Focal Loss for Dense Object Detection, §4):

1. **backbone + FPN** (:mod:`coursepkg.models.backbones`, :mod:`coursepkg.models.fpn`): C3..C5
   become the pyramid P3..P7 (strides 8 to 128, ``D`` channels each; P6 from C5, P7 from P6);
2. **anchors** (:func:`coursepkg.models.anchors.multilevel_anchors`): on level ``l``, three ratios
   times three octave scales of one base size, ``A = 9`` per location;
3. **heads** (:mod:`coursepkg.models.dense_heads`): a classification subnet (``A * K`` sigmoid
   logits per location, bias at the prior π = 0.01) and a class-agnostic box subnet (``A * 4``
   deltas), shared by every level;
4. **assignment** (:func:`retinanet_targets`): positive at IoU >= 0.5 with a ground truth, negative
   below 0.4, ignored in between, plus each ground truth's best anchors (torchvision's
   ``Matcher(0.5, 0.4, allow_low_quality_matches=True)``);
5. **loss** (:func:`retinanet_loss`): the focal loss summed over every non-ignored (anchor, class)
   pair, plus the box loss summed over the positives, both divided by the number of positives
   (§4.1), per image, then averaged over the batch (torchvision). The box loss is smooth-L1 on
   the deltas (the paper), or an IoU loss on the decoded boxes (``config.box_loss``, one of
   :data:`BOX_LOSSES`: book/12_iou_losses compares them);
6. **inference** (:func:`coursepkg.models.dense_decoding.decode_dense_detections`): per level the
   1000 best (anchor, class) pairs above 0.05, decoded, class-wise NMS at 0.5, 100 kept.

Shapes (B images, K classes, A anchors per location, N = sum_l H_l W_l A anchors)::

    images                                [B, 3, H, W]
    features (P3..P7)                     L x [B, D, ceil(H / s_l), ceil(W / s_l)]
    RetinaNet(...)(images).cls_logits     [B, N, K]
    RetinaNet(...)(images).box_regression [B, N, 4]
    anchors                               [N, 4]   levels concatenated, finest first
    retinanet_targets(...)                labels [N], matched_gt [N], classes [N], target_deltas [N, 4]

Chapter: book/10_retinanet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from coursepkg.models.anchors import multilevel_anchors
from coursepkg.models.assignment import POSITIVE, _match_anchors
from coursepkg.models.backbones import MultiScaleBackbone
from coursepkg.models.dense_decoding import decode_dense_detections
from coursepkg.models.dense_heads import ClassificationHead, RegressionHead
from coursepkg.models.detector import Detector, check_images, check_targets
from coursepkg.models.fpn import FPN
from coursepkg.ops.box_coding import (
    DEFAULT_BBOX_XFORM_CLIP,
    _check_weights,
    _decode_boxes,
    _encode_boxes,
)
from coursepkg.ops.boxes import _box_iou
from coursepkg.ops.focal import _sigmoid_focal_loss
from coursepkg.ops.iou_losses import DEFAULT_EPS, _giou_loss, _iou_loss, _rectified_iou_loss
from coursepkg.ops.labels import _one_hot_labels
from coursepkg.ops.validation import (
    check_boxes,
    check_finite,
    check_int,
    check_labels,
    check_number,
    check_probability,
    check_reduction,
    check_tensor,
)

__all__ = [
    "BOX_LOSSES",
    "RetinaNet",
    "RetinaNetConfig",
    "RetinaNetLoss",
    "RetinaNetOutput",
    "RetinaNetTargets",
    "retinanet_loss",
    "retinanet_targets",
]

#: The box losses of :class:`RetinaNetConfig`'s ``box_loss``: smooth-L1 on the deltas, or an IoU
#: loss on the decoded boxes (:mod:`coursepkg.ops.iou_losses`; "rectified" is the course's
#: stand-in for Wang & Zhang's loss, :func:`coursepkg.ops.iou_losses.rectified_iou_loss`).
BOX_LOSSES = ("smooth_l1", "iou", "giou", "rectified")

# The IoU losses on the decoded boxes of the positives, per box ([M, 4], [M, 4] -> [M]), with
# torchvision's eps; the checked versions are coursepkg.ops.iou_losses' iou_loss, giou_loss and
# rectified_iou_loss (β = 0.95, k = 2 / β).
_IOU_BOX_LOSSES = {"iou": _iou_loss, "giou": _giou_loss, "rectified": _rectified_iou_loss}


def _check_box_loss(box_loss: object) -> str:
    if not isinstance(box_loss, str) or box_loss not in BOX_LOSSES:
        raise ValueError(f"box_loss must be one of {', '.join(map(repr, BOX_LOSSES))}, got {box_loss!r}")
    return box_loss


@dataclass(frozen=True)
class RetinaNetConfig:
    """Every setting of :class:`RetinaNet`, with where its default comes from.

    "paper" is Focal Loss for Dense Object Detection (Lin et al., 2017); "torchvision" is
    ``torchvision.models.detection.RetinaNet``; "course" marks a choice for 128 × 128 shapes images
    and a backbone trained from scratch in minutes on a CPU.

    Anchor sizes for the shapes data. The paper puts sizes 32..512 (four times the stride) on
    P3..P7 of ~800-pixel images. ``ShapesDataset``'s objects are 3 to 64 pixels on 128 × 128 images:
    the course halves the ratio to two times the stride, sizes 16, 32, 64, 128, 256, with the
    paper's three octave scales (16 to 25 px on P3, ...). Measured on 300 training images (1,030
    objects): median best IoU 0.61, 70 % of the objects have an anchor at IoU >= 0.5 and an object
    has 5.5 positive anchors on average (sizes 8..128, one stride, give 58 % and 1.9); the
    low-quality matches make every object positive somewhere. P6 and P7 (2 × 2 and 1 × 1 maps)
    hold few anchors and cost little, and keep the paper's pyramid.
    """

    num_classes: int = 5  # K object classes, no background column (ShapesDataset's five)
    # --- backbone and FPN -----------------------------------------------------------------------
    backbone_channels: tuple[int, int, int] = (32, 64, 128)  # course: C3, C4, C5 (ResNet-50: 512, 1024, 2048)
    stem_channels: int = 16  # course: the stride-4 stem of MultiScaleBackbone
    fpn_channels: int = 64  # course (paper 256)
    head_convs: int = 2  # course (paper 4): 3 x 3 convs in each subnet's tower
    # course: GroupNorm(32) in the towers, as torchvision's retinanet_resnet50_fpn_v2 and FCOS
    # (the paper: none). Trained from scratch, the N(0, 0.01) towers without it learn slowly.
    head_norm: str | None = "group"
    # --- anchors --------------------------------------------------------------------------------
    anchor_sizes: tuple[float, ...] = (16.0, 32.0, 64.0, 128.0, 256.0)  # course: 2 x stride (paper 32..512)
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # paper
    anchor_scales: tuple[float, ...] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))  # paper: octave scales
    anchor_offset: float = 0.5  # course convention: centres mid-cell (torchvision: 0)
    round_base_anchors: bool = False  # torchvision rounds the zero-centred anchors: True to match it
    # --- assignment -----------------------------------------------------------------------------
    fg_iou_thresh: float = 0.5  # paper, torchvision
    bg_iou_thresh: float = 0.4  # paper, torchvision: [0.4, 0.5) is ignored
    allow_low_quality_matches: bool = True  # torchvision (Detectron's RetinaNet too)
    # --- loss -----------------------------------------------------------------------------------
    focal_alpha: float = 0.25  # paper (with gamma = 2)
    focal_gamma: float = 2.0  # paper
    # paper: smooth-L1 on the deltas; "iou" (1 - IoU), "giou" or "rectified" (the course's
    # stand-in for Wang & Zhang 2020) on the decoded boxes instead (book/12_iou_losses)
    box_loss: str = "smooth_l1"
    # torchvision's box loss is L1 ("l1", the default of its RetinaNet); smooth-L1 with beta 0 is
    # exactly L1. The paper's smooth-L1 is Detectron's beta = 0.11. Unused by the IoU losses.
    box_loss_beta: float = 0.0
    prior: float = 0.01  # paper: initial foreground probability π of every anchor
    box_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)  # torchvision
    # --- inference ------------------------------------------------------------------------------
    score_thresh: float = 0.05  # paper, torchvision
    topk_candidates: int = 1000  # paper, torchvision: per level, before NMS
    nms_thresh: float = 0.5  # paper, torchvision
    detections_per_img: int = 100  # paper (torchvision 300)

    @property
    def num_anchors(self) -> int:
        """A, anchors per location."""
        return len(self.anchor_ratios) * len(self.anchor_scales)

    @property
    def strides(self) -> tuple[int, ...]:
        """Strides of P3..P7."""
        return (8, 16, 32, 64, 128)

    def __post_init__(self) -> None:
        check_int(self.num_classes, "num_classes", low=1)
        for name in ("fpn_channels", "stem_channels"):
            check_int(getattr(self, name), name, low=1)
        check_int(self.head_convs, "head_convs", low=0)
        if self.head_norm not in (None, "group"):
            raise ValueError(f"head_norm must be None or 'group', got {self.head_norm!r}")
        if self.head_norm == "group" and self.fpn_channels % 32:
            raise ValueError(f"fpn_channels must be a multiple of 32 with head_norm='group', got {self.fpn_channels}")
        if len(self.backbone_channels) != 3:
            raise ValueError(f"backbone_channels must be 3 ints (C3, C4, C5), got {self.backbone_channels}")
        for i, c in enumerate(self.backbone_channels):
            check_int(c, f"backbone_channels[{i}]", low=1)
        if len(self.anchor_sizes) != len(self.strides):
            raise ValueError(
                f"anchor_sizes must have one size per level P3..P7 ({len(self.strides)}), "
                f"got {self.anchor_sizes}"
            )
        for name in ("anchor_sizes", "anchor_ratios", "anchor_scales"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"{name} must not be empty")
            for i, v in enumerate(values):
                check_number(v, f"{name}[{i}]", low=0.0, low_open=True)
        check_number(self.anchor_offset, "anchor_offset")
        for name in ("fg_iou_thresh", "bg_iou_thresh", "score_thresh", "nms_thresh"):
            check_probability(getattr(self, name), name)
        if self.bg_iou_thresh > self.fg_iou_thresh:
            raise ValueError(
                f"bg_iou_thresh must be <= fg_iou_thresh, got {self.bg_iou_thresh} > {self.fg_iou_thresh}"
            )
        check_number(self.focal_alpha, "focal_alpha", high=1.0)
        check_number(self.focal_gamma, "focal_gamma", low=0.0)
        _check_box_loss(self.box_loss)
        check_number(self.box_loss_beta, "box_loss_beta", low=0.0)
        check_number(self.prior, "prior", low=0.0, high=1.0, low_open=True, high_open=True)
        _check_weights(self.box_weights, "box_weights")
        check_int(self.topk_candidates, "topk_candidates", low=1)
        check_int(self.detections_per_img, "detections_per_img", low=0)


# ------------------------------------------------------------------------------- assignment


class RetinaNetTargets(NamedTuple):
    """Result of :func:`retinanet_targets` (one image, N anchors)."""

    labels: Tensor
    """[N] int64: 1 positive, 0 negative, -1 ignored (IoU in [bg_iou_thresh, fg_iou_thresh))."""
    matched_gt: Tensor
    """[N] int64: index of the anchor's best ground truth (-1 without ground truth)."""
    classes: Tensor
    """[N] int64: the class 0..K-1 of the matched ground truth for positives, -1 elsewhere."""
    target_deltas: Tensor
    """[N, 4] regression targets of the positives (encoded with ``box_weights``), 0 elsewhere."""


def retinanet_targets(
    anchors: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    fg_iou_thresh: float = 0.5,
    bg_iou_thresh: float = 0.4,
    allow_low_quality_matches: bool = True,
    box_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
) -> RetinaNetTargets:
    """Label every anchor of one image and build its class and box targets (RetinaNet §4).

    An anchor is positive if its IoU with some ground truth is ``>= fg_iou_thresh`` (0.5), negative
    if its best IoU is ``< bg_iou_thresh`` (0.4), ignored in between; with
    ``allow_low_quality_matches`` each ground truth's best anchors (ties included) are positive
    too, matched to their own best ground truth
    (:func:`coursepkg.models.assignment.match_anchors`, equal to torchvision's
    ``Matcher(0.5, 0.4, allow_low_quality_matches=True)``). A positive's class target is the
    one-hot of its ground truth's class; a negative's is all zeros; an ignored anchor is in no
    loss. An image without objects has every anchor negative.

    Args:
        anchors: [N, 4] float xyxy anchors of all levels.
        gt_boxes: [G, 4] float xyxy ground truths with positive widths and heights.
        gt_labels: [G] int64 classes in 0..K-1.
        fg_iou_thresh: IoU from which an anchor is positive (inclusive).
        bg_iou_thresh: IoU below which an anchor is negative (exclusive).
        allow_low_quality_matches: also make each ground truth's best anchors positive.
        box_weights: ``(w_x, w_y, w_w, w_h)`` of the box encoding (RetinaNet: all 1).

    Returns:
        :class:`RetinaNetTargets` ``(labels, matched_gt, classes, target_deltas)``.

    Raises:
        TypeError, ValueError: on invalid boxes, labels of the wrong length or dtype, a
            zero-size ground truth, thresholds outside [0, 1] or ``bg_iou_thresh >
            fg_iou_thresh``.

    Chapter: book/10_retinanet (section "Which anchors are positive").
    """
    check_boxes(anchors, "anchors")
    check_boxes(gt_boxes, "gt_boxes")
    check_labels(gt_labels, "gt_labels", gt_boxes.shape[0])
    wh = gt_boxes[:, 2:] - gt_boxes[:, :2]
    if gt_boxes.shape[0] and bool((wh <= 0).any()):
        raise ValueError("gt_boxes must have positive widths and heights (no regression target for log(0))")
    fg_iou_thresh = check_probability(fg_iou_thresh, "fg_iou_thresh")
    bg_iou_thresh = check_probability(bg_iou_thresh, "bg_iou_thresh")
    if bg_iou_thresh > fg_iou_thresh:
        raise ValueError(f"bg_iou_thresh must be <= fg_iou_thresh, got {bg_iou_thresh} > {fg_iou_thresh}")
    return _retinanet_targets(
        anchors, gt_boxes, gt_labels, fg_iou_thresh, bg_iou_thresh,
        bool(allow_low_quality_matches), _check_weights(box_weights, "box_weights"),
    )


@torch.no_grad()
def _retinanet_targets(
    anchors: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    fg_iou_thresh: float,
    bg_iou_thresh: float,
    allow_low_quality_matches: bool,
    box_weights: tuple[float, float, float, float],
) -> RetinaNetTargets:
    """:func:`retinanet_targets` without the checks, for a detector that checked its targets."""
    match = _match_anchors(
        _box_iou(gt_boxes, anchors.to(gt_boxes.dtype)), fg_iou_thresh, bg_iou_thresh,
        allow_low_quality_matches,
    )
    positive = match.labels == POSITIVE  # [N]
    if gt_boxes.shape[0] == 0:
        classes = torch.full_like(match.labels, -1)
        deltas = anchors.new_zeros(anchors.shape)
        return RetinaNetTargets(match.labels, match.matched_gt, classes, deltas)
    gt_index = match.matched_gt.clamp(min=0)  # [N]
    classes = torch.where(positive, gt_labels[gt_index], torch.full_like(gt_index, -1))
    deltas = _encode_boxes(gt_boxes[gt_index], anchors, box_weights)  # [N, 4]
    deltas = torch.where(positive[:, None], deltas, torch.zeros_like(deltas))
    return RetinaNetTargets(match.labels, match.matched_gt, classes, deltas)


# ------------------------------------------------------------------------------------- loss


class RetinaNetLoss(NamedTuple):
    """Result of :func:`retinanet_loss`: scalars, or ``[B]`` per image for ``reduction="none"``."""

    classification: Tensor
    """Focal loss over the non-ignored anchors, divided by max(N_pos, 1) of each image."""
    box_regression: Tensor
    """Box loss over the positive anchors, divided by max(N_pos, 1) of each image."""


def retinanet_loss(
    cls_logits: Tensor,
    box_regression: Tensor,
    labels: Tensor,
    classes: Tensor,
    target_deltas: Tensor,
    *,
    alpha: float = 0.25,
    gamma: float = 2.0,
    beta: float = 0.0,
    box_loss: str = "smooth_l1",
    anchors: Tensor | None = None,
    matched_boxes: Tensor | None = None,
    box_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    reduction: str = "mean",
) -> RetinaNetLoss:
    """RetinaNet's two loss terms, normalised by the number of positive anchors (§4.1).

    For image ``b`` with ``N_pos`` positive anchors:

    * classification: ``sum`` of :func:`coursepkg.ops.focal.sigmoid_focal_loss` over every
      (anchor, class) pair of the positive and negative anchors (ignored anchors excluded), with
      one-hot targets, divided by ``max(N_pos, 1)``;
    * box regression, ``box_loss="smooth_l1"`` (the paper): smooth-L1 (``beta``; ``beta = 0`` is
      L1, torchvision's default) of the deltas against ``target_deltas``, summed over the four
      values of every positive anchor, divided by ``max(N_pos, 1)``;
    * box regression, ``box_loss`` ``"iou"``, ``"giou"`` or ``"rectified"``: each positive's
      deltas decoded against its anchor (:func:`coursepkg.ops.box_coding.decode_boxes` with
      ``box_weights``, the boxes ``detect`` would return before clipping), and
      :func:`coursepkg.ops.iou_losses.iou_loss` (1 - IoU), ``giou_loss`` or
      ``rectified_iou_loss`` of that box against ``matched_boxes``, summed over the positives,
      divided by ``max(N_pos, 1)``. This is torchvision's RetinaNet with
      ``bbox_reg_type="giou"`` for ``"giou"``; ``target_deltas`` and ``beta`` are not used.

    The paper divides by the number of anchors assigned to a ground truth, N_pos: the easy
    negatives contribute almost nothing to the focal loss, so the positives set its scale.
    An image without objects gives a finite classification loss (all negatives, divided by 1) and
    a box loss of 0.

    ``reduction``: ``"none"`` returns the ``[B]`` per-image terms; ``"mean"`` (the default)
    averages them over the batch, exactly ``torchvision``'s ``RetinaNetHead.compute_loss``;
    ``"sum"`` adds them.

    Args:
        cls_logits: [B, N, K] float class logits.
        box_regression: [B, N, 4] float predicted deltas.
        labels: [B, N] int64, 1 positive, 0 negative, -1 ignored.
        classes: [B, N] int64, the class 0..K-1 of every positive (read only where ``labels == 1``).
        target_deltas: [B, N, 4] float regression targets (read only where ``labels == 1``).
        alpha: focal-loss alpha (a negative value turns the weighting off).
        gamma: focal-loss gamma (0: cross-entropy).
        beta: smooth-L1 ``beta`` of the box loss (0: L1).
        box_loss: one of :data:`BOX_LOSSES`.
        anchors: [N, 4] float xyxy anchors; required by the IoU losses.
        matched_boxes: [B, N, 4] float xyxy ground truth of each anchor (read only where
            ``labels == 1``); required by the IoU losses.
        box_weights: ``(w_x, w_y, w_w, w_h)`` of the box coding the deltas use (RetinaNet: 1).
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.

    Returns:
        ``RetinaNetLoss(classification, box_regression)``: scalars, or ``[B]`` each.

    Raises:
        TypeError, ValueError: on mismatched shapes or dtypes, NaN or inf logits or deltas,
            labels outside {-1, 0, 1}, a positive's class outside 0..K-1, an unknown
            ``box_loss`` or ``reduction``, or an IoU loss without valid ``anchors`` and
            ``matched_boxes``.

    Chapter: book/10_retinanet (section "The loss, normalised by the positives").
    """
    check_tensor(cls_logits, "cls_logits", shape=("B", "N", "K"), dtype="float")
    batch, num, num_classes = cls_logits.shape
    check_tensor(box_regression, "box_regression", shape=(batch, num, 4), dtype="float")
    check_tensor(labels, "labels", shape=(batch, num), dtype="int")
    check_tensor(classes, "classes", shape=(batch, num), dtype="int")
    check_tensor(target_deltas, "target_deltas", shape=(batch, num, 4), dtype="float")
    check_finite(cls_logits, "cls_logits")
    check_finite(box_regression, "box_regression")
    alpha = check_number(alpha, "alpha", high=1.0)
    gamma = check_number(gamma, "gamma", low=0.0)
    beta = check_number(beta, "beta", low=0.0)
    box_loss = _check_box_loss(box_loss)
    box_weights = _check_weights(box_weights, "box_weights")
    check_reduction(reduction)
    if not bool(((labels == 1) | (labels == 0) | (labels == -1)).all()):
        raise ValueError("labels must only contain 1 (positive), 0 (negative) and -1 (ignored)")
    positive = labels == 1
    if bool(((classes < 0) | (classes >= num_classes))[positive].any()):
        raise ValueError(f"classes of positive anchors must be in 0..{num_classes - 1}")
    if box_loss != "smooth_l1":
        _check_iou_loss_inputs(anchors, matched_boxes, positive, box_loss)
    return _retinanet_loss(
        cls_logits, box_regression, labels, classes, target_deltas, alpha=alpha, gamma=gamma,
        beta=beta, box_loss=box_loss, anchors=anchors, matched_boxes=matched_boxes,
        box_weights=box_weights, reduction=reduction,
    )


def _check_iou_loss_inputs(
    anchors: Tensor | None, matched_boxes: Tensor | None, positive: Tensor, box_loss: str
) -> None:
    """An IoU loss needs the anchors [N, 4] and every positive's ground truth [B, N, 4]."""
    batch, num = positive.shape
    if anchors is None or matched_boxes is None:
        raise ValueError(f"box_loss={box_loss!r} compares boxes: pass anchors and matched_boxes")
    check_boxes(anchors, "anchors")
    if anchors.shape[0] != num:
        raise ValueError(f"anchors must be [{num}, 4], got {list(anchors.shape)}")
    check_tensor(matched_boxes, "matched_boxes", shape=(batch, num, 4), dtype="float")
    check_boxes(matched_boxes[positive], "matched_boxes")


def _retinanet_loss(
    cls_logits: Tensor,
    box_regression: Tensor,
    labels: Tensor,
    classes: Tensor,
    target_deltas: Tensor,
    *,
    alpha: float,
    gamma: float,
    beta: float,
    reduction: str,
    box_loss: str = "smooth_l1",
    anchors: Tensor | None = None,
    matched_boxes: Tensor | None = None,
    box_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
) -> RetinaNetLoss:
    """:func:`retinanet_loss` without the checks; no host synchronisation."""
    positive = labels == POSITIVE  # [B, N]
    valid = labels >= 0  # [B, N]: positives and negatives; ignored anchors are in no loss
    # One-hot class targets: 1 at (positive anchor, its class), 0 everywhere else.
    one_hot = _one_hot_labels(classes, cls_logits.shape[-1], cls_logits.dtype)  # [B, N, K]
    one_hot = one_hot * positive[..., None]
    focal = _sigmoid_focal_loss(cls_logits, one_hot, alpha, gamma, "none")  # [B, N, K]
    cls_sum = (focal * valid[..., None]).sum(dim=(1, 2))  # [B]
    if box_loss == "smooth_l1":
        box = F.smooth_l1_loss(box_regression, target_deltas.to(box_regression.dtype), beta=beta, reduction="none")
        box = box.sum(dim=2)  # [B, N]
    else:
        box = _iou_box_loss(box_loss, box_regression, anchors, matched_boxes, positive, box_weights)
    box_sum = (box * positive).sum(dim=1)  # [B]
    # §4.1: normalise by the number of anchors assigned to a ground truth, per image.
    num_pos = positive.sum(dim=1).clamp(min=1).to(cls_logits.dtype)  # [B]
    per_image = RetinaNetLoss(cls_sum / num_pos, box_sum / num_pos)
    if reduction == "none":
        return per_image
    if reduction == "sum":
        return RetinaNetLoss(per_image.classification.sum(), per_image.box_regression.sum())
    return RetinaNetLoss(per_image.classification.mean(), per_image.box_regression.mean())


def _iou_box_loss(
    box_loss: str,
    box_regression: Tensor,
    anchors: Tensor,
    matched_boxes: Tensor,
    positive: Tensor,
    box_weights: tuple[float, float, float, float],
) -> Tensor:
    """An IoU loss of every anchor's decoded box against its ground truth, ``[B, N]``.

    Every anchor is decoded (no boolean indexing, so no host synchronisation); the caller keeps
    the positives. An anchor without a ground truth is compared with itself instead: a box of
    positive area, so its loss and gradient are finite before the mask drops them.
    """
    refs = anchors.to(box_regression.dtype).expand_as(box_regression)  # [B, N, 4]
    gt = torch.where(positive[..., None], matched_boxes.to(box_regression.dtype), refs)  # [B, N, 4]
    # The boxes the detector outputs: the same coding, weights and clip as inference.
    boxes = _decode_boxes(
        box_regression.reshape(-1, 4), refs.reshape(-1, 4), box_weights, DEFAULT_BBOX_XFORM_CLIP
    )  # [B * N, 4]
    loss = _IOU_BOX_LOSSES[box_loss](boxes, gt.reshape(-1, 4), DEFAULT_EPS)  # [B * N]
    return loss.reshape(positive.shape)


# ------------------------------------------------------------------------------------ model


class RetinaNetOutput(NamedTuple):
    """Raw outputs of :meth:`RetinaNet.forward` for a batch (levels concatenated, finest first)."""

    cls_logits: Tensor
    """[B, N, K] class logits."""
    box_regression: Tensor
    """[B, N, 4] box deltas relative to the anchors."""
    anchors: Tensor
    """[N, 4] the anchors, shared by every image of the batch."""
    num_per_level: list[int]
    """``H_l * W_l * A`` of every level, to split the rows back into levels."""


class _BatchTargets(NamedTuple):
    """The targets of a batch, for the loss (B images, N anchors)."""

    labels: Tensor  # [B, N] 1 positive, 0 negative, -1 ignored
    classes: Tensor  # [B, N] class of each positive, -1 elsewhere
    target_deltas: Tensor  # [B, N, 4] smooth-L1 targets of the positives
    matched_boxes: Tensor  # [B, N, 4] each anchor's ground truth (itself without one): IoU losses


class RetinaNet(Detector):
    """RetinaNet (Lin et al., 2017): backbone, FPN P3..P7, two subnets, focal loss; a Detector.

    ``forward(images)`` returns the raw :class:`RetinaNetOutput`; ``losses(images, targets)``
    returns ``{"classification", "bbox_regression"}`` (torchvision's names, each already divided by
    the positives, weights 1); ``detect(images)`` returns boxes, scores and labels ``0..K-1`` per
    image. ``model.train()`` / ``model.eval()`` switch batch norm only.

    Args:
        config: every hyper-parameter; the defaults suit 128 × 128 shapes images.
        backbone: a module with the dense backbone contract (``forward -> OrderedDict c3, c4, c5``,
            ``strides``, ``out_channels``); None builds :class:`MultiScaleBackbone` from
            ``config``.

    Chapter: book/10_retinanet.
    """

    def __init__(self, config: RetinaNetConfig | None = None, backbone: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.config = c = config or RetinaNetConfig()
        if backbone is None:
            backbone = MultiScaleBackbone(c.backbone_channels, c.stem_channels)
        self.backbone = backbone
        self.fpn = FPN(backbone.out_channels, c.fpn_channels, extra_blocks="p6p7", p6_input="c5")
        self.classification_head = ClassificationHead(
            c.fpn_channels, c.num_anchors, c.num_classes, c.prior, num_convs=c.head_convs,
            norm=c.head_norm,
        )
        self.regression_head = RegressionHead(
            c.fpn_channels, c.num_anchors, num_convs=c.head_convs, norm=c.head_norm
        )
        self._anchor_cache: dict[tuple, list[Tensor]] = {}

    def anchors_per_level(
        self,
        feature_sizes: Sequence[Sequence[int]],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> list[Tensor]:
        """The anchors of each level, ``L x [H_l * W_l * A, 4]`` (cached per sizes, dtype, device)."""
        c = self.config
        key = (tuple(map(tuple, feature_sizes)), dtype, torch.device(device or "cpu"))
        if key not in self._anchor_cache:
            self._anchor_cache[key] = multilevel_anchors(
                feature_sizes, c.strides, c.anchor_sizes, c.anchor_ratios, c.anchor_scales,
                c.anchor_offset, round_base_anchors=c.round_base_anchors,
                dtype=dtype, device=device,
            )
        return self._anchor_cache[key]

    def features(self, images: Tensor) -> list[Tensor]:
        """P3..P7 of a batch: ``L x [B, D, ceil(H / s_l), ceil(W / s_l)]``."""
        check_images(images)
        check_finite(images, "images")
        return list(self.fpn(self.backbone(images)).values())

    def forward(self, images: Tensor) -> RetinaNetOutput:
        """Raw head outputs for ``[B, 3, H, W]`` images, with the anchors they refer to."""
        features = self.features(images)
        cls_logits = self.classification_head(features)  # [B, N, K]
        box_regression = self.regression_head(features)  # [B, N, 4]
        dtype = torch.promote_types(cls_logits.dtype, torch.float32)  # float32 also under AMP
        levels = self.anchors_per_level([f.shape[-2:] for f in features], dtype, cls_logits.device)
        return RetinaNetOutput(
            cls_logits, box_regression, torch.cat(levels), [len(a) for a in levels]
        )

    def losses(self, images: Tensor, targets: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        """The training losses of one batch: focal classification and box regression (§4.1).

        Args:
            images: ``[B, 3, H, W]`` float.
            targets: B dicts with ``"boxes"`` ``[G_i, 4]`` (positive widths and heights) and
                ``"labels"`` ``[G_i]`` int64 in ``0..K-1``; ``G_i = 0`` is allowed.

        Returns:
            ``{"classification", "bbox_regression"}``, finite scalars (torchvision's names).

        Raises:
            ValueError, TypeError: on malformed images or targets, or a zero-size box.
        """
        c = self.config
        check_images(images)
        check_targets(targets, images.shape[0], num_classes=c.num_classes, positive_size=True)
        out = self(images)
        # Box and loss arithmetic in float32 at least, also under mixed precision (float16 heads).
        dtype = torch.promote_types(out.cls_logits.dtype, torch.float32)
        anchors = out.anchors.to(dtype)
        t = self._batch_targets(anchors, targets)
        loss = _retinanet_loss(
            out.cls_logits.to(dtype), out.box_regression.to(dtype), t.labels, t.classes,
            t.target_deltas, alpha=c.focal_alpha, gamma=c.focal_gamma, beta=c.box_loss_beta,
            reduction="mean", box_loss=c.box_loss, anchors=anchors, matched_boxes=t.matched_boxes,
            box_weights=c.box_weights,
        )
        return {"classification": loss.classification, "bbox_regression": loss.box_regression}

    def _batch_targets(self, anchors: Tensor, targets: Sequence[Mapping[str, Tensor]]) -> _BatchTargets:
        """:func:`retinanet_targets` of every image, stacked, with each anchor's ground truth box.

        ``anchors`` ([N, 4]) set the dtype; ``targets`` were checked by the caller.
        """
        c = self.config
        assigned, matched = [], []
        for t in targets:
            boxes = t["boxes"].to(anchors.dtype)
            a = _retinanet_targets(
                anchors, boxes, t["labels"], c.fg_iou_thresh, c.bg_iou_thresh,
                c.allow_low_quality_matches, c.box_weights,
            )
            assigned.append(a)
            # Each anchor's ground truth box ([N, 4]); anchors without one keep their own box.
            matched.append(boxes[a.matched_gt.clamp(min=0)] if len(boxes) else anchors)
        return _BatchTargets(
            torch.stack([a.labels for a in assigned]),  # [B, N]
            torch.stack([a.classes for a in assigned]),  # [B, N]
            torch.stack([a.target_deltas for a in assigned]),  # [B, N, 4]
            torch.stack(matched),  # [B, N, 4]
        )

    def detect(self, images: Tensor) -> list[dict[str, Tensor]]:
        """Detections per image: boxes ``[D, 4]``, scores ``[D]`` (decreasing), labels in 0..K-1.

        Call in ``eval()`` mode and under ``torch.no_grad()``.
        """
        c = self.config
        out = self(images)
        split = out.num_per_level
        dtype = torch.promote_types(out.cls_logits.dtype, torch.float32)  # float16 under AMP
        scores = torch.sigmoid(out.cls_logits.to(dtype)).split(split, dim=1)  # L x [B, N_l, K]
        deltas = out.box_regression.to(dtype).split(split, dim=1)  # L x [B, N_l, 4]
        return decode_dense_detections(
            list(scores), list(deltas), list(out.anchors.to(dtype).split(split)), tuple(images.shape[-2:]),
            score_thresh=c.score_thresh, topk_candidates=c.topk_candidates,
            nms_thresh=c.nms_thresh, detections_per_img=c.detections_per_img,
            box_weights=c.box_weights,
        )
