"""R-CNN (Girshick et al., CVPR 2014): regions with CNN features, as a pipeline of small steps.

Detection, for one image (R-CNN §2.2 "Test-time detection")::

    image [3, H, W] --selective search----> proposals  [R, 4]          coursepkg.models.selective_search
                    --warp_regions---------> regions    [R, 3, S, S]    Appendix A, context p
                    --RegionFeatureNet-----> features   pool5 [R, P], fc7 [R, D]
                    --linear SVMs ---------> scores     [R, K]          one SVM per class, on fc7
                    --box regression ------> boxes      [R, K, 4]       Appendix C, ridge on pool5
                    --per-class NMS 0.3 ---> detections boxes [N, 4], scores [N], labels [N]

Training, in the paper's order (§2.3):

1. **fine-tune the CNN** on warped proposals: IoU >= 0.5 with a ground truth -> that class, every
   other proposal -> background; batches of 32 foreground and 96 background windows
   (:func:`finetune_labels`, :func:`train_region_net`). The paper starts from ImageNet AlexNet;
   we train a small CNN from scratch, since no pretrained weights can be downloaded offline.
2. **per-class linear SVMs** on fc7: positives are the ground-truth boxes only, negatives the
   proposals with IoU < 0.3 with every box of that class, the rest is ignored; the negatives are
   mined in rounds that add the hardest ones (:func:`svm_labels`, :func:`train_linear_svms`).
3. **bounding-box regression**: class-specific ridge regression from pool5 to the R-CNN targets
   ``(t_x, t_y, t_w, t_h)`` on proposals with IoU > 0.6 (:func:`select_box_regression_pairs`,
   :func:`fit_box_regressor`).

Every constant is a field of :class:`RCNNConfig`, whose defaults are the paper's (or its released
code's, ``rbgirshick/rcnn``); :meth:`RCNNConfig.for_course` returns the values scaled to the
course's 128 x 128 images, each one explained.

Selective search is by far the slowest step; :class:`ProposalCache` computes each image's
proposals once and hands them to R-CNN and Fast R-CNN alike.

Chapter: book/05_rcnn
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coursepkg.models.backbones import PIXEL_MEAN, conv_body
from coursepkg.ops.box_coding import decode_boxes, encode_boxes
from coursepkg.ops.boxes import box_iou, clip_boxes_to_image
from coursepkg.ops.labels import to_softmax_labels
from coursepkg.ops.nms import batched_nms
from coursepkg.ops.validation import (
    check_boxes,
    check_int,
    check_labels,
    check_number,
    check_positive_size,
)

# Per-class SVM labels, the same encoding as coursepkg.models.assignment for anchors.
POSITIVE, NEGATIVE, IGNORED = 1, 0, -1


@dataclass(frozen=True)
class RCNNConfig:
    """R-CNN's constants. Defaults are the paper's; :meth:`for_course` gives the course's.

    Sources: the paper (§2, Appendices A-C) and its released code ``rbgirshick/rcnn``
    (``rcnn_train.m``, ``rcnn_create_model.m``, ``rcnn_train_bbox_regressor.m``).
    """

    warp_size: int = 227  # AlexNet's input side; every proposal is warped to S x S (§2.1)
    context_padding: int = 16  # p: pixels of context around the box in the warped frame (App. A)
    max_proposals: int = 2000  # selective search "fast" mode gives about 2000 per image (§2.1)
    finetune_fg_iou_thresh: float = 0.5  # fine-tuning: IoU >= 0.5 with a ground truth is foreground (§2.3)
    finetune_fg_per_batch: int = 32  # fine-tuning batches: 32 foreground windows ...
    finetune_bg_per_batch: int = 96  # ... and 96 background windows (§2.3)
    feature_norm: float = 20.0  # features are rescaled to this mean L2 norm (rcnn_scale_features)
    svm_bg_iou_thresh: float = 0.3  # SVM negatives: IoU < 0.3 with every box of the class (§2.3)
    svm_c: float = 1e-3  # liblinear -c (svm_C in rcnn_train.m)
    svm_pos_weight: float = 2.0  # liblinear -w1: positives' hinge counts twice (pos_loss_weight)
    svm_bias_mult: float = 10.0  # liblinear -B: the bias is a constant feature of this value
    svm_hard_thresh: float = -1.0001  # a negative scoring above this is "hard" (hard_thresh)
    svm_evict_thresh: float = -1.2  # a cached negative scoring below this is evicted
    svm_mining_rounds: int = 3  # ours: the paper passes once over the images, retraining often
    bbox_reg_fg_iou_thresh: float = 0.6  # box regression uses proposals with IoU > 0.6 (App. C)
    bbox_reg_ridge_penalty: float = 1000.0  # ridge penalty (App. C, rcnn_train_bbox_regressor.m)
    pre_nms_top_n: int = 100  # best-scoring proposals kept per class and image (rcnn_test.m)
    nms_thresh: float = 0.3  # per-class greedy NMS at test time (rcnn_test.m)
    detections_per_img: int = 100  # ours: COCO-style mAP reads at most 100 per image

    @classmethod
    def for_course(cls) -> RCNNConfig:
        """The paper's values scaled to the course's 128 x 128 images and small from-scratch CNN."""
        return cls(
            # 227 px regions of ~500 px VOC images; our objects are 8..64 px, so 32 px regions.
            warp_size=32,
            # p = 16 at 227 is 7 % of the side; 16 * 32 / 227 = 2.3, rounded to 2 px.
            context_padding=2,
            # Everything else keeps the paper's value. (Selective search's fast mode returns
            # about 120 boxes for a 128 x 128 shapes image, so the cap of 2000 never applies.)
        )

    def __post_init__(self) -> None:
        if self.warp_size <= 2 * self.context_padding:
            raise ValueError(
                f"warp_size must exceed 2 * context_padding, got {self.warp_size} and "
                f"{self.context_padding}"
            )


# --------------------------------------------------------------------------------------------
# Proposals: computed once per image


class ProposalCache:
    """Remember the proposals of every image, keyed by the image's content.

    Selective search takes from a fraction of a second to seconds per image, far longer than
    anything else in R-CNN or Fast R-CNN, and gives the same boxes every time. The cache calls
    ``proposal_fn`` once per distinct image, keeps the first ``max_proposals`` boxes on the CPU,
    and returns them on the image's device.

    The cache is keyed by content because the detector contract hands a model only images (a batch
    is a fresh tensor every epoch, so neither an index nor the tensor's identity would do). The key
    is computed on the image's own device, never by hashing its bytes on the host: the shape, the
    dtype and two integer sums of the image's raw words (:meth:`fingerprint`; integer addition is
    exact, so a CPU and a GPU copy of an image get the same key). Equal keys only pick a bucket:
    an image counts as seen only if it is ``torch.equal`` to the copy stored there, so two
    different images never share proposals, even when their keys agree. The stored copies cost
    one image's memory per distinct image.

    Args:
        proposal_fn: ``image [3, H, W] -> boxes [P, 4]`` float xyxy pixels, best first.
        max_proposals: keep at most this many boxes per image (``None``: all).

    Chapter: book/05_rcnn (section "Region proposals: selective search"); used by book/06_fast_rcnn.
    """

    def __init__(self, proposal_fn: Callable[[Tensor], Tensor], max_proposals: int | None = None):
        if max_proposals is not None and max_proposals < 0:
            raise ValueError(f"max_proposals must be >= 0 or None, got {max_proposals}")
        self.proposal_fn = proposal_fn
        self.max_proposals = max_proposals
        # key -> [(image copy, boxes [P, 4] on the CPU)], one entry per distinct image
        self._buckets: dict[tuple, list[tuple[Tensor, Tensor]]] = {}
        self.seconds = 0.0  # time spent inside proposal_fn, for the chapters' cost tables

    @staticmethod
    def fingerprint(image: Tensor) -> tuple:
        """The bucket key of an image: shape, dtype and two exact integer sums of its raw words.

        With ``w_i`` the image's elements read as signed integers of the same width and
        ``r_i = i mod 65521 + 1``: ``(sum_i w_i, sum_i r_i w_i)`` in int64 (wrapping), computed on
        the image's device; only the two sums reach the host.
        """
        data = image.detach().contiguous().flatten()
        word = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[data.element_size()]
        words = data.view(word).long()  # [n] raw bits as integers
        ramp = torch.arange(words.numel(), device=words.device) % 65521 + 1  # [n]
        sums = torch.stack([words.sum(), (words * ramp).sum()]).tolist()
        return (tuple(image.shape), image.dtype, *sums)

    def __call__(self, image: Tensor) -> Tensor:
        """Proposals of ``image`` [3, H, W]: ``[P, 4]`` float32 xyxy on the image's device."""
        if not isinstance(image, Tensor) or image.dim() != 3:
            raise ValueError(f"image must be a [3, H, W] tensor, got {_shape_of(image)}")
        bucket = self._buckets.setdefault(self.fingerprint(image), [])
        for seen, boxes in bucket:
            if torch.equal(seen.to(image.device), image.detach()):
                return boxes.to(image.device)
        start = time.perf_counter()
        boxes = self.proposal_fn(image)
        self.seconds += time.perf_counter() - start
        check_boxes(boxes, "proposal_fn(image)")
        boxes = boxes[: self.max_proposals].detach().to("cpu", torch.float32)
        bucket.append((image.detach().clone(), boxes))
        return boxes.to(image.device)

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())


