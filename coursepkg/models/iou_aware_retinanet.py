"""IoU-aware RetinaNet: RetinaNet plus a head that predicts each box's IoU (Wu, Li, Wang, 2020).

A RetinaNet ranks its boxes by classification score alone, for NMS and for AP, although that
score was never trained to say how well the box fits: a well-classified anchor may regress a
poor box. Wu et al. ("IoU-aware single-stage object detector for accurate localization", Image
and Vision Computing 2020, arXiv 1912.05992) add one output to :class:`RetinaNet`:

1. **IoU head** (§3.1): one 3 × 3 convolution + sigmoid on the last feature map of the
   *regression* tower, beside the box predictor: one IoU per anchor, class-agnostic
   (``A`` channels);
2. **IoU target** (§3.2, eq. 4): the IoU between each positive anchor's *regressed* (decoded)
   box and its ground truth, :func:`iou_targets`;
3. **loss** (eqs. 1-3, 6): focal loss + box loss + binary cross-entropy of the predicted IoU on
   the positives, each divided by ``N_pos`` (:func:`iou_aware_retinanet_loss`). In the released
   code the target is not detached, so the BCE also sends gradient through the target into the
   regression branch (eq. 5: ``∂BCE / ∂target = log((1 - p) / p)`` for a predicted IoU ``p``);
   ``iou_target_grad=False`` detaches it;
4. **inference score** (eq. 7): ``S = p^alpha * IoU^(1 - alpha)`` (:func:`iou_aware_score`),
   used for both the NMS ranking and AP, among RetinaNet's candidates (``p > score_thresh``).
   ``alpha = 1`` is plain RetinaNet's score.

Shapes (B images, K classes, N anchors)::

    IoUAwareRetinaNet(...)(images).cls_logits      [B, N, K]
    IoUAwareRetinaNet(...)(images).box_regression  [B, N, 4]
    IoUAwareRetinaNet(...)(images).iou_logits      [B, N]     one per anchor, class-agnostic
    iou_targets(box_regression, anchors, matched)  [B, N]     or [N] for one image
    iou_aware_score(cls_prob, iou_prob, alpha)     [B, N, K]  from [B, N, K] and [B, N]

Chapter: book/11_iou_aware_retinanet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coursepkg.models.assignment import POSITIVE
from coursepkg.models.dense_decoding import decode_dense_detections
from coursepkg.models.dense_heads import _flatten_level, _normal_init
from coursepkg.models.detector import check_images, check_targets
from coursepkg.models.retinanet import (
    RetinaNet,
    RetinaNetConfig,
    _check_box_loss,
    _retinanet_loss,
)
from coursepkg.ops.box_coding import DEFAULT_BBOX_XFORM_CLIP, _check_weights, _decode_boxes
from coursepkg.ops.boxes import _matched_box_iou
from coursepkg.ops.validation import (
    check_boxes,
    check_finite,
    check_number,
    check_reduction,
    check_tensor,
)

__all__ = [
    "IoUAwareRetinaNet",
    "IoUAwareRetinaNetConfig",
    "IoUAwareRetinaNetLoss",
    "IoUAwareRetinaNetOutput",
    "iou_aware_retinanet_loss",
    "iou_aware_score",
    "iou_targets",
]


def _check_alpha(alpha: object, name: str = "alpha") -> float:
    """``alpha`` of the IoU-aware score: a finite number in [0, 1] (NaN refused)."""
    return check_number(alpha, name, low=0.0, high=1.0)


@dataclass(frozen=True)
class IoUAwareRetinaNetConfig(RetinaNetConfig):
    """:class:`RetinaNetConfig` plus the IoU head's three settings.

    "paper" is Wu et al. 2020; "code" its released MMDetection code
    (``iou_aware_retina_head.py``). Every RetinaNet field keeps its meaning and default; build
    one from an existing RetinaNet config with :meth:`from_retinanet`.

    About "0.4": PP-YOLO's ``iou_aware_factor = 0.4`` is the exponent on the IoU
    (``obj^(1 - 0.4) * IoU^0.4``), that is ``score_alpha = 0.6`` in this paper's notation.
    """

    # eq. 7: S = p^alpha * IoU^(1 - alpha); code: 0.5 (hard-coded in get_bboxes_single)
    score_alpha: float = 0.5
    # code: the target IoU is not detached (`iou_target.detach()` commented out), so the IoU
    # loss reaches the regression branch through it; False detaches it (the paper's ablation)
    iou_target_grad: bool = True
    iou_loss_weight: float = 1.0  # code: weight_iou = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_alpha(self.score_alpha, "score_alpha")
        if not isinstance(self.iou_target_grad, bool):
            raise TypeError(f"iou_target_grad must be a bool, got {self.iou_target_grad!r}")
        check_number(self.iou_loss_weight, "iou_loss_weight", low=0.0)

    @classmethod
    def from_retinanet(cls, config: RetinaNetConfig, **changes: object) -> IoUAwareRetinaNetConfig:
        """Every field of a RetinaNet ``config``, plus (or replaced by) ``changes``."""
        if not isinstance(config, RetinaNetConfig):
            raise TypeError(f"config must be a RetinaNetConfig, got {type(config).__name__}")
        values = {f.name: getattr(config, f.name) for f in fields(RetinaNetConfig)}
        return cls(**{**values, **changes})


# ------------------------------------------------------------------------------------ score


def iou_aware_score(cls_prob: Tensor, iou_prob: Tensor, alpha: float = 0.5) -> Tensor:
    """The detection score of eq. 7: ``S = p^alpha * IoU^(1 - alpha)``.

    ``alpha = 1`` gives the classification probability alone (plain RetinaNet), ``alpha = 0``
    the IoU alone; ``0^0 = 1`` as in ``torch.pow``. The released code uses ``alpha = 0.5``.
    (PP-YOLO's ``iou_aware_factor = 0.4`` is the exponent on the IoU: ``alpha = 0.6`` here.)

    Args:
        cls_prob: [..., N, K] class probabilities in [0, 1] (sigmoid of the logits).
        iou_prob: [..., N] predicted IoUs in [0, 1], one per anchor (shared by its K classes).
        alpha: the exponent of ``p``, in [0, 1].

    Returns:
        [..., N, K] scores in [0, 1], dtype of ``cls_prob``.

    Raises:
        TypeError: if an input is not a floating tensor or ``alpha`` is not a number.
        ValueError: if ``alpha`` is NaN or outside [0, 1], the shapes disagree, or a
            probability is NaN or outside [0, 1].

    Chapter: book/11_iou_aware_retinanet (section "The score").
    """
    alpha = _check_alpha(alpha)
    check_tensor(cls_prob, "cls_prob", dtype="float")
    check_tensor(iou_prob, "iou_prob", dtype="float")
    if cls_prob.dim() < 2 or tuple(iou_prob.shape) != tuple(cls_prob.shape[:-1]):
        raise ValueError(
            f"iou_prob must be cls_prob's shape without its last (class) dimension: cls_prob "
            f"{list(cls_prob.shape)}, iou_prob {list(iou_prob.shape)}"
        )
    for name, value in (("cls_prob", cls_prob), ("iou_prob", iou_prob)):
        check_finite(value, name)
        if value.numel() and bool(((value < 0) | (value > 1)).any()):
            raise ValueError(f"{name} must hold probabilities in [0, 1] (apply the sigmoid)")
    return _iou_aware_score(cls_prob, iou_prob, alpha)


def _iou_aware_score(cls_prob: Tensor, iou_prob: Tensor, alpha: float) -> Tensor:
    """:func:`iou_aware_score` without the checks."""
    return cls_prob.pow(alpha) * iou_prob.to(cls_prob.dtype).unsqueeze(-1).pow(1.0 - alpha)


# ----------------------------------------------------------------------------------- target


def iou_targets(
    box_regression: Tensor,
    anchors: Tensor,
    matched_boxes: Tensor,
    box_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
) -> Tensor:
    """The IoU head's target (eq. 4): IoU of each anchor's *regressed* box with its ground truth.

    The predicted deltas are decoded against their anchors (the box the detector would output),
    then compared with the matched ground truth element by element. Not the anchor's IoU: the
    head predicts how good the final box is. The result is differentiable in
    ``box_regression``; whether that gradient is used is the loss's choice
    (``iou_target_grad``).

    Args:
        box_regression: [N, 4] or [B, N, 4] float predicted deltas.
        anchors: [N, 4] float xyxy anchors (shared by the batch).
        matched_boxes: same shape as ``box_regression``: the ground truth matched to each anchor
            (xyxy; rows of anchors without a ground truth may be any valid box).
        box_weights: ``(w_x, w_y, w_w, w_h)`` of the box encoding (RetinaNet: all 1).

    Returns:
        [N] or [B, N] IoUs in [0, 1], dtype of ``box_regression``.

    Raises:
        TypeError, ValueError: on wrong shapes or dtypes, NaN or inf, or invalid boxes.

    Chapter: book/11_iou_aware_retinanet (section "The target: the IoU of the regressed box").
    """
    check_tensor(box_regression, "box_regression", dtype="float")
    if box_regression.dim() not in (2, 3) or box_regression.shape[-1] != 4:
        raise ValueError(f"box_regression must be [N, 4] or [B, N, 4], got {list(box_regression.shape)}")
    check_boxes(anchors, "anchors")
    if anchors.shape[0] != box_regression.shape[-2]:
        raise ValueError(
            f"anchors must be [{box_regression.shape[-2]}, 4] (one per row of box_regression), "
            f"got {list(anchors.shape)}"
        )
    check_tensor(matched_boxes, "matched_boxes", shape=tuple(box_regression.shape), dtype="float")
    check_boxes(matched_boxes.reshape(-1, 4), "matched_boxes")
    check_finite(box_regression, "box_regression")
    return _iou_targets(box_regression, anchors, matched_boxes, _check_weights(box_weights, "box_weights"))


def _iou_targets(
    box_regression: Tensor,
    anchors: Tensor,
    matched_boxes: Tensor,
    box_weights: tuple[float, float, float, float],
) -> Tensor:
    """:func:`iou_targets` without the checks."""
    shape = box_regression.shape[:-1]  # [N] or [B, N]
    deltas = box_regression.reshape(-1, 4)  # [B * N, 4]
    refs = anchors.to(deltas.dtype).expand(*shape, 4).reshape(-1, 4)  # [B * N, 4]
    decoded = _decode_boxes(deltas, refs, box_weights, DEFAULT_BBOX_XFORM_CLIP)  # [B * N, 4]
    iou = _matched_box_iou(decoded, matched_boxes.reshape(-1, 4).to(deltas.dtype))  # [B * N]
    return iou.reshape(shape)


# ------------------------------------------------------------------------------------- loss


class IoUAwareRetinaNetLoss(NamedTuple):
    """Result of :func:`iou_aware_retinanet_loss`: scalars, or ``[B]`` for ``reduction="none"``."""

    classification: Tensor
    """Focal loss over the non-ignored anchors, divided by max(N_pos, 1) of each image."""
    box_regression: Tensor
    """Box loss over the positive anchors, divided by max(N_pos, 1) of each image."""
    iou: Tensor
    """BCE of the predicted IoU over the positive anchors, divided by max(N_pos, 1)."""


def iou_aware_retinanet_loss(
    cls_logits: Tensor,
    box_regression: Tensor,
    iou_logits: Tensor,
    labels: Tensor,
    classes: Tensor,
    target_deltas: Tensor,
    anchors: Tensor,
    matched_boxes: Tensor,
    *,
    alpha: float = 0.25,
    gamma: float = 2.0,
    beta: float = 0.0,
    box_loss: str = "smooth_l1",
    box_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    iou_target_grad: bool = True,
    reduction: str = "mean",
) -> IoUAwareRetinaNetLoss:
    """The three loss terms of IoU-aware RetinaNet, each divided by the positives (eqs. 1-3, 6).

    ``classification`` and ``box_regression`` are :func:`coursepkg.models.retinanet.retinanet_loss`'s.
    ``iou`` is ``sum_{i in Pos} BCE(sigmoid(iou_logits_i), IoU_i) / max(N_pos, 1)`` with
    ``IoU_i`` = :func:`iou_targets` of anchor i's decoded box and its ground truth; negatives and
    ignored anchors have no IoU loss. With ``iou_target_grad`` (the released code) the target is
    a function of ``box_regression`` and the BCE's gradient with respect to it,
    ``log((1 - p) / p)``, reaches the regression branch; without it the target is detached.

    Args:
        cls_logits: [B, N, K] float class logits.
        box_regression: [B, N, 4] float predicted deltas.
        iou_logits: [B, N] float IoU logits (before the sigmoid).
        labels: [B, N] int64, 1 positive, 0 negative, -1 ignored.
        classes: [B, N] int64 class of every positive.
        target_deltas: [B, N, 4] float regression targets of the positives.
        anchors: [N, 4] float xyxy anchors.
        matched_boxes: [B, N, 4] float xyxy ground truth of each anchor (read where positive).
        alpha, gamma: focal-loss parameters. beta: smooth-L1 ``beta`` (0: L1).
        box_loss: the box term, one of :data:`coursepkg.models.retinanet.BOX_LOSSES` (an IoU
            loss compares the decoded boxes with ``matched_boxes``, as in ``retinanet_loss``).
        box_weights: weights of the box encoding.
        iou_target_grad: let the IoU loss's gradient flow through its target.
        reduction: ``"none"`` (per image, ``[B]``), ``"mean"`` (over the batch) or ``"sum"``.

    Returns:
        :class:`IoUAwareRetinaNetLoss` ``(classification, box_regression, iou)``.

    Raises:
        TypeError, ValueError: on mismatched shapes or dtypes, NaN or inf inputs, labels outside
            {-1, 0, 1}, or an unknown ``box_loss`` or ``reduction``.

    Chapter: book/11_iou_aware_retinanet (section "The loss, and what the gradient through the
    target does").
    """
    check_tensor(cls_logits, "cls_logits", shape=("B", "N", "K"), dtype="float")
    batch, num, num_classes = cls_logits.shape
    check_tensor(box_regression, "box_regression", shape=(batch, num, 4), dtype="float")
    check_tensor(iou_logits, "iou_logits", shape=(batch, num), dtype="float")
    check_tensor(labels, "labels", shape=(batch, num), dtype="int")
    check_tensor(classes, "classes", shape=(batch, num), dtype="int")
    check_tensor(target_deltas, "target_deltas", shape=(batch, num, 4), dtype="float")
    check_boxes(anchors, "anchors")
    if anchors.shape[0] != num:
        raise ValueError(f"anchors must be [{num}, 4], got {list(anchors.shape)}")
    check_tensor(matched_boxes, "matched_boxes", shape=(batch, num, 4), dtype="float")
    for name, value in (("cls_logits", cls_logits), ("box_regression", box_regression),
                        ("iou_logits", iou_logits), ("matched_boxes", matched_boxes)):
        check_finite(value, name)
    alpha = check_number(alpha, "alpha", high=1.0)
    gamma = check_number(gamma, "gamma", low=0.0)
    beta = check_number(beta, "beta", low=0.0)
    box_loss = _check_box_loss(box_loss)
    if not isinstance(iou_target_grad, bool):
        raise TypeError(f"iou_target_grad must be a bool, got {iou_target_grad!r}")
    check_reduction(reduction)
    if not bool(((labels == 1) | (labels == 0) | (labels == -1)).all()):
        raise ValueError("labels must only contain 1 (positive), 0 (negative) and -1 (ignored)")
    if bool(((classes < 0) | (classes >= num_classes))[labels == 1].any()):
        raise ValueError(f"classes of positive anchors must be in 0..{num_classes - 1}")
    return _iou_aware_retinanet_loss(
        cls_logits, box_regression, iou_logits, labels, classes, target_deltas, anchors,
        matched_boxes, alpha=alpha, gamma=gamma, beta=beta, box_loss=box_loss,
        box_weights=_check_weights(box_weights, "box_weights"), iou_target_grad=iou_target_grad,
        reduction=reduction,
    )


def _iou_aware_retinanet_loss(
    cls_logits: Tensor,
    box_regression: Tensor,
    iou_logits: Tensor,
    labels: Tensor,
    classes: Tensor,
    target_deltas: Tensor,
    anchors: Tensor,
    matched_boxes: Tensor,
    *,
    alpha: float,
    gamma: float,
    beta: float,
    box_loss: str,
    box_weights: tuple[float, float, float, float],
    iou_target_grad: bool,
    reduction: str,
) -> IoUAwareRetinaNetLoss:
    """:func:`iou_aware_retinanet_loss` without the checks; no host synchronisation."""
    base = _retinanet_loss(
        cls_logits, box_regression, labels, classes, target_deltas, alpha=alpha, gamma=gamma,
        beta=beta, reduction="none", box_loss=box_loss, anchors=anchors,
        matched_boxes=matched_boxes, box_weights=box_weights,
    )
    positive = labels == POSITIVE  # [B, N]
    # Rows without a ground truth compare with their own anchor instead: a box of positive area,
    # so every IoU (and its gradient) is finite before the mask drops it.
    refs = anchors.to(matched_boxes.dtype).expand_as(matched_boxes)  # [B, N, 4]
    matched = torch.where(positive[..., None], matched_boxes, refs)  # [B, N, 4]
    target = _iou_targets(box_regression, anchors, matched, box_weights)  # [B, N] eq. 4
    if not iou_target_grad:
        target = target.detach()
    bce = F.binary_cross_entropy_with_logits(iou_logits, target.to(iou_logits.dtype), reduction="none")
    # eq. 6: BCE on the positives only, divided by N_pos like the other two terms.
    num_pos = positive.sum(dim=1).clamp(min=1).to(bce.dtype)  # [B]
    iou = (bce * positive).sum(dim=1) / num_pos  # [B]
    per_image = IoUAwareRetinaNetLoss(base.classification, base.box_regression, iou)
    if reduction == "none":
        return per_image
    if reduction == "sum":
        return IoUAwareRetinaNetLoss(*(term.sum() for term in per_image))
    return IoUAwareRetinaNetLoss(*(term.mean() for term in per_image))


# ------------------------------------------------------------------------------------ model


class IoUAwareRetinaNetOutput(NamedTuple):
    """Raw outputs of :meth:`IoUAwareRetinaNet.forward` (levels concatenated, finest first)."""

    cls_logits: Tensor
    """[B, N, K] class logits."""
    box_regression: Tensor
    """[B, N, 4] box deltas relative to the anchors."""
    iou_logits: Tensor
    """[B, N] IoU logits, one per anchor (the sigmoid gives the predicted IoU)."""
    anchors: Tensor
    """[N, 4] the anchors, shared by every image of the batch."""
    num_per_level: list[int]
    """``H_l * W_l * A`` of every level."""


class IoUAwareRetinaNet(RetinaNet):
    """RetinaNet with an IoU prediction head (Wu et al. 2020); a Detector.

    Everything of :class:`RetinaNet` (backbone, FPN, both subnets, anchors, assignment) is
    inherited unchanged; this class adds ``iou_predictor``, a 3 × 3 convolution with ``A``
    outputs on the regression tower's last feature map, and its loss and score. Given the same
    seed, the RetinaNet part starts from exactly the weights a plain :class:`RetinaNet` would get
    (the IoU predictor is created after it).

    ``forward(images)`` returns :class:`IoUAwareRetinaNetOutput`; ``losses`` returns
    ``{"classification", "bbox_regression", "iou"}``; ``detect`` ranks by
    ``S = p^alpha * IoU^(1 - alpha)`` (``config.score_alpha``) for both NMS and the returned
    scores; :meth:`detections_from` does the same from stored outputs with any IoU and alpha.

    Args:
        config: :class:`IoUAwareRetinaNetConfig` (a plain :class:`RetinaNetConfig` gets the IoU
            head's defaults).
        backbone: as :class:`RetinaNet`.

    Chapter: book/11_iou_aware_retinanet.
    """

    def __init__(
        self, config: RetinaNetConfig | None = None, backbone: torch.nn.Module | None = None
    ) -> None:
        if config is None:
            config = IoUAwareRetinaNetConfig()
        elif not isinstance(config, IoUAwareRetinaNetConfig):
            config = IoUAwareRetinaNetConfig.from_retinanet(config)
        super().__init__(config, backbone)
        # §3.1: 3 x 3 conv, A outputs (one IoU per anchor, class-agnostic), N(0, 0.01), bias 0
        self.iou_predictor = _normal_init(
            nn.Conv2d(config.fpn_channels, config.num_anchors, 3, padding=1)
        )

    def forward(self, images: Tensor) -> IoUAwareRetinaNetOutput:
        """Raw head outputs for ``[B, 3, H, W]`` images, with the anchors they refer to."""
        features = self.features(images)
        cls_logits = self.classification_head(features)  # [B, N, K]
        head = self.regression_head
        deltas, ious = [], []
        for x in features:
            tower = head.tower(x)  # [B, D, H, W], shared by the box and the IoU predictors
            deltas.append(_flatten_level(head.predictor(tower), head.num_anchors, 4))
            ious.append(_flatten_level(self.iou_predictor(tower), head.num_anchors, 1))
        box_regression = torch.cat(deltas, dim=1)  # [B, N, 4]
        iou_logits = torch.cat(ious, dim=1).squeeze(2)  # [B, N]
        dtype = torch.promote_types(cls_logits.dtype, torch.float32)
        levels = self.anchors_per_level([f.shape[-2:] for f in features], dtype, cls_logits.device)
        return IoUAwareRetinaNetOutput(
            cls_logits, box_regression, iou_logits, torch.cat(levels), [len(a) for a in levels]
        )

    def losses(self, images: Tensor, targets: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        """Focal classification, box regression and IoU BCE of one batch, each over N_pos.

        Args and Raises: as :meth:`RetinaNet.losses`.

        Returns:
            ``{"classification", "bbox_regression", "iou"}``, finite scalars (the IoU term
            already multiplied by ``config.iou_loss_weight``).
        """
        c = self.config
        check_images(images)
        check_targets(targets, images.shape[0], num_classes=c.num_classes, positive_size=True)
        out = self(images)
        dtype = torch.promote_types(out.cls_logits.dtype, torch.float32)
        anchors = out.anchors.to(dtype)
        t = self._batch_targets(anchors, targets)
        loss = _iou_aware_retinanet_loss(
            out.cls_logits.to(dtype), out.box_regression.to(dtype), out.iou_logits.to(dtype),
            t.labels, t.classes, t.target_deltas, anchors, t.matched_boxes,
            alpha=c.focal_alpha, gamma=c.focal_gamma, beta=c.box_loss_beta, box_loss=c.box_loss,
            box_weights=c.box_weights, iou_target_grad=c.iou_target_grad, reduction="mean",
        )
        return {
            "classification": loss.classification,
            "bbox_regression": loss.box_regression,
            "iou": c.iou_loss_weight * loss.iou,
        }

    def detections_from(
        self,
        output: IoUAwareRetinaNetOutput,
        image_size: Sequence[int],
        *,
        iou: Tensor | None = None,
        alpha: float | None = None,
    ) -> list[dict[str, Tensor]]:
        """Detections from stored outputs, ranked by ``p^alpha * IoU^(1 - alpha)``.

        The candidates are RetinaNet's, the (anchor, class) pairs with ``p > score_thresh``, at
        most ``topk_candidates`` per level (by S); NMS and the returned scores use S (pairs with
        S = 0 are dropped). Every alpha and IoU thus ranks the same candidates.

        Args:
            output: what :meth:`forward` returned for a batch.
            image_size: ``(height, width)`` of the images, to clip the boxes.
            iou: [B, N] IoUs in [0, 1] to use instead of the predicted ones (for example each
                decoded box's true IoU: the chapter's upper bound); None: ``sigmoid(iou_logits)``.
            alpha: the score's exponent in [0, 1]; None: ``config.score_alpha``.

        Returns:
            As :meth:`RetinaNet.detect`.
        """
        c = self.config
        alpha = c.score_alpha if alpha is None else _check_alpha(alpha)
        dtype = torch.promote_types(output.cls_logits.dtype, torch.float32)
        if iou is None:
            iou = torch.sigmoid(output.iou_logits.to(dtype))
        cls_prob = torch.sigmoid(output.cls_logits.to(dtype))  # [B, N, K]
        scores = iou_aware_score(cls_prob, iou.to(dtype), alpha)  # [B, N, K] eq. 7
        # Candidates as in RetinaNet, by p > score_thresh: the IoU head never sees a negative, so
        # its output on background means nothing, and a threshold on S would let thousands of
        # background anchors through (S = 0.07 everywhere at the start: p = 0.01, IoU = 0.5).
        # The candidates are then ranked by S, for NMS and in the returned scores.
        scores = torch.where(cls_prob > c.score_thresh, scores, torch.zeros_like(scores))
        split = output.num_per_level
        return decode_dense_detections(
            list(scores.split(split, dim=1)), list(output.box_regression.to(dtype).split(split, dim=1)),
            list(output.anchors.to(dtype).split(split)), tuple(image_size),
            score_thresh=0.0, topk_candidates=c.topk_candidates,
            nms_thresh=c.nms_thresh, detections_per_img=c.detections_per_img,
            box_weights=c.box_weights,
        )

    def detect(self, images: Tensor) -> list[dict[str, Tensor]]:
        """Detections per image, scored by eq. 7 (call in ``eval()`` under ``torch.no_grad()``)."""
        return self.detections_from(self(images), tuple(images.shape[-2:]))

