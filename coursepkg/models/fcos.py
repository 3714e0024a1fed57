"""FCOS: a one-stage detector without anchors, predicting boxes from points (Tian et al., 2019).

Every location of every pyramid level is a *point* in the image; FCOS trains each point to say
which class it belongs to and how far it is from the four sides of its object:

1. **points** (:func:`coursepkg.models.anchors.multilevel_points`): location ``(x, y)`` of a map of
   stride ``s`` sits at ``(floor(s / 2) + x s, floor(s / 2) + y s)`` (``offset=0.5``): location
   (23, 30) of stride 8 is (188, 244);
2. **targets** (:func:`fcos_targets`, §3.1-3.2): a point is positive for a box when it lies
   strictly inside it (optionally also within ``radius * s`` of its centre: *centre sampling*)
   and the largest of its distances ``l*, t*, r*, b*`` falls in its level's range ``[m_{i-1},
   m_i]`` (m = 0, 64, 128, 256, 512, ∞ on P3..P7); a point positive for several boxes takes the
   one of smallest area;
3. **centerness** (:func:`centerness_targets`, Eq. (3)): ``sqrt(min(l, r) / max(l, r) * min(t, b)
   / max(t, b))``, 1 at the centre and 0 on an edge, learnt with BCE and multiplied into the class
   score at test time;
4. **head** (:class:`FCOSHead`): a classification tower (``K`` sigmoid logits per point) and a box
   tower shared by the distances and the centerness; distances are ``exp(s_i x)`` with one
   learnable scale ``s_i`` per level (the paper), or ``ReLU(s_i x) * stride`` (the later
   "normalised" version, and torchvision's with ``s_i = 1``);
5. **loss** (Eq. (2)): focal loss over all (point, class) pairs plus an IoU loss (``-ln IoU``, or
   GIoU) over the positives plus the centerness BCE over the positives, each divided by the
   number of positives ``N_pos`` of the batch;
6. **inference** (:func:`coursepkg.models.dense_decoding.decode_dense_detections`): score
   ``sqrt(p * centerness)``, per level the best pairs above ``score_thresh``, boxes from the
   points and distances, class-wise NMS.

Inclusive and exclusive rules (tested): a point *on* a box edge is not inside it (``min(l*, t*,
r*, b*) > 0``, the paper's code and torchvision); centre sampling is strict (``|x - c_x| < r s``);
a largest distance exactly on a level bound ``m_i`` belongs to both neighbouring levels with
``closed_ranges=True`` (the paper's ``m_{i-1} <= max <= m_i`` and its code) and to neither with
``closed_ranges=False`` (torchvision's ``lo < max < hi``). Ties between boxes of equal area go to
the box listed first.

Shapes (B images, G boxes per image, K classes, N = sum_l H_l W_l points)::

    points_per_level                L x [N_l, 2]   (x, y) pixels
    fcos_targets(...).labels        [B, N]     int64 in 0..K-1, -1 for background
    fcos_targets(...).box_targets   [B, N, 4]  (l*, t*, r*, b*) pixels, 0 for background
    centerness_targets(distances)   [..., 4] -> [...]
    FCOS(...)(images).cls_logits    L x [B, N_l, K]

Chapter: book/13_fcos.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coursepkg.models.anchors import multilevel_points
from coursepkg.models.backbones import MultiScaleBackbone
from coursepkg.models.dense_decoding import decode_dense_detections
from coursepkg.models.dense_heads import ClassificationHead, HeadTower
from coursepkg.models.detector import Detector, check_images, check_targets
from coursepkg.models.fpn import FPN
from coursepkg.ops.focal import _sigmoid_focal_loss
from coursepkg.ops.iou_losses import DEFAULT_EPS, _matched_giou, _overlap
from coursepkg.ops.labels import _one_hot_labels
from coursepkg.ops.validation import (
    check_boxes,
    check_finite,
    check_int,
    check_labels,
    check_number,
    check_probability,
    check_tensor,
)

__all__ = [
    "PAPER_SIZE_BOUNDS",
    "FCOSConfig",
    "FCOSTargets",
    "FCOSOutputs",
    "FCOSHead",
    "FCOS",
    "fcos_targets",
    "centerness_targets",
    "level_size_ranges",
]

#: m_2..m_7 of FCOS §3.2: level P_i keeps a point when m_{i-1} <= max(l*, t*, r*, b*) <= m_i.
PAPER_SIZE_BOUNDS = (0.0, 64.0, 128.0, 256.0, 512.0, math.inf)

# exp(s_i x) is capped at exp(_MAX_LOG_DISTANCE) = 10^4 pixels, far beyond any image of the course:
# an untrained head must not overflow to inf (the paper's code has no cap).
_MAX_LOG_DISTANCE = math.log(1e4)


@dataclass(frozen=True)
class FCOSConfig:
    """Every setting of :class:`FCOS`, with where its default comes from.

    "paper" is the ICCV 2019 FCOS (Tian et al., arXiv 1904.01355, main method); "later" its
    arXiv "improvements" rows and the official code's ``fcos_imprv`` configs; "torchvision" is
    ``torchvision.models.detection.FCOS``; "course" a choice for small images on a CPU.
    :meth:`torchvision_like` returns the config whose targets and losses equal torchvision's.
    """

    num_classes: int = 5  # K, sigmoid classifiers (ShapesDataset's default five classes)
    # --- backbone, pyramid, head ----------------------------------------------------------------
    backbone_channels: tuple[int, int, int] = (32, 64, 128)  # course: MultiScaleBackbone C3..C5
    fpn_channels: int = 256  # paper
    levels: tuple[int, ...] = (3, 4, 5, 6, 7)  # paper: P3..P7 (P6 from P5); (3, 4, 5) for no P6, P7
    num_convs: int = 4  # paper: four 3x3 convs per tower
    head_norm: str | None = "group"  # paper: GroupNorm in the heads
    prior: float = 0.01  # paper (as RetinaNet): initial foreground probability
    # --- targets --------------------------------------------------------------------------------
    size_bounds: tuple[float, ...] = PAPER_SIZE_BOUNDS  # paper §3.2: m_{i-1}, m_i for every level
    closed_ranges: bool = True  # paper and its code: lo <= max <= hi (torchvision: lo < max < hi)
    center_sampling_radius: float = 0.0  # paper: 0 = every point inside a box (later, tv: 1.5)
    point_offset: float = 0.5  # paper: floor(s / 2) + x s (torchvision: 0, points at x s)
    # --- regression and losses ------------------------------------------------------------------
    regression: str = "exp"  # paper: exp(s_i x); "relu_stride": ReLU(s_i x) * s (later, tv)
    box_loss: str = "iou"  # paper: -ln IoU (UnitBox); "giou" (later, torchvision)
    centerness: bool = True  # paper: the centerness branch (False: the ablation without it)
    focal_alpha: float = 0.25  # paper (RetinaNet's)
    focal_gamma: float = 2.0  # paper (RetinaNet's)
    # --- inference ------------------------------------------------------------------------------
    score_thresh: float = 0.05  # paper
    nms_thresh: float = 0.6  # paper (Table 3: FCOS uses NMS 0.6; torchvision too)
    topk_candidates: int = 1000  # paper (RetinaNet's inference), torchvision
    detections_per_img: int = 100  # paper, torchvision

    @property
    def strides(self) -> tuple[int, ...]:
        """The stride ``2^l`` of every level."""
        return tuple(2**level for level in self.levels)

    @classmethod
    def torchvision_like(cls, **changes: object) -> FCOSConfig:
        """The settings under which :class:`FCOS` computes torchvision's FCOS targets and losses.

        torchvision's level ranges are ``(4 s, 8 s)`` open on both sides (``0`` below P3, ``inf``
        above the last level), its points sit at ``x s`` (``offset=0``), centre sampling has
        radius 1.5, distances are ``ReLU(x) * s`` and the box loss is GIoU.
        """
        levels = changes.get("levels", cls.levels)
        strides = [2**level for level in levels]
        bounds = (0.0, *(8.0 * s for s in strides[:-1]), math.inf)
        settings = {
            "size_bounds": bounds, "closed_ranges": False, "center_sampling_radius": 1.5,
            "point_offset": 0.0, "regression": "relu_stride", "box_loss": "giou",
            "score_thresh": 0.2,
        }
        settings.update(changes)
        return cls(**settings)

    def __post_init__(self) -> None:
        check_int(self.num_classes, "num_classes", low=1)
        if tuple(self.levels) not in ((3, 4, 5), (3, 4, 5, 6, 7)):
            raise ValueError(f"levels must be (3, 4, 5) or (3, 4, 5, 6, 7), got {self.levels}")
        _check_size_bounds(self.size_bounds, len(self.levels))
        check_int(self.fpn_channels, "fpn_channels", low=1)
        check_number(self.center_sampling_radius, "center_sampling_radius", low=0.0)
        check_number(self.point_offset, "point_offset", low=0.0, high=1.0)
        if self.regression not in ("exp", "relu_stride"):
            raise ValueError(f"regression must be 'exp' or 'relu_stride', got {self.regression!r}")
        if self.box_loss not in ("iou", "giou"):
            raise ValueError(f"box_loss must be 'iou' or 'giou', got {self.box_loss!r}")
        check_number(self.focal_alpha, "focal_alpha", high=1.0)
        check_number(self.focal_gamma, "focal_gamma", low=0.0)
        check_probability(self.score_thresh, "score_thresh")
        check_probability(self.nms_thresh, "nms_thresh")
        check_int(self.topk_candidates, "topk_candidates", low=1)
        check_int(self.detections_per_img, "detections_per_img", low=0)


def _check_size_bounds(size_bounds: Sequence[float], num_levels: int) -> tuple[float, ...]:
    """``L + 1`` non-decreasing bounds ``m``, starting at 0 or above, the last may be inf."""
    if not isinstance(size_bounds, Sequence) or len(size_bounds) != num_levels + 1:
        raise ValueError(
            f"size_bounds must have one more value than there are levels ({num_levels + 1}), "
            f"got {size_bounds!r}"
        )
    # every bound finite except possibly the last (the open top of the coarsest level)
    bounds = tuple(
        check_number(m, f"size_bounds[{i}]", low=0.0) if i < num_levels or m != math.inf else m
        for i, m in enumerate(size_bounds)
    )
    if any(b < a for a, b in zip(bounds, bounds[1:], strict=False)):
        raise ValueError(f"size_bounds must be non-decreasing, got {size_bounds!r}")
    return bounds


def level_size_ranges(size_bounds: Sequence[float], num_levels: int) -> list[tuple[float, float]]:
    """The ``(m_{i-1}, m_i)`` range of every level: ``(0, 64), (64, 128), ..., (512, inf)``.

    Args:
        size_bounds: the ``L + 1`` bounds ``m`` (FCOS §3.2: 0, 64, 128, 256, 512, ∞).
        num_levels: ``L``.

    Returns:
        ``L`` pairs ``(low, high)``.

    Raises:
        ValueError: if there are not ``L + 1`` bounds, or they decrease or are negative.

    Chapter: book/13_fcos (section "Which level").
    """
    bounds = _check_size_bounds(size_bounds, check_int(num_levels, "num_levels", low=1))
    return list(zip(bounds[:-1], bounds[1:], strict=True))


# ------------------------------------------------------------------------------------ targets


class FCOSTargets(NamedTuple):
    """What every point of every image should predict (one row per point, levels concatenated).

    Attributes:
        matched_idxs: ``[B, N]`` int64, the index of the point's box in its image, -1 if none.
        labels: ``[B, N]`` int64 class in ``0..K-1``, -1 for background.
        matched_boxes: ``[B, N, 4]`` the matched box (xyxy), 0 for background.
        box_targets: ``[B, N, 4]`` ``(l*, t*, r*, b*)`` in pixels, 0 for background.
        centerness: ``[B, N]`` Eq. (3) of the box targets, 0 for background.
    """

    matched_idxs: Tensor
    labels: Tensor
    matched_boxes: Tensor
    box_targets: Tensor
    centerness: Tensor


def centerness_targets(distances: Tensor) -> Tensor:
    """Center-ness of points from their distances to the box sides (FCOS, Eq. (3)).

    ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))``: 1 at the centre of the box, falling
    to 0 on its edges. A degenerate ratio ``0 / 0`` (a zero-width or zero-height box) counts as 0.

    Args:
        distances: ``[..., 4]`` float, ``(l, t, r, b)`` >= 0 in any unit (the ratio is scale-free).

    Returns:
        ``[...]`` values in ``[0, 1]``.

    Raises:
        TypeError: if ``distances`` is not a floating tensor.
        ValueError: if its last dimension is not 4, or it has a negative or non-finite value.

    Chapter: book/13_fcos (section "Centerness").
    """
    check_tensor(distances, "distances", dtype="float")
    if distances.dim() == 0 or distances.shape[-1] != 4:
        raise ValueError(f"distances must be [..., 4], got {list(distances.shape)}")
    check_finite(distances, "distances")
    if distances.numel() and bool((distances < 0).any()):
        raise ValueError(
            f"distances must be >= 0 (a point inside its box), got {distances.min().item()}"
        )
    return _centerness(distances)


def _centerness(distances: Tensor) -> Tensor:
    left_right, top_bottom = distances[..., 0::2], distances[..., 1::2]  # [..., 2] each
    tiny = torch.finfo(distances.dtype).tiny  # 0 / tiny = 0 for a degenerate box
    ratio_x = left_right.min(dim=-1).values / left_right.max(dim=-1).values.clamp(min=tiny)
    ratio_y = top_bottom.min(dim=-1).values / top_bottom.max(dim=-1).values.clamp(min=tiny)
    return torch.sqrt(ratio_x * ratio_y)


def _point_levels(
    points_per_level: Sequence[Tensor], strides: Sequence[float], size_bounds: Sequence[float]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Points ``[N, 2]`` and, per point, its stride, lower and upper size bound ``[N]`` each."""
    points = torch.cat(list(points_per_level))  # [N, 2]
    counts = [p.shape[0] for p in points_per_level]
    per_level = torch.tensor(
        [[s, lo, hi] for s, lo, hi in zip(strides, size_bounds[:-1], size_bounds[1:], strict=True)],
        dtype=points.dtype,
        device=points.device,
    )  # [L, 3]
    stride, low, high = per_level.repeat_interleave(
        torch.tensor(counts, device=points.device), dim=0, output_size=points.shape[0]
    ).unbind(dim=1)  # [N] each (output_size: the counts are not read back from the device)
    return points, stride, low, high


