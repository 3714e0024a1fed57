"""Faster R-CNN, end to end: a small backbone, the RPN, RoI Align and the Fast R-CNN head.

Faster R-CNN (Ren et al., 2015) is two detectors sharing one feature map:

1. **backbone**: a convolutional network turns the image into a feature map of stride 8;
2. **region proposal network** (§3.1): at every feature location and for each of ``A`` anchors, an
   objectness score and a box; trained on 256 sampled anchors per image (positive at IoU >= 0.7
   or best anchor of a ground truth, negative below 0.3, at most half positive);
3. **proposals**: the best ``pre_nms_top_n`` anchors, decoded, clipped, without tiny boxes, NMS at
   0.7, the best ``post_nms_top_n`` remain (no gradient flows back through them);
4. **Fast R-CNN head** (:mod:`coursepkg.models.roi_heads`): RoI Align pools a 7 × 7 feature per
   proposal, two FC layers, a softmax over ``K + 1`` classes and class-specific boxes; trained on
   sampled proposals (ground-truth boxes added), 25 % foreground at IoU >= 0.5.

The whole network is trained jointly ("approximate joint training", §3.2): the four loss terms are
summed. The small backbone is trained from scratch, so the course's defaults shrink the paper's
image-scale choices to 128 × 128 images (see :class:`FasterRCNNConfig`, each field with its source).

Shapes::

    images                     [B, 3, H, W]
    features                   [B, C, H / 8, W / 8]       (rounded up)
    anchors                    [H/8 * W/8 * A, 4]         location-major (coursepkg.models.anchors order)
    rpn objectness, deltas     [B, H/8 * W/8 * A], [B, H/8 * W/8 * A, 4]
    proposals[i]               [P_i, 4]
    roi features               [R, C, 7, 7]
    class logits, box deltas   [R, K + 1], [R, 4 (K + 1)]

Anchors for the shapes data. ``ShapesDataset`` draws objects with diameters log-uniform in
8..64 px on 128 × 128 images (boxes from about 6 to 64 px, elongated ones up to 2.6 : 1). The
paper's anchors (128, 256, 512 px for ~600 px images) would all be larger than every object, so
we keep the paper's three ratios and put the sizes on the objects' range, one per octave:
8, 16, 32, 64 px (``base_size = 8`` = the stride, ``scales = 1, 2, 4, 8``), A = 12 per location.
A centred square object of size ``s`` between two octave anchors has IoU >= 0.5 with one of them;
off-centre objects lose some: measured on 300 training images (1,030 objects), the median best
IoU is 0.57, 74 % of the objects have an anchor at IoU >= 0.5 and 20 % at >= 0.7. The "best anchor
per ground truth" rule makes every object positive somewhere.

Chapter: book/07_faster_rcnn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from coursepkg.models.anchors import generate_anchors
from coursepkg.models.backbones import ConvBackbone
from coursepkg.models.detector import Detector, check_images, check_targets
from coursepkg.models.roi_heads import (
    FastRCNNHead,
    _fastrcnn_loss,
    _sample_rois_batch,
    postprocess_batch,
)
from coursepkg.models.rpn import (
    _DEFAULTS,
    RPNHead,
    _assign_rpn_targets_batch,
    _check_proposal_settings,
    _generate_proposals_batch,
    _rpn_loss,
    flatten_predictions,
    generate_proposals,
)
from coursepkg.ops.box_coding import _check_weights
from coursepkg.ops.roi_pool import roi_align
from coursepkg.ops.validation import check_image_size, check_int, check_number, check_probability

__all__ = ["RPNPredictions", "FasterRCNN", "FasterRCNNConfig"]


@dataclass(frozen=True)
class FasterRCNNConfig:
    """Every setting of :class:`FasterRCNN`, with where its default comes from.

    "paper" is Faster R-CNN (Ren et al., 2015) and its code py-faster-rcnn; "torchvision" is
    ``torchvision.models.detection.FasterRCNN``; "course" marks a choice for 128 × 128 images and a
    backbone trained from scratch in minutes on a CPU.
    """

    num_classes: int = 5  # K object classes, background excluded (ShapesDataset's default five)
    # --- backbone -------------------------------------------------------------------------------
    # course: one stride-2 stage each -> stride 8. Widths chosen for a CPU: (24, 48, 64) costs 10 % less
    # per step than (32, 64, 64) at the same mAP (measured: 0.76 and 0.75-0.78 after 1,000 steps).
    backbone_channels: tuple[int, ...] = (24, 48, 64)
    convs_per_stage: int = 2  # course: conv-BN-ReLU blocks per stage (the first one strides)
    # --- anchors --------------------------------------------------------------------------------
    anchor_base_size: float = 8.0  # course: = the stride (paper: 16, VGG-16's stride)
    anchor_scales: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)  # course: 8..64 px (paper 8, 16, 32)
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # paper
    anchor_offset: float = 0.5  # course convention: centres mid-cell (torchvision: 0)
    # --- region proposal network ----------------------------------------------------------------
    rpn_fg_iou_thresh: float = 0.7  # paper
    rpn_bg_iou_thresh: float = 0.3  # paper
    rpn_batch_size_per_image: int = 256  # paper
    rpn_positive_fraction: float = 0.5  # paper
    # The proposal counts scale the paper's to a 16 x 16 x 12 = 3,072-anchor map with <= 6 objects.
    rpn_pre_nms_top_n_train: int = 300  # course (paper 12000, torchvision 2000)
    rpn_post_nms_top_n_train: int = 150  # course (paper and torchvision 2000)
    rpn_pre_nms_top_n_test: int = 300  # course (paper 6000, torchvision 1000)
    rpn_post_nms_top_n_test: int = 100  # course (paper 300, torchvision 1000)
    rpn_nms_thresh: float = 0.7  # paper
    rpn_min_size: float = 1e-3  # torchvision (paper 16 px at ~600 px scale)
    # --- Fast R-CNN head ------------------------------------------------------------------------
    roi_size: int = 7  # paper (VGG-16's pool5 grid)
    roi_sampling_ratio: int = 2  # torchvision
    roi_aligned: bool = True  # detectron2's RoIAlignV2: pixel-exact, matters at stride 8
    representation_size: int = 128  # course (torchvision 1024, paper 4096)
    # course; torchvision 512, paper 64 (128 per 2 images). With ~150 proposals per 128 x 128 image,
    # 512 would take them all and leave ~10 % foreground; 64 keeps the paper's 25 %. Measured on the
    # shapes (1,000 steps of 8 images): mAP@0.5 0.75 with 64 RoIs and 128-d FC layers, the same
    # within seed noise as 128 RoIs / 256-d, at three quarters of the cost per step.
    roi_batch_size_per_image: int = 64
    roi_positive_fraction: float = 0.25  # paper
    roi_fg_iou_thresh: float = 0.5  # paper; background is [0, 0.5) like torchvision
    box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)  # torchvision
    # --- inference ------------------------------------------------------------------------------
    score_thresh: float = 0.05  # torchvision
    nms_thresh: float = 0.5  # torchvision
    detections_per_img: int = 100  # torchvision
    min_size: float = 1e-2  # torchvision

    @property
    def stride(self) -> int:
        """Pixels per feature cell: each backbone stage halves the resolution."""
        return 2 ** len(self.backbone_channels)

    @property
    def num_anchors(self) -> int:
        """A, anchors per feature location."""
        return len(self.anchor_scales) * len(self.anchor_ratios)

    def __post_init__(self) -> None:
        # Every setting is checked here, once: the detector then calls the unchecked cores of
        # assign_rpn_targets, sample_rois and NMS with them (each check costs a host round trip).
        for name in ("rpn_fg_iou_thresh", "rpn_bg_iou_thresh", "rpn_positive_fraction",
                     "rpn_nms_thresh", "roi_positive_fraction", "score_thresh", "nms_thresh"):
            check_probability(getattr(self, name), name)
        check_number(self.roi_fg_iou_thresh, "roi_fg_iou_thresh", low=0.0, high=1.0, low_open=True)
        for name in ("rpn_batch_size_per_image", "roi_batch_size_per_image", "detections_per_img",
                     "rpn_pre_nms_top_n_train", "rpn_post_nms_top_n_train",
                     "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test"):
            check_int(getattr(self, name), name, low=0)
        for name in ("rpn_min_size", "min_size"):
            check_number(getattr(self, name), name, low=0.0)
        _check_weights(self.box_weights, "box_weights")  # the box coder's own check
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if not self.backbone_channels or min(self.backbone_channels) < 1:
            raise ValueError(f"backbone_channels must be positive ints, got {self.backbone_channels}")
        if self.convs_per_stage < 1:
            raise ValueError(f"convs_per_stage must be >= 1, got {self.convs_per_stage}")
        if self.rpn_bg_iou_thresh > self.rpn_fg_iou_thresh:
            raise ValueError(
                f"rpn_bg_iou_thresh must be <= rpn_fg_iou_thresh, got {self.rpn_bg_iou_thresh} > "
                f"{self.rpn_fg_iou_thresh}"
            )


class RPNPredictions(NamedTuple):
    """The RPN's outputs for a batch, one row per anchor (anchor order of :mod:`coursepkg.models.anchors`).

    Attributes:
        objectness: ``[B, N]`` logits.
        deltas: ``[B, N, 4]`` box deltas relative to the anchors.
        anchors: ``[N, 4]`` the anchors, shared by every image of the batch.
        proposals: B tensors ``[P_i, 4]``, detached (no gradient flows through them, §3.2).
    """

    objectness: Tensor
    deltas: Tensor
    anchors: Tensor
    proposals: list[Tensor]


class FasterRCNN(Detector):
    """Faster R-CNN with a single-scale backbone (Ren et al., 2015), implementing the Detector contract.

    ``losses(images, targets)`` returns four terms, each already weighted (all weights 1, as in
    torchvision): ``"rpn_objectness"`` and ``"rpn_box"`` (:func:`coursepkg.models.rpn.rpn_loss`,
    torchvision's normalisation), ``"roi_cls"`` and ``"roi_box"``
    (:func:`coursepkg.models.roi_heads.fastrcnn_loss`). ``detect(images)`` returns boxes, scores and
    labels ``0..K-1`` per image. The train/eval mode switches batch norm and the number of
    proposals (``rpn_*_train`` or ``rpn_*_test``), nothing else.

    Args:
        config: every hyper-parameter; the defaults suit 128 × 128 shapes images.

    Chapter: book/07_faster_rcnn.
    """

    def __init__(self, config: FasterRCNNConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or FasterRCNNConfig()
        self.backbone = ConvBackbone(config.backbone_channels, config.convs_per_stage)
        self.backbone.to(memory_format=torch.channels_last)  # see forward
        channels = self.backbone.out_channels
        self.rpn_head = RPNHead(channels, config.num_anchors)
        self.box_head = FastRCNNHead(channels, config.roi_size, config.representation_size, config.num_classes)

    # ----------------------------------------------------------------------------------- steps

    def forward(self, images: Tensor) -> Tensor:
        """The shared feature map: ``[B, 3, H, W]`` -> ``[B, C, ceil(H / 8), ceil(W / 8)]``."""
        check_images(images)
        # Channels-last ("NHWC") convolutions are about 10 % faster on CPUs and on GPUs with AMP;
        # the values are the same, only the memory layout changes.
        return self.backbone(images.contiguous(memory_format=torch.channels_last))

    def anchors(self, feature_size: Sequence[int], like: Tensor) -> Tensor:
        """The ``[h * w * A, 4]`` anchors of an ``(h, w)`` feature map, dtype and device of ``like``."""
        c = self.config
        return generate_anchors(
            feature_size,
            c.stride,
            c.anchor_scales,
            c.anchor_ratios,
            c.anchor_base_size,
            c.anchor_offset,
            dtype=like.dtype,
            device=like.device,
        )

    def rpn(self, features: Tensor, image_size: Sequence[int]) -> RPNPredictions:
        """Run the RPN on ``[B, C, h, w]`` features and turn its outputs into proposals (§3.1, §3.3)."""
        c = self.config
        head = self.rpn_head(features)
        objectness, deltas = flatten_predictions(head.objectness, head.deltas)  # [B, N], [B, N, 4]
        # Box arithmetic in float32, also under mixed precision (where the head returns float16).
        objectness, deltas = objectness.float(), deltas.float()
        anchors = self.anchors(features.shape[-2:], objectness)  # [N, 4]
        pre, post = (
            (c.rpn_pre_nms_top_n_train, c.rpn_post_nms_top_n_train)
            if self.training
            else (c.rpn_pre_nms_top_n_test, c.rpn_post_nms_top_n_test)
        )
        scores, boxes = objectness.detach(), deltas.detach()  # [B, N], [B, N, 4]
        # generate_proposals' finiteness check for the whole batch in one host sync; if it
        # fails, the checked function names the image and element.
        if not bool(torch.isfinite(scores).all() & torch.isfinite(boxes).all()):
            for i in range(features.shape[0]):
                generate_proposals(scores[i], boxes[i], anchors, image_size, pre, post,
                                   nms_thresh=c.rpn_nms_thresh, min_size=c.rpn_min_size)  # fmt: skip
        settings = _check_proposal_settings(pre, post, c.rpn_nms_thresh, c.rpn_min_size, 0.0)
        size = check_image_size(image_size)
        # The unchecked core: the anchors are ours, the predictions were checked above.
        found = _generate_proposals_batch(scores, boxes, anchors, size, *settings)
        proposals = [each.boxes for each in found]
        return RPNPredictions(objectness, deltas, anchors, proposals)

    def pool(self, features: Tensor, boxes: Sequence[Tensor]) -> Tensor:
        """RoI Align: one ``[C, 7, 7]`` feature per box, ``[sum_i P_i, C, 7, 7]``."""
        c = self.config
        return roi_align(
            features,
            [b.to(features.dtype) for b in boxes],
            c.roi_size,
            spatial_scale=1.0 / c.stride,
            sampling_ratio=c.roi_sampling_ratio,
            aligned=c.roi_aligned,
        )

    # -------------------------------------------------------------------------------- contract

    def losses(
        self,
        images: Tensor,
        targets: Sequence[Mapping[str, Tensor]],
        *,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """The four training losses of one batch (Faster R-CNN §3.2, approximate joint training).

        Args:
            images: ``[B, 3, H, W]`` float.
            targets: B dicts with ``"boxes"`` ``[G_i, 4]`` (positive widths and heights) and
                ``"labels"`` ``[G_i]`` int64 in ``0..K-1``; ``G_i = 0`` is allowed.
            generator: random source of the anchor and RoI samplers (the global one if None).

        Returns:
            ``{"rpn_objectness", "rpn_box", "roi_cls", "roi_box"}``, finite scalars.

        Raises:
            ValueError, TypeError: on malformed images or targets (see
                :func:`coursepkg.models.detector.check_targets`), or a zero-width ground-truth box.
        """
        c = self.config
        check_images(images)
        batch, image_size = images.shape[0], tuple(images.shape[-2:])
        check_targets(targets, batch, num_classes=c.num_classes, positive_size=True)
        gt_boxes = [t["boxes"].to(images.dtype) for t in targets]

        features = self(images)  # [B, C, h, w]
        rpn = self.rpn(features, image_size)

        # RPN: 256 sampled anchors per image; the loss averages over all sampled anchors of the batch.
        # The unchecked cores: targets were checked above, the anchors and proposals are ours.
        rpn_targets = _assign_rpn_targets_batch(
            rpn.anchors, gt_boxes, c.rpn_fg_iou_thresh, c.rpn_bg_iou_thresh,
            c.rpn_batch_size_per_image, c.rpn_positive_fraction, generator,
        )  # fmt: skip
        rpn_labels = torch.cat([t.labels for t in rpn_targets])  # [B * N]
        rpn_sums = _rpn_loss(
            rpn.objectness.flatten(),  # [B * N]
            rpn.deltas.reshape(-1, 4),  # [B * N, 4]
            rpn_labels,
            torch.cat([t.target_deltas for t in rpn_targets]),
            "torchvision",
            *_DEFAULTS["torchvision"],  # λ = 1, β = 1/9
            None,
            "sum",
        )
        # Eq. 1's normalisers, as torchvision sets them: both terms divide by the sampled anchors
        # of the batch (the paper: N_cls = 256 sampled anchors, N_reg ~ 2,400 anchor locations).
        # A count on the device: reading it on the host would wait for the GPU.
        num_sampled_anchors = (rpn_labels >= 0).sum().clamp(min=1)

        # Second stage: sample RoIs among proposals + ground truth, pool, classify, regress.
        samples = _sample_rois_batch(
            rpn.proposals, gt_boxes, [t["labels"] for t in targets], c.roi_batch_size_per_image,
            c.roi_positive_fraction, c.roi_fg_iou_thresh, tuple(c.box_weights), True, generator,
        )  # fmt: skip
        head = self.box_head(self.pool(features, [s.proposals for s in samples]))
        roi_labels = torch.cat([s.labels for s in samples])  # [R]
        roi_sums = _fastrcnn_loss(
            head.class_logits.float(),
            head.box_regression.float(),
            roi_labels,
            torch.cat([s.regression_targets for s in samples]),
            beta=1.0 / 9,  # torchvision's
            reduction="sum",
        )
        # Fast R-CNN Eq. (1) averaged over the R sampled RoIs of the batch, both terms (torchvision
        # and the Caffe layers divide the box term by R too, not by the foreground count).
        num_rois = max(roi_labels.shape[0], 1)
        return {
            "rpn_objectness": rpn_sums.objectness / num_sampled_anchors,
            "rpn_box": rpn_sums.box / num_sampled_anchors,
            "roi_cls": roi_sums.classification / num_rois,
            "roi_box": roi_sums.box_regression / num_rois,
        }

    def detect(self, images: Tensor) -> list[dict[str, Tensor]]:
        """Detections per image: boxes ``[D, 4]``, scores ``[D]`` (decreasing), labels ``[D]`` in 0..K-1.

        Call in ``eval()`` mode (test-time proposal counts, batch-norm running statistics) and
        under ``torch.no_grad()``.
        """
        c = self.config
        check_images(images)
        image_size = tuple(images.shape[-2:])
        features = self(images)
        proposals = self.rpn(features, image_size).proposals
        head = self.box_head(self.pool(features, proposals))
        return postprocess_batch(
            head.class_logits,
            head.box_regression,
            proposals,
            image_size,
            score_thresh=c.score_thresh,
            nms_thresh=c.nms_thresh,
            detections_per_img=c.detections_per_img,
            min_size=c.min_size,
            box_weights=c.box_weights,
        )