def _shape_of(x: object) -> object:
    return list(x.shape) if isinstance(x, Tensor) else type(x).__name__


# --------------------------------------------------------------------------------------------
# Step 1: warp every proposal to the CNN's fixed input size


def _check_image(image: object, name: str = "image") -> None:
    if not isinstance(image, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(image).__name__}")
    if image.dim() != 3:
        raise ValueError(f"{name} must be [C, H, W], got {list(image.shape)}")
    if not image.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {image.dtype}")


def _size_pair(output_size: int | Sequence[int]) -> tuple[int, int]:
    pair = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if len(pair) != 2 or not all(isinstance(s, int) and s > 0 for s in pair):
        raise ValueError(
            f"output_size must be a positive int or (height, width) pair, got {output_size!r}"
        )
    return pair  # type: ignore[return-value]


def warp_regions(
    image: Tensor,
    boxes: Tensor,
    output_size: int | Sequence[int],
    *,
    context_padding: int = 0,
    fill_value: float = 0.0,
) -> Tensor:
    """Cut every box out of the image and stretch it to ``output_size`` (R-CNN's anisotropic "warp").

    R-CNN's CNN takes a fixed ``227 x 227`` input, so each proposal, whatever its shape, is
    scaled independently along x and y to that size (Appendix A). First the box is dilated so that
    exactly ``p = context_padding`` output pixels of image context surround it: the box fills the
    central ``S - 2p`` output pixels, one output pixel spans ``w / (S_w - 2p)`` input pixels
    horizontally and ``h / (S_h - 2p)`` vertically. Output pixel ``(i, j)`` is the bilinear
    interpolation of the image at the continuous point::

        x = x1 + (j + 0.5 - p) * w / (S_w - 2p),   y = y1 + (i + 0.5 - p) * h / (S_h - 2p)

    (pixel column ``c`` of the image has its centre at ``c + 0.5``). Points outside the image
    ``[0, W] x [0, H]`` get ``fill_value`` (the paper fills with the mean pixel); inside, the
    interpolation clamps to the border pixels. For boxes inside the image this equals
    ``torchvision.ops.roi_align(image[None], [boxes], output_size, aligned=True, sampling_ratio=1)``.

    Args:
        image: ``[C, H, W]`` floating-point image.
        boxes: ``[R, 4]`` float xyxy boxes in pixels; zero-area boxes give a constant region.
        output_size: output side ``S`` or ``(S_h, S_w)``, as ``roi_align``'s ``output_size``.
        context_padding: ``p`` in output pixels, ``0 <= 2p < min(S_h, S_w)``.
        fill_value: value of output pixels whose sample point lies outside the image.

    Returns:
        ``[R, C, S_h, S_w]`` regions, dtype and device of ``image`` (``[0, C, S_h, S_w]`` for R = 0).

    Raises:
        TypeError: for a non-tensor or integer image or integer boxes.
        ValueError: for bad shapes, invalid boxes, a bad ``output_size`` or padding.

    Chapter: book/05_rcnn (section "Warping regions")
    """
    _check_image(image)
    check_boxes(boxes)
    out_h, out_w = _size_pair(output_size)
    if not isinstance(context_padding, int) or not 0 <= 2 * context_padding < min(out_h, out_w):
        raise ValueError(
            f"context_padding must be an int with 0 <= 2 * p < {min(out_h, out_w)}, "
            f"got {context_padding!r}"
        )
    channels, height, width = image.shape
    if boxes.shape[0] == 0:
        return image.new_empty((0, channels, out_h, out_w))
    boxes = boxes.to(image.dtype)
    p = context_padding
    step_x = (boxes[:, 2] - boxes[:, 0]) / (out_w - 2 * p)  # [R] input pixels per output pixel
    step_y = (boxes[:, 3] - boxes[:, 1]) / (out_h - 2 * p)
    offsets_x = torch.arange(out_w, dtype=image.dtype, device=image.device) + 0.5 - p  # [S_w]
    offsets_y = torch.arange(out_h, dtype=image.dtype, device=image.device) + 0.5 - p  # [S_h]
    xs = boxes[:, 0, None] + offsets_x[None] * step_x[:, None]  # [R, S_w] sample points
    ys = boxes[:, 1, None] + offsets_y[None] * step_y[:, None]  # [R, S_h]
    # grid_sample with align_corners=False maps -1 and +1 to the image's outer edges 0 and W:
    # exactly our continuous coordinates.
    gx = (2 * xs / width - 1)[:, None, :].expand(-1, out_h, -1)  # [R, S_h, S_w]
    gy = (2 * ys / height - 1)[:, :, None].expand(-1, -1, out_w)  # [R, S_h, S_w]
    grid = torch.stack((gx, gy), dim=-1)  # [R, S_h, S_w, 2]
    batch = image[None].expand(boxes.shape[0], -1, -1, -1)  # [R, C, H, W], no copy
    regions = F.grid_sample(
        batch, grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    inside = ((ys >= 0) & (ys <= height))[:, :, None] & ((xs >= 0) & (xs <= width))[:, None, :]
    return regions.masked_fill(~inside[:, None], fill_value)  # [R, C, S_h, S_w]


# --------------------------------------------------------------------------------------------
# Step 2: the feature CNN


class RegionFeatures(NamedTuple):
    """Features of ``R`` warped regions (R-CNN's layer names)."""

    pool5: Tensor
    """``[R, P]`` flattened output of the last conv block; box regression reads these (App. C)."""
    fc7: Tensor
    """``[R, D]`` output of the second fully connected layer; the SVMs read these (§2.2)."""


class RegionFeatureNet(nn.Module):
    """The R-CNN feature extractor: :func:`conv_body`, fc6, fc7 and a ``K + 1``-way classifier.

    ``forward`` returns the classifier's logits, used only to train the network (R-CNN's
    "fine-tuning" stage, background at index 0); :meth:`extract` returns the pool5 and fc7
    features that the SVMs and the box regressors use (the classifier is then thrown away, as in
    the paper). Inputs are warped regions in ``[0, 1]``; the network subtracts :data:`PIXEL_MEAN`.

    Args:
        num_classes: ``K``, object classes without background.
        input_size: side ``S`` of the warped regions, a multiple of 8.
        width: channels of the first conv block (the body ends with ``4 * width``).
        representation_size: width ``D`` of fc6 and fc7 (AlexNet: 4096).
        dropout: dropout before fc6 and fc7 during training (AlexNet: 0.5).

    Shapes:
        ``[R, 3, S, S] -> [R, K + 1]`` logits; :meth:`extract` gives :class:`RegionFeatures`.

    Chapter: book/05_rcnn (section "The feature CNN")
    """

    def __init__(
        self,
        num_classes: int,
        input_size: int = 32,
        width: int = 16,
        representation_size: int = 256,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (background is added), got {num_classes}")
        if input_size < 8 or input_size % 8:
            raise ValueError(f"input_size must be a positive multiple of 8, got {input_size}")
        self.num_classes, self.input_size = num_classes, input_size
        self.body = conv_body(width)
        pool5_dim = 4 * width * (input_size // 8) ** 2
        self.fc6 = nn.Linear(pool5_dim, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(representation_size, num_classes + 1)

    def extract(self, regions: Tensor) -> RegionFeatures:
        """pool5 and fc7 features of ``regions`` [R, 3, S, S]."""
        expected = (3, self.input_size, self.input_size)
        if regions.dim() != 4 or tuple(regions.shape[1:]) != expected:
            raise ValueError(
                f"regions must be [R, {', '.join(map(str, expected))}], got {list(regions.shape)}"
            )
        pool5 = self.body(regions - PIXEL_MEAN).flatten(start_dim=1)  # [R, P]
        fc6 = F.relu(self.fc6(self.dropout(pool5)))  # [R, D]
        fc7 = F.relu(self.fc7(self.dropout(fc6)))  # [R, D]
        return RegionFeatures(pool5, fc7)

    def forward(self, regions: Tensor) -> Tensor:
        return self.classifier(self.extract(regions).fc7)  # [R, K + 1]


def finetune_labels(
    proposals: Tensor, gt_boxes: Tensor, gt_labels: Tensor, fg_iou_thresh: float = 0.5
) -> Tensor:
    """Softmax labels for fine-tuning the CNN: the best ground truth's class, or background.

    A proposal whose highest IoU with a ground-truth box is at least ``fg_iou_thresh`` gets that box's
    class (``1..K``, :func:`coursepkg.ops.labels.to_softmax_labels`); every other proposal is
    background, 0 (R-CNN §2.3 "Domain-specific fine-tuning"). Ties go to the first ground truth.

    Args:
        proposals: ``[P, 4]`` float xyxy.
        gt_boxes: ``[G, 4]`` float xyxy, ``G`` may be 0.
        gt_labels: ``[G]`` int64 in ``0..K-1``.
        fg_iou_thresh: foreground threshold, 0.5 in the paper.

    Returns:
        ``[P]`` int64 labels in ``0..K``.

    Raises:
        TypeError, ValueError: for invalid boxes, labels of the wrong dtype or length.

    Chapter: book/05_rcnn (section "The feature CNN")
    """
    check_boxes(proposals, "proposals")
    check_boxes(gt_boxes, "gt_boxes")
    check_labels(gt_labels, "gt_labels", gt_boxes.shape[0])
    labels = torch.zeros(proposals.shape[0], dtype=torch.int64, device=proposals.device)
    if gt_boxes.shape[0] == 0 or proposals.shape[0] == 0:
        return labels
    best_iou, best_gt = box_iou(proposals, gt_boxes.to(proposals.dtype)).max(dim=1)  # [P], [P]
    fg = best_iou >= fg_iou_thresh
    labels[fg] = to_softmax_labels(gt_labels[best_gt[fg]])
    return labels


def train_region_net(
    net: RegionFeatureNet,
    regions: Tensor,
    labels: Tensor,
    *,
    steps: int,
    fg_per_batch: int = 32,
    bg_per_batch: int = 96,
    lr: float = 1e-3,
    generator: torch.Generator | None = None,
) -> list[float]:
    """Train ``net`` to classify warped regions into background and ``K`` classes.

    Each step draws ``fg_per_batch`` foreground and ``bg_per_batch`` background regions (R-CNN
    §2.3: 32 and 96, biased towards the foreground because it is rare among proposals), flips
    half of them horizontally and takes an Adam step on the cross-entropy. The paper fine-tunes
    ImageNet AlexNet with SGD at lr 0.001; we train from scratch, where Adam is the forgiving
    choice.

    Args:
        net: the network; it is put in train mode and updated in place, then left in eval mode.
        regions: ``[N, 3, S, S]`` warped regions (:func:`warp_regions`), on the net's device.
        labels: ``[N]`` int64 in ``0..K`` (:func:`finetune_labels`).
        steps: number of optimisation steps.
        fg_per_batch, bg_per_batch: regions drawn per step (with replacement when a pool is small).
        lr: Adam's learning rate.
        generator: random source of the batches and flips.

    Returns:
        The loss of every step, as Python floats.

    Raises:
        ValueError: for mismatched lengths, labels outside ``0..K`` or no region at all.

    Chapter: book/05_rcnn (section "The feature CNN")
    """
    if regions.dim() != 4 or labels.shape != (regions.shape[0],):
        raise ValueError(
            f"regions must be [N, 3, S, S] and labels [N], got {list(regions.shape)} and "
            f"{list(labels.shape)}"
        )
    if regions.shape[0] == 0:
        raise ValueError("regions is empty: nothing to train on")
    if labels.dtype != torch.int64 or int(labels.min()) < 0 or int(labels.max()) > net.num_classes:
        raise ValueError(f"labels must be int64 in 0..{net.num_classes}")
    fg_idx = torch.nonzero(labels > 0).flatten().cpu()
    bg_idx = torch.nonzero(labels == 0).flatten().cpu()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    history = []
    for _ in range(steps):
        batch = torch.cat(
            [_draw(fg_idx, fg_per_batch, generator), _draw(bg_idx, bg_per_batch, generator)]
        )
        x = regions[batch.to(regions.device)]  # [B, 3, S, S]
        flip = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        loss = F.cross_entropy(net(x), labels[batch.to(labels.device)])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    net.eval()
    return history


def _draw(pool: Tensor, count: int, generator: torch.Generator | None) -> Tensor:
    """``count`` indices from ``pool``: without replacement if it is large enough, else with."""
    if pool.numel() == 0 or count == 0:
        return pool[:0]
    if pool.numel() >= count:
        return pool[torch.randperm(pool.numel(), generator=generator)[:count]]
    return pool[torch.randint(pool.numel(), (count,), generator=generator)]


@torch.no_grad()
def extract_features(
    net: RegionFeatureNet,
    image: Tensor,
    boxes: Tensor,
    *,
    context_padding: int,
    chunk_size: int = 512,
) -> RegionFeatures:
    """Warp ``boxes`` out of ``image`` and run the CNN on them, ``chunk_size`` regions at a time.

    Args:
        net: the feature CNN (use it in eval mode).
        image: ``[3, H, W]`` float image in ``[0, 1]``, on the net's device.
        boxes: ``[R, 4]`` float xyxy.
        context_padding: ``p`` of :func:`warp_regions`.
        chunk_size: regions per forward pass (bounds the memory).

    Returns:
        :class:`RegionFeatures` with ``R`` rows (zero rows for ``R = 0``).

    Chapter: book/05_rcnn (section "The feature CNN")
    """
    check_boxes(boxes)
    pool5, fc7 = [], []
    for start in range(0, max(boxes.shape[0], 1), chunk_size):
        regions = warp_regions(
            image,
            boxes[start : start + chunk_size],
            net.input_size,
            context_padding=context_padding,
            fill_value=PIXEL_MEAN,
        )
        features = net.extract(regions)
        pool5.append(features.pool5)
        fc7.append(features.fc7)
    return RegionFeatures(torch.cat(pool5), torch.cat(fc7))


def feature_scale(features: Tensor, target_norm: float = 20.0) -> float:
    """The factor that gives ``features`` a mean L2 norm of ``target_norm`` (rcnn_scale_features).

    R-CNN rescales every feature vector by one constant, measured on the training set, so that the
    SVM's ``C`` and the ridge ``λ`` mean the same whatever the layer or the network.

    Args:
        features: ``[N, D]`` training features.
        target_norm: the mean norm after scaling (20 in the released code).

    Returns:
        ``target_norm / mean_i ||features_i||`` (1.0 if the features are empty or all zero).

    Chapter: book/05_rcnn (section "Per-class linear SVMs")
    """
    if features.dim() != 2:
        raise ValueError(f"features must be [N, D], got {list(features.shape)}")
    mean_norm = float(features.norm(dim=1).mean()) if features.shape[0] else 0.0
    return target_norm / mean_norm if mean_norm > 0 else 1.0


# --------------------------------------------------------------------------------------------
# Step 3: one linear SVM per class, with hard-negative mining


def svm_labels(
    boxes: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    num_classes: int,
    *,
    bg_iou_thresh: float = 0.3,
) -> Tensor:
    """Per-class SVM labels of every box of one image (R-CNN §2.3 "Object category classifiers").

    For class ``c``, box ``i`` is

    * ``POSITIVE`` (1) if it *is* a ground-truth box of class ``c``, i.e. has IoU exactly 1 with one
      (``boxes`` must then contain the ground-truth boxes: ``torch.cat([gt_boxes, proposals])``);
    * ``NEGATIVE`` (0) if its IoU with every ground-truth box of class ``c`` is below ``bg_iou_thresh``
      (0.3, chosen by a grid search in the paper; ground truths of other classes count too);
    * ``IGNORED`` (-1) otherwise: a proposal overlapping an object of class ``c`` by 0.3 or more is
      neither a clean positive nor a negative. Unlike fine-tuning, the SVMs never see proposals
      as positives.

    Args:
        boxes: ``[N, 4]`` float xyxy: the ground-truth boxes and the proposals.
        gt_boxes: ``[G, 4]`` float xyxy, ``G`` may be 0.
        gt_labels: ``[G]`` int64 in ``0..K-1``.
        num_classes: ``K``.
        bg_iou_thresh: the negative threshold (strictly below it is negative).

    Returns:
        ``[N, K]`` int64 in ``{1, 0, -1}``.

    Raises:
        TypeError, ValueError: for invalid boxes or labels, or labels >= ``num_classes``.

    Chapter: book/05_rcnn (section "Per-class linear SVMs")
    """
    check_boxes(boxes, "boxes")
    check_boxes(gt_boxes, "gt_boxes")
    num_classes = check_int(num_classes, "num_classes", low=1)
    check_labels(gt_labels, "gt_labels", gt_boxes.shape[0], num_classes=num_classes)
    labels = torch.full(
        (boxes.shape[0], num_classes), NEGATIVE, dtype=torch.int64, device=boxes.device
    )
    if gt_boxes.shape[0] == 0 or boxes.shape[0] == 0:
        return labels
    iou = box_iou(boxes, gt_boxes.to(boxes.dtype))  # [N, G]
    same_class = F.one_hot(gt_labels, num_classes).bool()  # [G, K]
    # Max IoU of each box with the ground truths of each class: [N, G, 1] masked by [1, G, K].
    iou_per_class = torch.where(same_class[None], iou[:, :, None], -1.0).amax(dim=1)  # [N, K]
    labels[iou_per_class >= bg_iou_thresh] = IGNORED
    # A box identical to a ground truth of class c (IoU exactly 1) is that ground truth.
    labels[iou_per_class == 1.0] = POSITIVE
    return labels


class LinearSVM(NamedTuple):
    """A linear classifier ``score(x) = weight · x + bias``."""

    weight: Tensor
    """``[D]``"""
    bias: Tensor
    """``[]``"""


def fit_linear_svm(
    features: Tensor,
    targets: Tensor,
    *,
    c: float = 1e-3,
    pos_weight: float = 2.0,
    bias_mult: float = 10.0,
    tol: float = 0.1,
    max_epochs: int = 1000,
    generator: torch.Generator | None = None,
) -> LinearSVM:
    """Train one L2-regularised, hinge-loss linear SVM by dual coordinate descent.

    Solves the problem that R-CNN hands to liblinear (``-s 3 -c C -w1 pos_weight -B bias_mult``)::

        min_w  1/2 ||w~||^2 + sum_i C_i max(0, 1 - y_i w~ · x~_i)

    with ``x~_i = (x_i, bias_mult)``, ``w~ = (w, b / bias_mult)`` (so the bias is regularised
    too, like liblinear's) and ``C_i = C * pos_weight`` for positives, ``C`` for negatives. The
    dual is ``min_a 1/2 a^T Q a - sum_i a_i`` subject to ``0 <= a_i <= C_i`` with
    ``Q_ij = y_i y_j x~_i · x~_j``; coordinate descent (Hsieh et al., ICML 2008, liblinear's solver)
    visits the ``a_i`` in random order and solves each one-dimensional problem exactly::

        G   = y_i w~ · x~_i - 1                         (the gradient along a_i)
        a_i <- clip(a_i - G / Q_ii, 0, C_i),   w~ <- w~ + (change in a_i) y_i x~_i

    until no projected gradient exceeds ``tol`` in absolute value (the optimality conditions of the
    dual; liblinear's default tolerance is 0.1). Support vectors are the samples with ``a_i > 0``.

    Args:
        features: ``[N, D]`` float features.
        targets: ``[N]`` with ``+1`` for positives and ``-1`` for negatives.
        c: ``C``, the weight of the hinge losses against the regulariser.
        pos_weight: extra weight of positive samples' hinge losses.
        bias_mult: the constant feature that carries the bias.
        tol: stopping tolerance on the largest absolute projected gradient of a pass.
        max_epochs: upper bound on the passes over the data.
        generator: random source of the visiting order.

    Returns:
        :class:`LinearSVM` with ``weight [D]`` and ``bias []``, in the dtype of ``features``
        (zeros for ``N = 0``).

    Raises:
        TypeError: for non-floating features.
        ValueError: for bad shapes, targets other than +-1, non-finite features, non-positive
            ``c``, ``pos_weight`` or ``bias_mult``.

    Chapter: book/05_rcnn (section "Per-class linear SVMs")
    """
    _check_features(features, "features")
    if targets.shape != (features.shape[0],) or not bool(((targets == 1) | (targets == -1)).all()):
        raise ValueError(f"targets must be [{features.shape[0]}] with values +1 or -1")
    if min(c, pos_weight, bias_mult) <= 0:
        raise ValueError(
            f"c, pos_weight and bias_mult must be > 0, got {c}, {pos_weight}, {bias_mult}"
        )
    num, dim = features.shape
    x = torch.cat([features, features.new_full((num, 1), bias_mult)], dim=1)  # [N, D + 1]
    rows = (targets.to(x.dtype)[:, None] * x).unbind(0)  # y_i x~_i, N views of [D + 1]
    q_diag = (x * x).sum(dim=1).tolist()  # Q_ii = ||x~_i||^2 > 0 thanks to the bias feature
    upper = [c * pos_weight if t > 0 else c for t in targets.tolist()]  # C_i
    alpha = [0.0] * num
    w = x.new_zeros(dim + 1)
    for _ in range(max_epochs):
        worst = 0.0  # largest |projected gradient| of the pass: 0 at the optimum (KKT)
        for i in torch.randperm(num, generator=generator).tolist():
            grad = float(torch.dot(rows[i], w)) - 1.0
            # Projected gradient: zero when a_i sits at a bound it cannot leave in that direction.
            if alpha[i] == 0.0:
                pg = min(grad, 0.0)
            elif alpha[i] == upper[i]:
                pg = max(grad, 0.0)
            else:
                pg = grad
            worst = max(worst, abs(pg))
            if pg != 0.0:
                new = min(max(alpha[i] - grad / q_diag[i], 0.0), upper[i])
                w.add_(rows[i], alpha=new - alpha[i])
                alpha[i] = new
        if worst < tol:
            break
    return LinearSVM(weight=w[:dim].clone(), bias=w[dim] * bias_mult)


def _check_features(features: object, name: str) -> None:
    if not isinstance(features, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(features).__name__}")
    if not features.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {features.dtype}")
    if features.dim() != 2:
        raise ValueError(f"{name} must be [N, D], got {list(features.shape)}")
    if not bool(torch.isfinite(features).all()):
        raise ValueError(f"{name} contains NaN or inf")


def mine_hard_negatives(
    scores: Tensor, cached: Tensor, *, hard_thresh: float = -1.0001, max_new: int | None = None
) -> Tensor:
    """The negatives to add to the SVM's cache: uncached ones that score above ``hard_thresh``.

    A negative with score ``s > -1`` sits inside the margin (its hinge loss ``max(0, 1 + s)`` is
    positive), so the current SVM gets it wrong or nearly so: a *hard* negative (R-CNN §2.3 and
    Appendix B, following Felzenszwalb et al.'s DPM; threshold -1.0001 in ``rcnn_train.m``).
    The hardest, highest-scoring ones come first.

    Args:
        scores: ``[M]`` current SVM scores of all the negatives.
        cached: ``[M]`` bool, True for negatives already in the training cache.
        hard_thresh: a negative is hard when its score is strictly above this.
        max_new: return at most this many (``None``: all).

    Returns:
        ``[A]`` int64 indices into ``scores``, by decreasing score (ties: lower index first).

    Raises:
        ValueError: for mismatched shapes or a negative ``max_new``.

    Chapter: book/05_rcnn (section "Per-class linear SVMs")
    """
    if scores.dim() != 1 or cached.shape != scores.shape or cached.dtype != torch.bool:
        raise ValueError(
            f"scores must be [M] and cached a bool [M], got {list(scores.shape)} and "
            f"{list(cached.shape)} {cached.dtype}"
        )
    if max_new is not None and max_new < 0:
        raise ValueError(f"max_new must be >= 0 or None, got {max_new}")
    candidates = torch.nonzero(~cached & (scores > hard_thresh)).flatten()  # [A'], increasing
    order = torch.sort(scores[candidates], descending=True, stable=True).indices
    return candidates[order][:max_new]


class SVMTraining(NamedTuple):
    """Result of :func:`train_linear_svms`."""

    weight: Tensor
    """``[K, D]``: row ``c`` is class ``c``'s SVM."""
    bias: Tensor
    """``[K]``"""
    cache_sizes: list[list[int]]
    """Per class, the number of negatives in the cache at each training round."""
    objectives: list[list[float]]
    """Per class, the primal objective on *all* its negatives after each round (falls as mining
    finds the negatives that matter)."""


def svm_objective(
    svm: LinearSVM,
    features: Tensor,
    targets: Tensor,
    *,
    c: float,
    pos_weight: float,
    bias_mult: float,
) -> float:
    """``1/2 ||w||^2 + 1/2 (b / bias_mult)^2 + sum_i C_i max(0, 1 - y_i (w · x_i + b))``.

    The quantity :func:`fit_linear_svm` minimises (``rcnn_train.m`` prints it as "obj val").

    Chapter: book/05_rcnn (section "Per-class linear SVMs")
    """
    margins = targets.to(features.dtype) * (features @ svm.weight + svm.bias)  # [N]
    weights = torch.where(targets > 0, c * pos_weight, c).to(features.dtype)
    hinge = (weights * (1 - margins).clamp(min=0)).sum()
    reg = 0.5 * svm.weight.square().sum() + 0.5 * (svm.bias / bias_mult) ** 2
    return float(hinge + reg)


def train_linear_svms(
    features: Tensor,
    labels: Tensor,
    *,
    c: float = 1e-3,
    pos_weight: float = 2.0,
    bias_mult: float = 10.0,
    hard_thresh: float = -1.0001,
    evict_thresh: float = -1.2,
    initial_negatives: int = 1000,
    mining_rounds: int = 3,
    max_new_per_round: int | None = None,
    tol: float = 0.1,
    generator: torch.Generator | None = None,
) -> SVMTraining:
    """One linear SVM per class, trained with hard-negative mining (R-CNN §2.3, Appendix B).

    There are far too many negatives to train on all of them (2000 proposals per image, thousands
    of images). For each class ``c`` the SVM starts from every positive and a random
    ``initial_negatives`` of the negatives (the paper: those of the first image), then, for each of
    ``mining_rounds`` rounds: score all negatives; evict cached ones scoring below
    ``evict_thresh`` (easy; ``rcnn_train.m``: -1.2); add the uncached ones scoring above
    ``hard_thresh`` (:func:`mine_hard_negatives`); retrain. It stops early when no hard negative
    is left: the SVM is then optimal for the full set of negatives.

    Args:
        features: ``[N, D]`` float features (scaled, e.g. by :func:`feature_scale`).
        labels: ``[N, K]`` int64 from :func:`svm_labels`: 1 positive, 0 negative, -1 ignored.
        c, pos_weight, bias_mult, tol: passed to :func:`fit_linear_svm` (the paper's defaults).
        hard_thresh: negatives scoring above it are added (:func:`mine_hard_negatives`).
        evict_thresh: cached negatives scoring below it are removed.
        initial_negatives: size of the first random cache of negatives per class.
        mining_rounds: rounds of mining after the first training.
        max_new_per_round: cap on the hard negatives added per round (``None``: no cap).
        generator: random source of the initial cache and of the solver.

    Returns:
        :class:`SVMTraining` with ``weight [K, D]``, ``bias [K]`` and the per-round statistics.

    Raises:
        TypeError, ValueError: for bad features, labels not ``[N, K]`` int64 in ``{-1, 0, 1}``.

    Chapter: book/05_rcnn (section "Per-class linear SVMs")
    """
    _check_features(features, "features")
    if labels.dim() != 2 or labels.shape[0] != features.shape[0] or labels.dtype != torch.int64:
        raise ValueError(
            f"labels must be int64 [{features.shape[0]}, K], got {labels.dtype} {list(labels.shape)}"
        )
    if not bool(((labels >= IGNORED) & (labels <= POSITIVE)).all()):
        raise ValueError("labels must hold 1 (positive), 0 (negative) or -1 (ignored)")
    weights, biases, cache_sizes, objectives = [], [], [], []
    for cls in range(labels.shape[1]):
        pos = features[labels[:, cls] == POSITIVE]  # [P, D]
        neg = features[labels[:, cls] == NEGATIVE]  # [M, D]
        all_x = torch.cat([pos, neg])
        all_y = torch.cat([pos.new_ones(pos.shape[0]), -neg.new_ones(neg.shape[0])])
        cached = torch.zeros(neg.shape[0], dtype=torch.bool)
        cached[torch.randperm(neg.shape[0], generator=generator)[:initial_negatives]] = True
        sizes, objs = [], []
        for round_ in range(mining_rounds + 1):
            x = torch.cat([pos, neg[cached.to(neg.device)]])
            y = torch.cat([pos.new_ones(pos.shape[0]), -neg.new_ones(int(cached.sum()))])
            svm = fit_linear_svm(
                x, y, c=c, pos_weight=pos_weight, bias_mult=bias_mult, tol=tol, generator=generator
            )
            sizes.append(int(cached.sum()))
            objs.append(
                svm_objective(svm, all_x, all_y, c=c, pos_weight=pos_weight, bias_mult=bias_mult)
            )
            if round_ == mining_rounds:
                break
            scores = (neg @ svm.weight + svm.bias).cpu()  # [M]
            cached &= scores >= evict_thresh  # easy negatives leave the cache
            hard = mine_hard_negatives(
                scores, cached, hard_thresh=hard_thresh, max_new=max_new_per_round
            )
            if hard.numel() == 0:
                break  # every negative is outside the margin: optimal for all of them
            cached[hard] = True
        weights.append(svm.weight)
        biases.append(svm.bias)
        cache_sizes.append(sizes)
        objectives.append(objs)
    return SVMTraining(torch.stack(weights), torch.stack(biases), cache_sizes, objectives)


# --------------------------------------------------------------------------------------------
# Step 4: bounding-box regression


class RegressionPairs(NamedTuple):
    """Result of :func:`select_box_regression_pairs`."""

    index: Tensor
    """``[M]`` int64 indices of the selected proposals."""
    gt_boxes: Tensor
    """``[M, 4]`` the ground truth each one is regressed onto."""
    labels: Tensor
    """``[M]`` int64 in ``0..K-1``: the class whose regressor learns from the pair."""


def select_box_regression_pairs(
    proposals: Tensor, gt_boxes: Tensor, gt_labels: Tensor, *, fg_iou_thresh: float = 0.6
) -> RegressionPairs:
    """Pair each proposal that is close to a ground truth with that ground truth (R-CNN App. C).

    A proposal is kept if its highest IoU with a ground-truth box is *strictly greater* than
    ``fg_iou_thresh`` (the paper: "greater than a threshold (which we set to 0.6)";
    ``rcnn_train_bbox_regressor.m`` keeps ``O > min_overlap``): learning to move a box onto an
    object it barely touches is hopeless. Ties go to the first ground truth.

    Args:
        proposals: ``[P, 4]`` float xyxy.
        gt_boxes: ``[G, 4]`` float xyxy.
        gt_labels: ``[G]`` int64 in ``0..K-1``.
        fg_iou_thresh: the threshold (0.6).

    Returns:
        :class:`RegressionPairs` with ``M <= P`` rows (0 if ``G = 0``).

    Chapter: book/05_rcnn (section "Bounding-box regression")
    """
    check_boxes(proposals, "proposals")
    check_boxes(gt_boxes, "gt_boxes")
    check_labels(gt_labels, "gt_labels", gt_boxes.shape[0])
    if gt_boxes.shape[0] == 0 or proposals.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=proposals.device)
        return RegressionPairs(empty, proposals.new_zeros((0, 4)), empty)
    best_iou, best_gt = box_iou(proposals, gt_boxes.to(proposals.dtype)).max(dim=1)  # [P]
    index = torch.nonzero(best_iou > fg_iou_thresh).flatten()
    return RegressionPairs(
        index, gt_boxes[best_gt[index]].to(proposals.dtype), gt_labels[best_gt[index]]
    )


class BoxRegressor(NamedTuple):
    """A linear map from features to R-CNN deltas: ``d = features @ weight + bias``."""

    weight: Tensor
    """``[D, 4]``"""
    bias: Tensor
    """``[4]``"""


def fit_box_regressor(
    features: Tensor, proposals: Tensor, gt_boxes: Tensor, ridge_penalty: float = 1000.0
) -> BoxRegressor:
    """Closed-form ridge regression from features to the R-CNN box targets (Appendix C).

    The targets are ``t = (t_x, t_y, t_w, t_h)`` of :func:`coursepkg.ops.box_coding.encode_boxes`::

        t_x = (g_x - p_x) / p_w    t_y = (g_y - p_y) / p_h    t_w = log(g_w / p_w)    t_h = log(g_h / p_h)

    and for each of the four, ``w_* = argmin_w sum_i (t*_i - w^T phi(P_i))^2 + ridge_penalty ||w||^2``.
    With centred features ``X`` and centred targets ``T`` the minimiser is
    ``W = (X^T X + ridge_penalty I)^-1 X^T T`` and the (unpenalised) bias is ``mean(t) - mean(phi) W``.
    The released code instead appends a constant feature and penalises it with the rest (after
    centring and whitening the targets), which changes the result very little. Solved in float64.

    Args:
        features: ``[N, D]`` float features of the proposals (pool5 in the paper, scaled).
        proposals: ``[N, 4]`` float xyxy, the boxes the features describe.
        gt_boxes: ``[N, 4]`` float xyxy, each proposal's ground truth (positive width and height).
        ridge_penalty: the ridge penalty λ (1000 in the paper, for features of mean norm 20).

    Returns:
        :class:`BoxRegressor` in the dtype of ``features``; all zeros (the identity: every box
        stays where it is) for ``N = 0``.

    Raises:
        TypeError, ValueError: for bad shapes or boxes, mismatched lengths, ``ridge_penalty < 0`` or a
            ground truth with zero width or height (``log 0``).

    Chapter: book/05_rcnn (section "Bounding-box regression")
    """
    _check_features(features, "features")
    check_boxes(proposals, "proposals")
    check_boxes(gt_boxes, "gt_boxes")
    num, dim = features.shape
    if proposals.shape[0] != num or gt_boxes.shape[0] != num:
        raise ValueError(
            f"features, proposals and gt_boxes must have the same length, got {num}, "
            f"{proposals.shape[0]} and {gt_boxes.shape[0]}"
        )
    ridge_penalty = check_number(ridge_penalty, "ridge_penalty", low=0.0)
    check_positive_size(gt_boxes, "gt_boxes")  # t_w = log(g_w / p_w)
    if num == 0:
        return BoxRegressor(features.new_zeros((dim, 4)), features.new_zeros(4))
    x = features.double()
    t = encode_boxes(gt_boxes.double(), proposals.double())  # [N, 4]
    x_mean, t_mean = x.mean(dim=0), t.mean(dim=0)  # [D], [4]
    xc, tc = x - x_mean, t - t_mean
    gram = xc.T @ xc + ridge_penalty * torch.eye(dim, dtype=x.dtype, device=x.device)  # [D, D]
    if ridge_penalty > 0:  # positive definite: a direct solve
        weight = torch.linalg.solve(gram, xc.T @ tc)  # [D, 4]
    else:  # plain least squares, possibly rank-deficient
        weight = torch.linalg.lstsq(gram, xc.T @ tc).solution
    bias = t_mean - x_mean @ weight  # [4]
    return BoxRegressor(weight.to(features.dtype), bias.to(features.dtype))


def apply_box_regressor(regressor: BoxRegressor, features: Tensor, proposals: Tensor) -> Tensor:
    """Move proposals by the regressor's predicted deltas (R-CNN Appendix C)::

        ĝ_x = p_w d_x + p_x    ĝ_y = p_h d_y + p_y    ĝ_w = p_w exp(d_w)    ĝ_h = p_h exp(d_h)

    (:func:`coursepkg.ops.box_coding.decode_boxes`, which also caps ``d_w, d_h`` at ``log(1000/16)``).

    Args:
        regressor: from :func:`fit_box_regressor`.
        features: ``[N, D]`` features of the proposals, scaled as in training.
        proposals: ``[N, 4]`` float xyxy.

    Returns:
        ``[N, 4]`` refined boxes, dtype of ``features``.

    Chapter: book/05_rcnn (section "Bounding-box regression")
    """
    _check_features(features, "features")
    check_boxes(proposals, "proposals")
    if features.shape[1] != regressor.weight.shape[0] or proposals.shape[0] != features.shape[0]:
        raise ValueError(
            f"features must be [{proposals.shape[0]}, {regressor.weight.shape[0]}], "
            f"got {list(features.shape)}"
        )
    deltas = features @ regressor.weight + regressor.bias  # [N, 4]
    return decode_boxes(deltas, proposals)


# --------------------------------------------------------------------------------------------
# Putting it together


@dataclass
class RCNN:
    """A trained R-CNN: the CNN, one SVM and one box regressor per class, and feature scales."""

    net: RegionFeatureNet
    svm_weight: Tensor  # [K, D] on fc7 * fc7_scale
    svm_bias: Tensor  # [K]
    regressors: list[BoxRegressor]  # K regressors on pool5 * pool5_scale
    fc7_scale: float  # feature_scale of the training fc7 features
    pool5_scale: float  # feature_scale of the training pool5 features
    config: RCNNConfig


@contextmanager
def _timed(stage_seconds: dict[str, float] | None, stage: str):
    start = time.perf_counter()
    yield
    if stage_seconds is not None:
        stage_seconds[stage] = stage_seconds.get(stage, 0.0) + time.perf_counter() - start


@torch.no_grad()
def rcnn_detect(
    model: RCNN,
    image: Tensor,
    proposals: Tensor,
    *,
    stage_seconds: dict[str, float] | None = None,
) -> dict[str, Tensor]:
    """R-CNN at test time for one image (§2.2): warp, features, SVM scores, box regression, NMS.

    Every proposal is scored by every class's SVM. Per class, the ``config.pre_nms_top_n`` (100)
    best-scoring proposals are kept (``rcnn_test.m``), moved by that class's regressor and clipped
    to the image; then greedy NMS runs per class at ``config.nms_thresh`` (0.3) and the best
    ``config.detections_per_img`` boxes are returned. Scores are SVM margins (any real number):
    only their order matters for mAP.

    Args:
        model: a trained :class:`RCNN` (its net in eval mode).
        image: ``[3, H, W]`` float image in ``[0, 1]``, on the net's device.
        proposals: ``[R, 4]`` float xyxy, e.g. from selective search.
        stage_seconds: if given, the seconds spent in "warp + CNN", "SVM", "box regression" and
            "NMS" are added to it (for the chapter's cost table).

    Returns:
        ``{"boxes": [N, 4], "scores": [N], "labels": [N] int64 in 0..K-1}``, scores decreasing
        (ties: lower class, then earlier proposal first).

    Chapter: book/05_rcnn (section "Detecting with R-CNN, and its mAP")
    """
    _check_image(image)
    check_boxes(proposals, "proposals")
    config, num_classes = model.config, model.svm_weight.shape[0]
    proposals = proposals.to(image.dtype)
    with _timed(stage_seconds, "warp + CNN"):
        features = extract_features(
            model.net, image, proposals, context_padding=config.context_padding
        )
    with _timed(stage_seconds, "SVM"):
        scores = (features.fc7 * model.fc7_scale) @ model.svm_weight.T + model.svm_bias  # [R, K]
        top = min(config.pre_nms_top_n, proposals.shape[0])
        order = torch.sort(scores, dim=0, descending=True, stable=True).indices[:top]  # [n, K]
        scores = scores.gather(0, order).T.reshape(-1)  # [K * n], class-major
    with _timed(stage_seconds, "box regression"):
        pool5 = features.pool5 * model.pool5_scale
        boxes = torch.cat(
            [
                apply_box_regressor(reg, pool5[order[:, k]], proposals[order[:, k]])
                for k, reg in enumerate(model.regressors)
            ]
        )  # [K * n, 4]
        boxes = clip_boxes_to_image(boxes, image.shape[-2:])
    with _timed(stage_seconds, "NMS"):
        labels = torch.arange(num_classes, device=image.device).repeat_interleave(top)  # [K * n]
        keep = batched_nms(boxes, scores, labels, config.nms_thresh)[
            : config.detections_per_img
        ]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
