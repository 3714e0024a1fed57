"""Fast R-CNN (Girshick, ICCV 2015): one CNN pass per image, RoI pooling, a multi-task head.

R-CNN runs its CNN once per proposal, about 2000 times per image. Fast R-CNN (like SPP-net before
it) runs the convolutional layers once on the whole image and cuts each proposal's window out of
the shared feature map with **RoI max pooling** (§2.1): the window is split into an ``H x W`` grid
(7 x 7 for VGG16) and each cell is max-pooled, so every proposal gets a fixed-size feature. Two
fully connected layers follow, then two sibling outputs: a softmax over ``K + 1`` classes
(background at index 0) and class-specific box deltas. Both are trained together with the
multi-task loss of Eq. (1) (:func:`multi_task_loss`)::

    images [B, 3, H, W] --resize by a (shorter side 600 px)--> conv body, once per image
                        --> features [B, C, aH / 8, aW / 8]
    proposals[i] [P_i, 4] (selective search, cached, input pixels)
                        --RoI max pooling, spatial_scale a / 8--> [R, C, 7, 7]
                        --fc6, fc7--> [R, D] --cls_score--> [R, K + 1]
                                             --bbox_pred--> [R, 4 (K + 1)]

**Where the proposals come from.** The :class:`~coursepkg.models.detector.Detector` contract passes only
images (and targets in training), but Fast R-CNN needs each image's selective-search boxes. The
model therefore *holds a proposal function*, ``image [3, H, W] -> boxes [P, 4]``, normally a
:class:`coursepkg.models.rcnn.ProposalCache` around selective search: every image is searched once, the
first time the model sees it, and then answered from memory, so training for many epochs and
evaluating with :func:`coursepkg.engine.training.evaluate` costs one search per image. A target may also
carry precomputed boxes under ``"proposals"``; ``losses`` then uses those.

Training follows §2.3 ("Mini-batch sampling"), reusing the second-stage helpers of
:mod:`coursepkg.models.roi_heads`: 64 RoIs per image, 25 % foreground (IoU >= 0.5 with a ground truth,
which joins the proposals), background IoU in ``[0.1, 0.5)``; regression targets divided by
their standard deviations (:func:`regression_target_stats` measures them; the paper normalises to
zero mean and unit variance). At test time (§3): softmax scores, class-specific boxes, per-class
NMS at 0.3.

Chapter: book/06_fast_rcnn
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from coursepkg.models.backbones import PIXEL_MEAN, conv_body
from coursepkg.models.detector import Detector, check_images, check_targets
from coursepkg.models.roi_heads import (
    FastRCNNHead,
    FastRCNNLoss,
    RoISample,
    _check_sampling_settings,
    _fastrcnn_loss,
    _sample_rois_batch,
    fastrcnn_loss,
    postprocess_batch,
    sample_rois,
)
from coursepkg.ops.box_coding import encode_boxes
from coursepkg.ops.boxes import box_iou
from coursepkg.ops.roi_pool import roi_pool
from coursepkg.ops.validation import _all_true, _boxes_flag, _is_box_tensor, check_boxes

__all__ = [
    "FastRCNN",
    "FastRCNNConfig",
    "TargetStats",
    "drop_easy_background",
    "multi_task_loss",
    "regression_target_stats",
]

#: The output stride of :func:`coursepkg.models.backbones.conv_body` (three 2 x 2 max-pools).
STRIDE = 8


@dataclass(frozen=True)
class FastRCNNConfig:
    """Fast R-CNN's settings. Defaults are the paper's (§2-§3, VGG16); :meth:`for_course` scales them.

    Sources: the paper, and py-faster-rcnn's ``config.py`` / ``test.py`` where the paper is silent.
    """

    num_classes: int = 20  # K: PASCAL VOC's 20 classes
    image_min_size: int = 600  # each image is resized so its shorter side is 600 px (s = 600) ...
    image_max_size: int = 1000  # ... unless its longer side would exceed 1000 px
    backbone_width: int = 16  # course: conv_body(16) -> 64 channels at stride 8 (VGG16: 512 at 16)
    roi_size: int = 7  # H = W = 7: the RoI pooling grid that VGG16's fc6 expects (§2.1)
    representation_size: int = 4096  # width of fc6 and fc7 (VGG16)
    batch_size_per_image: int = 64  # R / N = 128 RoIs / 2 images per mini-batch (§2.3)
    positive_fraction: float = 0.25  # 25 % of the RoIs are foreground (§2.3)
    fg_iou_thresh: float = 0.5  # foreground: IoU >= 0.5 with a ground truth (§2.3)
    bg_iou_thresh_lo: float = 0.1  # background: IoU in [0.1, 0.5) (§2.3, "hard example mining")
    box_loss_weight: float = 1.0  # λ in Eq. (1)
    beta: float = 1.0  # Eq. (3): 0.5 x^2 if |x| < 1 else |x| - 0.5
    box_target_stds: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2)  # py-faster-rcnn
    score_thresh: float = 0.05  # py-faster-rcnn test_net
    nms_thresh: float = 0.3  # per-class NMS at test time (§3; py-faster-rcnn test_net)
    detections_per_img: int = 100  # py-faster-rcnn test_net max_per_image

    @classmethod
    def for_course(cls, num_classes: int = 5) -> FastRCNNConfig:
        """Settings for 128 x 128 shapes images and a CNN trained from scratch on a CPU."""
        return cls(
            num_classes=num_classes,
            # The paper enlarges PASCAL images (~500 px) to 600 px. Our 128 x 128 images are
            # enlarged twice, to 256 px: objects of 8..64 px then span 2..16 cells of the stride-8
            # feature map instead of 1..8 (R-CNN's warp enlarges small objects even more).
            image_min_size=256,
            image_max_size=512,
            # A 4 x 4 grid, like R-CNN's pool5 on 32 x 32 regions in the previous chapter (same
            # body, same feature size per region).
            roi_size=4,
            representation_size=256,
        )

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if not 0 < self.image_min_size <= self.image_max_size:
            raise ValueError(
                f"need 0 < image_min_size <= image_max_size, got {self.image_min_size} and "
                f"{self.image_max_size}"
            )
        if not 0.0 <= self.bg_iou_thresh_lo < self.fg_iou_thresh <= 1.0:
            raise ValueError(
                f"need 0 <= bg_iou_thresh_lo < fg_iou_thresh <= 1, got {self.bg_iou_thresh_lo} and {self.fg_iou_thresh}"
            )
        if len(self.box_target_stds) != 4 or min(self.box_target_stds) <= 0:
            raise ValueError(
                f"box_target_stds must be 4 positive numbers, got {self.box_target_stds}"
            )

    def image_scale(self, image_size: Sequence[int]) -> float:
        """The resize factor for an image of ``(height, width)``: shorter side to ``image_min_size``,
        longer side at most ``image_max_size``."""
        height, width = image_size
        return min(
            self.image_min_size / min(height, width), self.image_max_size / max(height, width)
        )

    @property
    def box_weights(self) -> tuple[float, float, float, float]:
        """Box-coding weights ``1 / std``: encoding with them divides the targets by the stds."""
        return tuple(1.0 / s for s in self.box_target_stds)  # type: ignore[return-value]


def multi_task_loss(
    class_logits: Tensor,
    box_regression: Tensor,
    labels: Tensor,
    regression_targets: Tensor,
    *,
    box_loss_weight: float = 1.0,
    beta: float = 1.0,
    reduction: str = "mean",
) -> FastRCNNLoss:
    """Fast R-CNN's multi-task loss, Eq. (1), averaged over the ``R`` RoIs of the mini-batch.

    Implements Eq. (1) of the paper, Eq. (fast-rcnn-loss) of book/06_fast_rcnn.

    For a RoI with true class ``u`` (0 = background), class probabilities ``p = softmax(logits)``,
    predicted deltas ``t^u`` for class ``u`` and regression target ``v``::

        L(p, u, t^u, v) = -log p_u + λ [u >= 1] sum_{i in x, y, w, h} smooth_L1(t^u_i - v_i)

        smooth_L1(x) = 0.5 x^2 / β  if |x| < β,  |x| - 0.5 β  otherwise      (Eq. (3): β = 1)

    Only the true class's four deltas enter the box term, and background RoIs have none. Both terms
    are divided by ``R`` (the Caffe layers divide by the number of RoIs; so does torchvision). The
    arithmetic is :func:`coursepkg.models.roi_heads.fastrcnn_loss`'s, with the paper's β = 1 instead of
    torchvision's 1/9, times λ. ``reduction`` as in ``torch.nn.functional``: ``"mean"`` (default)
    divides by ``R``, ``"sum"`` does not, ``"none"`` gives the ``[R]`` per-RoI terms (the box term
    0 for background RoIs).

    Args:
        class_logits: ``[R, K + 1]``.
        box_regression: ``[R, 4 (K + 1)]``, columns ``4c:4c+4`` for class ``c`` (0 unused).
        labels: ``[R]`` int64 in ``0..K``.
        regression_targets: ``[R, 4]`` normalised targets ``v``.
        box_loss_weight: λ, the weight of the box term (1 in the paper).
        beta: smooth-L1 transition point (1 in the paper).
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.

    Returns:
        :class:`coursepkg.models.roi_heads.FastRCNNLoss` ``(classification, box_regression)``, the
        latter already multiplied by λ: scalars, zeros (attached to the graph) for ``R = 0``, or
        ``[R]`` each for ``reduction="none"``.

    Raises:
        TypeError, ValueError: on inconsistent shapes, non-int64 labels or labels outside ``0..K``;
            ``box_loss_weight < 0``, ``beta <= 0`` or an unknown ``reduction``.

    Chapter: book/06_fast_rcnn (section "The multi-task loss")
    """
    _check_loss_weights(box_loss_weight, beta)
    loss = fastrcnn_loss(
        class_logits, box_regression, labels, regression_targets, beta=beta, reduction=reduction
    )
    return FastRCNNLoss(loss.classification, box_loss_weight * loss.box_regression)


def _check_loss_weights(box_loss_weight: float, beta: float) -> None:
    if not box_loss_weight >= 0 or not beta > 0:
        raise ValueError(f"box_loss_weight must be >= 0 and beta > 0, got {box_loss_weight} and {beta}")


def drop_easy_background(proposals: Tensor, gt_boxes: Tensor, bg_iou_thresh_lo: float) -> Tensor:
    """Keep the proposals whose best IoU with a ground truth is at least ``bg_iou_thresh_lo``.

    Fast R-CNN draws background RoIs only from IoU ``[0.1, 0.5)``: boxes that touch an object,
    "a heuristic for hard example mining" (§2.3). Removing the rest before sampling gives exactly
    that range. An image without ground truth keeps no proposal (its RoIs are all trivially easy),
    so it contributes nothing to the loss, as in the paper. ``bg_iou_thresh_lo = 0`` keeps everything.

    Args:
        proposals: ``[P, 4]`` float xyxy.
        gt_boxes: ``[G, 4]`` float xyxy.
        bg_iou_thresh_lo: the lower IoU bound of background RoIs.

    Returns:
        ``[P', 4]`` the kept proposals, in their order.

    Chapter: book/06_fast_rcnn (section "Training on selective-search proposals")
    """
    check_boxes(proposals, "proposals")
    check_boxes(gt_boxes, "gt_boxes")
    if bg_iou_thresh_lo <= 0:
        return proposals
    if gt_boxes.shape[0] == 0 or proposals.shape[0] == 0:
        return proposals[:0]
    best_iou = box_iou(proposals, gt_boxes.to(proposals.dtype)).amax(dim=1)  # [P]
    return proposals[best_iou >= bg_iou_thresh_lo]


class TargetStats(NamedTuple):
    """Mean and standard deviation of ``(t_x, t_y, t_w, t_h)`` over foreground proposals."""

    means: Tensor
    """``[4]``"""
    stds: Tensor
    """``[4]``"""
    count: int
    """Number of (proposal, ground truth) pairs measured."""


def regression_target_stats(
    proposals: Sequence[Tensor], gt_boxes: Sequence[Tensor], *, fg_iou_thresh: float = 0.5
) -> TargetStats:
    """Statistics of the R-CNN box targets of foreground proposals, for normalising them.

    Fast R-CNN normalises the regression targets "to have zero mean and unit variance" (§2.3):
    its code measures them on the training RoIs that overlap a ground truth by ``fg_iou_thresh`` or
    more. Small ``t_x, t_y`` (a tenth of the box) and ``t_w, t_h`` would otherwise weigh little in
    the smooth-L1 loss next to the classification term.

    Args:
        proposals: per image, ``[P_i, 4]`` float xyxy.
        gt_boxes: per image, ``[G_i, 4]`` float xyxy with positive widths and heights.
        fg_iou_thresh: the foreground threshold.

    Returns:
        :class:`TargetStats`; means 0 and stds 1 if no proposal is foreground.

    Raises:
        ValueError: if the two sequences differ in length.

    Chapter: book/06_fast_rcnn (section "The multi-task loss")
    """
    if len(proposals) != len(gt_boxes):
        raise ValueError(
            f"proposals and gt_boxes need one entry per image, got {len(proposals)} and {len(gt_boxes)}"
        )
    targets = []
    for boxes, gt in zip(proposals, gt_boxes, strict=True):
        check_boxes(boxes, "proposals[i]")
        check_boxes(gt, "gt_boxes[i]")
        if boxes.shape[0] == 0 or gt.shape[0] == 0:
            continue
        best_iou, best_gt = box_iou(boxes, gt.to(boxes.dtype)).max(dim=1)  # [P]
        fg = best_iou >= fg_iou_thresh
        targets.append(encode_boxes(gt[best_gt[fg]].to(boxes.dtype), boxes[fg]))  # [F, 4]
    if not targets or sum(t.shape[0] for t in targets) < 2:
        return TargetStats(torch.zeros(4), torch.ones(4), sum(t.shape[0] for t in targets))
    all_targets = torch.cat(targets)
    return TargetStats(all_targets.mean(dim=0), all_targets.std(dim=0), all_targets.shape[0])


class FastRCNN(Detector):
    """Fast R-CNN on precomputed (selective-search) proposals, implementing the Detector contract.

    ``losses(images, targets)`` returns ``{"cls", "box"}``, the two terms of Eq. (1) (the box term
    already times λ); ``detect(images)`` returns boxes, scores and labels ``0..K-1`` per image.

    Args:
        config: the settings (:meth:`FastRCNNConfig.for_course` for the course's data).
        proposal_fn: ``image [3, H, W] -> boxes [P, 4]``, usually a
            :class:`coursepkg.models.rcnn.ProposalCache` around selective search. Not a learnable part:
            it is not in ``state_dict``.

    Chapter: book/06_fast_rcnn
    """

    def __init__(self, config: FastRCNNConfig, proposal_fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        if not callable(proposal_fn):
            raise TypeError(f"proposal_fn must be callable, got {type(proposal_fn).__name__}")
        self.config = config
        self.proposal_fn = proposal_fn
        # The same conv body as R-CNN's RegionFeatureNet: the chapters compare like with like.
        self.backbone = conv_body(config.backbone_width)
        self.box_head = FastRCNNHead(
            4 * config.backbone_width,
            config.roi_size,
            config.representation_size,
            config.num_classes,
        )

    def forward(self, images: Tensor) -> Tensor:
        """The shared feature map, computed once per image.

        The images are resized by :meth:`FastRCNNConfig.image_scale` first (bilinear), so the map
        is ``[B, C, H * scale / 8, W * scale / 8]``; boxes everywhere stay in input pixels.
        """
        check_images(images)
        scale = self.config.image_scale(images.shape[-2:])
        if scale != 1.0:
            images = F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False)
        return self.backbone(images - PIXEL_MEAN)

    def proposals(
        self, images: Tensor, targets: Sequence[Mapping[str, Tensor]] | None = None
    ) -> list[Tensor]:
        """Each image's proposals: ``targets[i]["proposals"]`` if given, else ``proposal_fn(image)``."""
        found = self._raw_proposals(images, targets)
        if not _all_true(_boxes_flag(boxes) for boxes, _ in found):  # one host sync for all
            for boxes, name in found:  # name the first bad one
                check_boxes(boxes, name)
        return [boxes.to(device=images.device, dtype=images.dtype) for boxes, _ in found]

    def _raw_proposals(
        self, images: Tensor, targets: Sequence[Mapping[str, Tensor]] | None
    ) -> list[tuple[Tensor, str]]:
        """Each image's proposals, not yet checked, with the name an error message gives them."""
        found = []
        for i, image in enumerate(images):
            if targets is not None and "proposals" in targets[i]:
                found.append((targets[i]["proposals"], f"targets[{i}]['proposals']"))
            else:
                found.append((self.proposal_fn(image), "proposal_fn(image)"))
        return found

    def pool(self, features: Tensor, boxes: Sequence[Tensor], image_size: Sequence[int]) -> Tensor:
        """RoI max pooling (§2.1): ``[sum_i P_i, C, s, s]`` for the boxes (input pixels) of every
        image of size ``image_size``; ``spatial_scale = image_scale / 8`` maps them onto the map."""
        spatial_scale = self.config.image_scale(image_size) / STRIDE
        boxes = [b.to(features.dtype) for b in boxes]  # float16 features under mixed precision
        return roi_pool(features, boxes, self.config.roi_size, spatial_scale=spatial_scale)

    def losses(
        self,
        images: Tensor,
        targets: Sequence[Mapping[str, Tensor]],
        *,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Eq. (1) on ``batch_size_per_image`` sampled RoIs per image (§2.3).

        Args:
            images: ``[B, 3, H, W]`` float in ``[0, 1]``.
            targets: B dicts with ``"boxes"`` ``[G_i, 4]`` (positive widths and heights),
                ``"labels"`` ``[G_i]`` int64 in ``0..K-1`` and optionally ``"proposals"``.
            generator: random source of the RoI sampler (the global one if None).

        Returns:
            ``{"cls": L_cls, "box": λ L_loc}``, finite scalars (zero for a batch without RoIs).
        """
        c = self.config
        check_images(images)  # shape and dtype only, so the batch size below is the right one
        check_targets(targets, images.shape[0], num_classes=c.num_classes)  # before any work
        features = self(images)  # [B, C, H/8, W/8]
        found = self._raw_proposals(images, targets)
        proposals = [
            boxes.to(device=images.device, dtype=images.dtype) if _is_box_tensor(boxes) else boxes
            for boxes, _ in found
        ]
        gt_boxes = [t["boxes"].to(images.dtype) for t in targets]
        # One host sync for every check of :meth:`proposals`, :func:`drop_easy_background` and
        # :func:`sample_rois` (the targets' labels are checked above); if one fails, the steps
        # run one by one through the checked functions, which name the problem.
        checked = _all_true(
            [_boxes_flag(boxes) for boxes, _ in found]
            + [_boxes_flag(boxes) for boxes in proposals]
            + [_boxes_flag(boxes, positive=True) for boxes in gt_boxes]
        )
        if checked:
            settings = _check_sampling_settings(
                c.batch_size_per_image, c.positive_fraction, c.fg_iou_thresh, c.box_weights
            )
            # Leaving the easy background out inside the sampler gives the same RoIs as
            # drop_easy_background, without its boolean-mask selection (a sync per image).
            samples = _sample_rois_batch(
                proposals, gt_boxes, [t["labels"] for t in targets], *settings, True, generator,
                min_iou=c.bg_iou_thresh_lo,
            )  # fmt: skip
        else:
            samples = self._checked_samples(images, found, gt_boxes, targets, generator)
        head = self.box_head(self.pool(features, [s.proposals for s in samples], images.shape[-2:]))
        labels = torch.cat([s.labels for s in samples])  # [R]
        _check_loss_weights(c.box_loss_weight, c.beta)
        sums = _fastrcnn_loss(  # in float32, also under mixed precision; Eq. (1)
            head.class_logits.float(),
            head.box_regression.float(),
            labels,
            torch.cat([s.regression_targets for s in samples]),
            beta=c.beta,
            reduction="sum",
        )
        # Eq. (1) averaged over the R RoIs of the mini-batch, both terms (§2.3: R = 128).
        num_rois = max(labels.shape[0], 1)
        box_sum = c.box_loss_weight * sums.box_regression  # λ L_loc
        return {"cls": sums.classification / num_rois, "box": box_sum / num_rois}

    def _checked_samples(
        self,
        images: Tensor,
        found: list[tuple[Tensor, str]],
        gt_boxes: list[Tensor],
        targets: Sequence[Mapping[str, Tensor]],
        generator: torch.Generator | None,
    ) -> list[RoISample]:
        """The RoIs of :meth:`losses`, step by step through the checked public functions."""
        c = self.config
        for boxes, name in found:
            check_boxes(boxes, name)
        samples = []
        for (boxes, _), gt, target in zip(found, gt_boxes, targets, strict=True):
            proposals = boxes.to(device=images.device, dtype=images.dtype)
            candidates = drop_easy_background(proposals, gt, c.bg_iou_thresh_lo)
            samples.append(
                sample_rois(
                    candidates,
                    gt,
                    target["labels"],
                    batch_size_per_image=c.batch_size_per_image,
                    positive_fraction=c.positive_fraction,
                    fg_iou_thresh=c.fg_iou_thresh,
                    box_weights=c.box_weights,
                    generator=generator,
                )
            )
        return samples

    def detect(self, images: Tensor) -> list[dict[str, Tensor]]:
        """Detections per image (§3): softmax scores, class-specific boxes, per-class NMS at 0.3.

        Call in ``eval()`` mode and under ``torch.no_grad()``. Returns, per image, ``"boxes"``
        ``[D, 4]``, ``"scores"`` ``[D]`` (decreasing) and ``"labels"`` ``[D]`` in ``0..K-1``.
        """
        c = self.config
        features = self(images)
        proposals = self.proposals(images)
        head = self.box_head(self.pool(features, proposals, images.shape[-2:]))
        return postprocess_batch(
            head.class_logits,
            head.box_regression,
            proposals,
            tuple(images.shape[-2:]),
            score_thresh=c.score_thresh,
            nms_thresh=c.nms_thresh,
            detections_per_img=c.detections_per_img,
            box_weights=c.box_weights,
        )