def _fcos_targets(
    points: Tensor,
    stride: Tensor,
    low: Tensor,
    high: Tensor,
    boxes: Tensor,
    labels: Tensor,
    valid: Tensor,
    center_sampling_radius: float,
    closed_ranges: bool,
) -> FCOSTargets:
    """The core of :func:`fcos_targets`, on padded boxes ``[B, G, 4]``, labels and ``valid`` ``[B, G]``.

    Every (image, point, box) triple at once, in ``[B, N, G]`` tensors: no loop over points,
    boxes or images.
    """
    x, y = points[None, :, 0, None], points[None, :, 1, None]  # [1, N, 1] each
    x1, y1, x2, y2 = (c[:, None, :] for c in boxes.unbind(dim=-1))  # [B, 1, G] each
    left, top, right, bottom = x - x1, y - y1, x2 - x, y2 - y  # Eq. (1), [B, N, G] each
    # Inside the box: strictly, so a point on an edge (a zero distance) is not a positive.
    match = torch.minimum(torch.minimum(left, top), torch.minimum(right, bottom)) > 0
    if center_sampling_radius > 0:  # later FCOS: only points near the centre, strictly
        reach = (center_sampling_radius * stride)[None, :, None]  # [1, N, 1]
        match &= ((x - (x1 + x2) / 2).abs() < reach) & ((y - (y1 + y2) / 2).abs() < reach)
    # §3.2: the level whose range holds the largest distance.
    largest = torch.maximum(torch.maximum(left, top), torch.maximum(right, bottom))
    low, high = low[None, :, None], high[None, :, None]  # [1, N, 1]
    if closed_ranges:
        match &= (largest >= low) & (largest <= high)
    else:
        match &= (largest > low) & (largest < high)
    match &= valid[:, None, :]
    # §3.1: among the boxes still matched, the one of smallest area (first on ties).
    area = ((x2 - x1) * (y2 - y1)).expand_as(match)  # [B, N, G]
    cost = torch.where(match, area, torch.full_like(area, math.inf))
    if cost.shape[-1] == 0:  # no boxes in any image
        cost = cost.new_full((*cost.shape[:2], 1), math.inf)
    smallest, index = cost.min(dim=-1)  # [B, N] each
    foreground = smallest < math.inf
    matched_idxs = torch.where(foreground, index, torch.full_like(index, -1))

    if boxes.shape[1] == 0:
        matched = boxes.new_zeros((*index.shape, 4))
        classes = torch.full_like(index, -1)
    else:  # background rows gather box 0, then are zeroed
        matched = torch.gather(boxes, 1, index[..., None].expand(-1, -1, 4))  # [B, N, 4]
        classes = torch.gather(labels, 1, index)  # [B, N]
    fg = foreground[..., None]
    matched = torch.where(fg, matched, torch.zeros_like(matched))
    distances = torch.cat((points[None] - matched[..., :2], matched[..., 2:] - points[None]), -1)
    distances = torch.where(fg, distances, torch.zeros_like(distances))  # [B, N, 4]
    return FCOSTargets(
        matched_idxs,
        torch.where(foreground, classes, torch.full_like(classes, -1)),
        matched,
        distances,
        _centerness(distances),
    )


def _pad_boxes(
    boxes: Sequence[Tensor], labels: Sequence[Tensor], like: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """B lists of boxes ``[G_i, 4]`` and labels -> ``[B, G, 4]``, ``[B, G]``, ``valid [B, G]``."""
    batch, most = len(boxes), max((b.shape[0] for b in boxes), default=0)
    padded = like.new_zeros((batch, most, 4))
    classes = torch.full((batch, most), -1, dtype=torch.int64, device=like.device)
    valid = torch.zeros((batch, most), dtype=torch.bool, device=like.device)
    for i, (b, c) in enumerate(zip(boxes, labels, strict=True)):
        padded[i, : b.shape[0]] = b.to(like.dtype)
        classes[i, : b.shape[0]] = c
        valid[i, : b.shape[0]] = True
    return padded, classes, valid


def fcos_targets(
    points_per_level: Sequence[Tensor],
    strides: Sequence[float],
    boxes: Sequence[Tensor],
    labels: Sequence[Tensor],
    size_bounds: Sequence[float] = PAPER_SIZE_BOUNDS,
    *,
    center_sampling_radius: float = 0.0,
    closed_ranges: bool = True,
) -> FCOSTargets:
    """FCOS's classification, regression and centerness targets for every point (§3.1-3.2, Eq. (3)).

    A point ``(x, y)`` of level ``i`` is positive for box ``(x0, y0, x1, y1)`` when

    * it lies strictly inside the box: ``min(l*, t*, r*, b*) > 0`` with ``l* = x - x0``,
      ``t* = y - y0``, ``r* = x1 - x``, ``b* = y1 - y`` (Eq. (1));
    * with ``center_sampling_radius = r > 0``, also ``|x - c_x| < r s_i`` and ``|y - c_y| < r s_i``
      (the later FCOS and torchvision, r = 1.5);
    * ``m_{i-1} <= max(l*, t*, r*, b*) <= m_i`` (``closed_ranges=True``, the paper) or with strict
      inequalities (``False``, torchvision).

    A point positive for several boxes takes the one of smallest area (ties: the first listed);
    a point positive for none is background. Images without boxes give background everywhere.

    Args:
        points_per_level: ``L`` tensors ``[N_l, 2]``, ``(x, y)`` pixels, finest level first.
        strides: ``L`` strides ``s_i`` (used by centre sampling).
        boxes: ``B`` tensors ``[G_i, 4]`` xyxy pixels, one per image (``G_i = 0`` allowed).
        labels: ``B`` int64 tensors ``[G_i]``, classes ``0..K-1``.
        size_bounds: the ``L + 1`` bounds ``m`` of the level ranges.
        center_sampling_radius: ``r`` >= 0 in strides; 0 turns centre sampling off.
        closed_ranges: whether a largest distance equal to a bound is inside the range.

    Returns:
        :class:`FCOSTargets` with ``[B, N, ...]`` fields, ``N = sum_l N_l``, levels in order.

    Raises:
        TypeError: if an argument is not a sequence of tensors of the right dtype.
        ValueError: on mismatched lengths (naming the argument), bad box rows, NaN or inf,
            negative labels, or bad ``size_bounds`` or radius.

    Chapter: book/13_fcos (sections "Targets of one point", "Which level").
    """
    for name, value in (("points_per_level", points_per_level), ("boxes", boxes), ("labels", labels)):
        if isinstance(value, Tensor) or not isinstance(value, Sequence):
            raise TypeError(f"{name} must be a list of tensors, got {type(value).__name__}")
    if not points_per_level:
        raise ValueError("points_per_level must have at least one level, got none")
    if not isinstance(strides, Sequence) or len(strides) != len(points_per_level):
        raise ValueError(
            f"strides must have one value per level ({len(points_per_level)}), got {strides!r}"
        )
    strides = [check_number(s, f"strides[{i}]", low=0.0, low_open=True) for i, s in enumerate(strides)]
    bounds = _check_size_bounds(size_bounds, len(points_per_level))
    radius = check_number(center_sampling_radius, "center_sampling_radius", low=0.0)
    if not isinstance(closed_ranges, bool):
        raise TypeError(f"closed_ranges must be a bool, got {closed_ranges!r}")
    for i, points in enumerate(points_per_level):
        check_tensor(points, f"points_per_level[{i}]", shape=("N", 2), dtype="float")
        check_finite(points, f"points_per_level[{i}]")
    if len(labels) != len(boxes):
        raise ValueError(f"labels must have one tensor per image ({len(boxes)}), got {len(labels)}")
    for i, (b, c) in enumerate(zip(boxes, labels, strict=True)):
        check_boxes(b, f"boxes[{i}]")
        check_labels(c, f"labels[{i}]", b.shape[0])
    points, stride, low, high = _point_levels(points_per_level, strides, bounds)
    padded, classes, valid = _pad_boxes(boxes, labels, points)
    return _fcos_targets(points, stride, low, high, padded, classes, valid, radius, closed_ranges)


# --------------------------------------------------------------------------------------- model


class FCOSHead(nn.Module):
    """FCOS's head, shared by every level: class logits, distances and centerness per point.

    A classification tower and predictor (:class:`~coursepkg.models.dense_heads.ClassificationHead`,
    ``K`` logits, prior bias) and a box tower feeding two 3 × 3 predictors: 4 distance values and
    1 centerness logit ("ctr. on reg.", the later FCOS and torchvision; the paper's first version
    put centerness on the classification tower). The distance values are multiplied by the
    learnable scale ``s_i`` of their level (initialised to 1); :class:`FCOS` then applies ``exp``
    or ``ReLU`` and the stride. The layers match torchvision's ``FCOSHead`` one for one, so
    weights copy across (tested).

    Args:
        in_channels: channels ``C`` of every pyramid level.
        num_classes: ``K``.
        num_levels: ``L``, one scale per level.
        num_convs: convolutions per tower (4).
        norm: ``"group"`` (GroupNorm(32), the paper) or None.
        prior: initial foreground probability π of the classifier.

    Shapes:
        ``L x [B, C, H_l, W_l]`` -> three lists: ``[B, N_l, K]`` logits, ``[B, N_l, 4]`` scaled
        distance values, ``[B, N_l]`` centerness logits, ``N_l = H_l W_l``.

    Chapter: book/13_fcos (section "The head and the loss").
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_levels: int,
        num_convs: int = 4,
        norm: str | None = "group",
        prior: float = 0.01,
    ) -> None:
        super().__init__()
        self.classification = ClassificationHead(in_channels, 1, num_classes, prior, num_convs, norm)
        self.box_tower = HeadTower(in_channels, in_channels, num_convs, norm)
        self.box_regression = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.centerness = nn.Conv2d(in_channels, 1, 3, padding=1)
        for conv in (self.box_regression, self.centerness):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        self.scales = nn.Parameter(torch.ones(check_int(num_levels, "num_levels", low=1)))

    def forward(
        self, features: Sequence[Tensor]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Per level: logits ``[B, N_l, K]``, ``s_i x`` ``[B, N_l, 4]``, centerness ``[B, N_l]``."""
        if len(features) != self.scales.shape[0]:
            raise ValueError(f"features must have {self.scales.shape[0]} levels, got {len(features)}")
        cls_logits = self.classification.forward_levels(features)  # L x [B, N_l, K]
        regression, centerness = [], []
        for level, x in enumerate(features):
            tower = self.box_tower(x)  # [B, C, H, W]
            values = self.box_regression(tower) * self.scales[level]  # [B, 4, H, W]
            regression.append(values.flatten(2).transpose(1, 2))  # [B, H * W, 4]
            centerness.append(self.centerness(tower).flatten(1))  # [B, H * W]
        return cls_logits, regression, centerness


class FCOSOutputs(NamedTuple):
    """The raw outputs of :class:`FCOS` for a batch, one entry per level (finest first).

    Attributes:
        cls_logits: ``L x [B, N_l, K]`` class logits.
        distances: ``L x [B, N_l, 4]`` predicted ``(l, t, r, b)`` in pixels, >= 0.
        centerness: ``L x [B, N_l]`` centerness logits.
        points: ``L x [N_l, 2]`` the points ``(x, y)`` in pixels.
    """

    cls_logits: list[Tensor]
    distances: list[Tensor]
    centerness: list[Tensor]
    points: list[Tensor]


class FCOS(Detector):
    """FCOS (Tian et al., 2019) with the Detector contract: ``losses`` and ``detect``.

    ``losses`` returns ``"classification"`` (focal loss), ``"bbox_regression"`` (``-ln IoU`` or
    GIoU) and, with centerness on, ``"bbox_ctrness"`` (BCE), each summed and divided by the number
    of positive points of the batch (Eq. (2), λ = 1; torchvision's names and normalisation).
    ``detect`` scores each (point, class) by ``sqrt(p * o)`` (``p`` without centerness), keeps the
    ``topk_candidates`` best above ``score_thresh`` per level, decodes and clips their boxes and
    runs class-wise NMS.

    Differences from the paper's first version, all in :class:`FCOSConfig`: the centerness branch
    sits on the box tower; the score is ``sqrt(p * o)`` (the paper: ``p * o``, same ranking) and
    the score threshold applies to it.

    Args:
        config: every setting; the defaults are the paper's (P3..P7, ``exp(s_i x)``, ``-ln IoU``,
            no centre sampling).
        backbone: a module with the dense-detector contract (``strides``, ``out_channels``, C3..C5);
            :class:`~coursepkg.models.backbones.MultiScaleBackbone` if None.

    Chapter: book/13_fcos.
    """

    def __init__(self, config: FCOSConfig | None = None, backbone: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config = config or FCOSConfig()
        self.backbone = backbone or MultiScaleBackbone(config.backbone_channels)
        extra = "p6p7" if len(config.levels) == 5 else None
        self.fpn = FPN(self.backbone.out_channels, config.fpn_channels, extra, p6_input="p5")
        self.head = FCOSHead(
            config.fpn_channels, config.num_classes, len(config.levels), config.num_convs,
            config.head_norm, config.prior,
        )
        self._points: dict[tuple, list[Tensor]] = {}

    def points(self, feature_sizes: Sequence[Sequence[int]], like: Tensor) -> list[Tensor]:
        """The points of every level, ``L x [H_l W_l, 2]``, on ``like``'s device (cached)."""
        key = (tuple(tuple(s) for s in feature_sizes), like.device, like.dtype)
        if key not in self._points:
            self._points[key] = multilevel_points(
                feature_sizes, self.config.strides, self.config.point_offset,
                dtype=like.dtype, device=like.device,
            )
        return self._points[key]

    def forward(self, images: Tensor) -> FCOSOutputs:
        """Raw per-level outputs, distances already in pixels (``exp`` or ``ReLU * stride``)."""
        check_images(images)
        features = list(self.fpn(self.backbone(images)).values())  # L x [B, C, H_l, W_l]
        cls_logits, regression, centerness = self.head(features)
        if self.config.regression == "exp":  # paper: exp(s_i x), in pixels
            distances = [torch.exp(v.clamp(max=_MAX_LOG_DISTANCE)) for v in regression]
        else:  # later FCOS: ReLU(s_i x) in strides, times the stride
            distances = [F.relu(v) * s for v, s in zip(regression, self.config.strides, strict=True)]
        points = self.points([f.shape[-2:] for f in features], distances[0])
        return FCOSOutputs(cls_logits, distances, centerness, points)

    def targets(
        self, points: Sequence[Tensor], targets: Sequence[Mapping[str, Tensor]]
    ) -> FCOSTargets:
        """:func:`fcos_targets` with this model's levels and rules, for checked targets."""
        c = self.config
        flat, stride, low, high = _point_levels(points, c.strides, c.size_bounds)
        boxes, classes, valid = _pad_boxes(
            [t["boxes"] for t in targets], [t["labels"] for t in targets], flat
        )
        return _fcos_targets(
            flat, stride, low, high, boxes, classes, valid, c.center_sampling_radius,
            c.closed_ranges,
        )

    def losses(self, images: Tensor, targets: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        """The FCOS losses of one batch (Eq. (2) plus the centerness BCE), each / N_pos.

        Args:
            images: ``[B, 3, H, W]`` float.
            targets: B dicts with ``"boxes"`` ``[G_i, 4]`` and ``"labels"`` ``[G_i]`` in
                ``0..K-1``; ``G_i = 0`` is allowed (only the focal loss of the negatives remains).

        Returns:
            ``{"classification", "bbox_regression"[, "bbox_ctrness"]}``, finite scalars.

        Raises:
            ValueError, TypeError: on malformed images or targets, naming ``targets[i][key]``.
        """
        c = self.config
        check_images(images)
        check_targets(targets, images.shape[0], num_classes=c.num_classes)
        out = self(images)
        with torch.no_grad():
            t = self.targets(out.points, targets)
        logits = torch.cat(out.cls_logits, dim=1).float()  # [B, N, K]
        foreground = t.labels >= 0  # [B, N]
        # Eq. (2): every term is divided by N_pos, the positives of the whole batch (at least 1).
        # Every term is computed on all points and masked, never selected with the boolean mask:
        # a selection's size depends on the data, and reading it costs a host sync on a GPU.
        num_pos = foreground.sum().clamp(min=1).to(logits.dtype)
        one_hot = _one_hot_labels(t.labels, logits.shape[-1], logits.dtype)  # background: zeros
        classification = _sigmoid_focal_loss(
            logits, one_hot, c.focal_alpha, c.focal_gamma, "sum"
        )
        points = torch.cat(out.points)[None]  # [1, N, 2]
        distances = torch.cat(out.distances, dim=1).float()  # [B, N, 4]
        predicted = torch.cat((points - distances[..., :2], points + distances[..., 2:]), dim=-1)
        # Background points compare a unit box with itself: finite values and gradients, masked out.
        unit = predicted.new_tensor([0.0, 0.0, 1.0, 1.0])
        predicted = torch.where(foreground[..., None], predicted, unit)  # [B, N, 4]
        gt_boxes = torch.where(foreground[..., None], t.matched_boxes.to(predicted.dtype), unit)
        if c.box_loss == "giou":
            box = 1 - _matched_giou(predicted, gt_boxes, DEFAULT_EPS)  # [B, N]
        else:  # UnitBox's -ln IoU, IoU clamped at eps (disjoint boxes cost -ln eps, not inf)
            box = -torch.log(_overlap(predicted, gt_boxes, DEFAULT_EPS).iou.clamp(min=DEFAULT_EPS))
        box = torch.where(foreground, box, torch.zeros_like(box)).sum()
        losses = {"classification": classification / num_pos, "bbox_regression": box / num_pos}
        if c.centerness:
            centerness = torch.cat(out.centerness, dim=1).float()  # [B, N]
            bce = F.binary_cross_entropy_with_logits(
                centerness, t.centerness.to(centerness.dtype), reduction="none"
            )
            bce = torch.where(foreground, bce, torch.zeros_like(bce)).sum()
            losses["bbox_ctrness"] = bce / num_pos
        return losses

    def scores(self, out: FCOSOutputs) -> list[Tensor]:
        """Per level ``[B, N_l, K]`` test scores: ``sqrt(p * o)``, or ``p`` without centerness."""
        probabilities = [torch.sigmoid(x) for x in out.cls_logits]
        if not self.config.centerness:
            return probabilities
        return [
            torch.sqrt(p * torch.sigmoid(o)[..., None])
            for p, o in zip(probabilities, out.centerness, strict=True)
        ]

    def detect(self, images: Tensor) -> list[dict[str, Tensor]]:
        """Detections per image: boxes ``[D, 4]``, scores ``[D]`` decreasing, labels in 0..K-1.

        Call in ``eval()`` mode and under ``torch.no_grad()``.
        """
        c = self.config
        out = self(images)
        return decode_dense_detections(
            [s.float() for s in self.scores(out)],
            [d.float() for d in out.distances],
            out.points,
            tuple(images.shape[-2:]),
            decode="point_distances",
            score_thresh=c.score_thresh,
            topk_candidates=c.topk_candidates,
            nms_thresh=c.nms_thresh,
            detections_per_img=c.detections_per_img,
        )
