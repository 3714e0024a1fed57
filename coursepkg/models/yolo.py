"""YOLOv1: one network, one pass, an S × S grid of cells that each predict B boxes and one class.

YOLO (Redmon et al., CVPR 2016, "You Only Look Once") reads detection as a single regression: the
image is cut into an S × S grid, and the network's last layer holds, for every cell, B boxes with
a confidence each and one set of C class probabilities (§2). The cell that contains an object's
*centre* is responsible for that object; among its B predictors, the one whose box currently has
the highest IoU with the object is "responsible" for it (§2.2). The loss (§2.2, Eq. 3) is a sum of
squared errors:

* coordinates of the responsible predictor, weighted by λ_coord = 5 (centre offsets x, y inside the
  cell; square roots of the width and height, so that an error costs more on a small box);
* its confidence, towards the IoU of its box with the object (the released code's ``rescore=1``);
* the confidence of every other predictor, towards 0, weighted by λ_noobj = 0.5 (most cells are
  empty, and their gradients would otherwise swamp the few object cells);
* the C class probabilities of each cell that holds an object centre (one set per cell, not per box).

Conventions (the course's, written once; see :func:`yolo_v1_targets`):

* cell ``(i, j)`` is row ``i``, column ``j``, and covers ``[j W / S, (j + 1) W / S) ×
  [i H / S, (i + 1) H / S)`` of an ``H × W`` image; an object belongs to the cell of its centre
  ``(c_x, c_y)``: ``j = floor(c_x S / W)``, clamped to ``S - 1`` so that a centre on the right or
  bottom border (a zero-width box there) stays on the grid;
* ``x, y`` are the centre's offset inside its cell, in cells: ``x = c_x S / W - j`` in ``[0, 1)``;
  ``w, h`` are the box's width and height relative to the image: ``w = (x_2 - x_1) / W``;
* the B predictors of a cell are channels ``5 b .. 5 b + 4`` = ``(x, y, w, h, confidence)``;
  channels ``5 B ..`` are the C class probabilities (the paper's ``S × S × (B · 5 + C)`` tensor).

Shapes (N images, S × S cells, B boxes per cell, C classes)::

    predictions                      [N, S, S, B * 5 + C]
    yolo_v1_targets(...).boxes       [S, S, 4]    (x, y, w, h) of the cell's object
    yolo_v1_targets(...).labels      [S, S]       class 0..C-1, or -1 for a cell without object
    responsible_predictor(...)       index [M], iou [M]   for M object cells
    yolo_v1_loss(...)                terms [N] per image (reduction="none"), else scalars

Chapter: book/08_yolo.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coursepkg.models.anchors import location_grid
from coursepkg.models.backbones import MultiScaleBackbone
from coursepkg.models.dense_decoding import decode_dense_detections
from coursepkg.models.detector import Detector, check_images, check_targets
from coursepkg.ops.labels import _one_hot_labels
from coursepkg.ops.validation import (
    check_boxes,
    check_finite,
    check_image_size,
    check_int,
    check_labels,
    check_number,
    check_probability,
    check_reduction,
    check_tensor,
)

__all__ = [
    "YOLOv1Config",
    "YOLOv1Targets",
    "YOLOv1Loss",
    "ResponsiblePredictor",
    "GridCells",
    "grid_cells",
    "yolo_v1_targets",
    "responsible_predictor",
    "yolo_v1_loss",
    "YOLOv1",
]


@dataclass(frozen=True)
class YOLOv1Config:
    """Every setting of :class:`YOLOv1`, with where its default comes from.

    "paper" is YOLOv1 (Redmon et al., 2016, §2 and §2.2) and its darknet release
    (``cfg/yolov1.cfg``, ``src/detection_layer.c``); "torchvision" is torchvision's detection
    models' inference defaults; "course" marks a choice for 128 × 128 shapes images and a network
    trained from scratch in minutes on a CPU.
    """

    num_classes: int = 5  # C: ShapesDataset's default five shapes (paper: 20 VOC classes)
    # paper: S = 7 on 448 x 448 images, 64-px cells (448 / 7). course: S = 8 on 128 x 128, 16-px
    # cells = the backbone's stride-16 map, so every cell is one feature location (a 7 x 7 grid on
    # 128 px would need 18.3-px cells that straddle feature locations). 64 cells, near the paper's 49.
    grid_size: int = 8
    boxes_per_cell: int = 2  # paper: B = 2 (the darknet release's yolov1.cfg later used 3)
    lambda_coord: float = 5.0  # paper §2.2 (darknet coord_scale=5)
    lambda_noobj: float = 0.5  # paper §2.2 (darknet noobject_scale=.5)
    # --- network (course: a small backbone trained from scratch; the paper's is 24 conv + 2 FC) --
    backbone_channels: tuple[int, int, int] = (32, 64, 128)  # course: C3, C4, C5 of MultiScaleBackbone
    head_channels: int = 128  # course: one 3 x 3 conv on pooled C3 + C4 + upsampled C5, then 1 x 1
    # --- inference ------------------------------------------------------------------------------
    # darknet's mAP validation of YOLOv1 (yolo.c, validate_yolo) keeps scores above 0.001; the paper's
    # demo shows those above 0.2. torchvision's 0.05 suits one-stage sigmoid scores, not YOLO's
    # product of a class probability and an IoU-valued confidence (an object's ~0.4 x ~0.3 is
    # already under 0.05): on the shapes it cut mAP@0.5 from 0.153 to 0.140.
    score_thresh: float = 0.001
    nms_thresh: float = 0.5  # paper §2.4 mentions NMS; 0.5 as torchvision
    detections_per_img: int = 100  # torchvision
    topk_candidates: int = 1000  # torchvision's one-stage detectors (S*S*B*C = 640 here anyway)

    @property
    def channels_per_cell(self) -> int:
        """``B * 5 + C``: the paper's 30 for B = 2 and C = 20."""
        return self.boxes_per_cell * 5 + self.num_classes

    def __post_init__(self) -> None:
        check_int(self.num_classes, "num_classes", low=1)
        check_int(self.grid_size, "grid_size", low=1)
        check_int(self.boxes_per_cell, "boxes_per_cell", low=1)
        check_number(self.lambda_coord, "lambda_coord", low=0.0)
        check_number(self.lambda_noobj, "lambda_noobj", low=0.0)
        check_int(self.head_channels, "head_channels", low=1)
        if len(self.backbone_channels) != 3 or min(self.backbone_channels) < 1:
            raise ValueError(f"backbone_channels must be 3 positive ints (C3, C4, C5), got {self.backbone_channels}")
        check_probability(self.score_thresh, "score_thresh")
        check_probability(self.nms_thresh, "nms_thresh")
        check_int(self.detections_per_img, "detections_per_img", low=0)
        check_int(self.topk_candidates, "topk_candidates", low=1)


# ------------------------------------------------------------------------------------ targets


class YOLOv1Targets(NamedTuple):
    """The training targets of one image (or a batch, with a leading ``N``), cell by cell.

    Attributes:
        boxes: ``[S, S, 4]`` float ``(x, y, w, h)`` of the object whose centre lies in the cell:
            offsets inside the cell (in cells) and sizes relative to the image; 0 where none.
        labels: ``[S, S]`` int64 class ``0..C-1`` of that object, ``-1`` for a cell without one.
    """

    boxes: Tensor
    labels: Tensor


def _grid_cells(boxes: Tensor, image_size: tuple[int, int], grid_size: int) -> tuple[Tensor, Tensor]:
    """Unchecked core of :func:`grid_cells`: ``(cells [G, 2] (row, col), centres in cells [G, 2] (x, y))``."""
    height, width = image_size
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # [G, 2] (c_x, c_y) in pixels
    in_cells = centre * grid_size / centre.new_tensor([width, height])  # [G, 2] c_x S / W, c_y S / H
    # floor, then clamp: a centre exactly on the right/bottom border (c_x = W) belongs to the last cell.
    col_row = in_cells.floor().long().clamp_(0, grid_size - 1)  # [G, 2] (col, row)
    return col_row.flip(1), in_cells


class GridCells(NamedTuple):
    """Result of :func:`grid_cells`, one row per object.

    Attributes:
        cells: ``[G, 2]`` int64 ``(row, col)`` of the cell that holds the object's centre.
        boxes: ``[G, 4]`` the object as YOLO encodes it there: ``(x, y, w, h)``, the centre's
            offset inside the cell (in cells) and the size relative to the image.
    """

    cells: Tensor
    boxes: Tensor


def grid_cells(boxes: Tensor, image_size: Sequence[int], grid_size: int) -> GridCells:
    """The grid cell ``(row, col)`` that holds each box's centre, and the box in that cell (§2).

    ``col = floor(c_x S / W)`` and ``row = floor(c_y S / H)``, clamped to ``S - 1``: a centre on
    a cell boundary belongs to the cell on its right (below), and a centre on the image's right
    (bottom) border to the last column (row). ``x = c_x S / W - col``, ``w = (x_2 - x_1) / W``.

    Args:
        boxes: ``[G, 4]`` xyxy boxes in pixels.
        image_size: ``(height, width)``.
        grid_size: S.

    Returns:
        :class:`GridCells` ``(cells [G, 2], boxes [G, 4])``.

    Raises:
        ValueError, TypeError: on malformed boxes, image size or grid size.

    Chapter: book/08_yolo (section "The grid").
    """
    check_boxes(boxes)
    size = check_image_size(image_size)
    check_int(grid_size, "grid_size", low=1)
    row_col, in_cells = _grid_cells(boxes, size, grid_size)
    return GridCells(row_col, _cell_boxes(boxes, row_col, in_cells, size))


def _cell_boxes(boxes: Tensor, row_col: Tensor, in_cells: Tensor, image_size: tuple[int, int]) -> Tensor:
    """``[G, 4]`` ``(x, y, w, h)``: offsets of the centres inside their cells, sizes relative to the image."""
    height, width = image_size
    offsets = in_cells - row_col.flip(1).to(in_cells.dtype)  # [G, 2] (x, y) in [0, 1]
    sizes = (boxes[:, 2:] - boxes[:, :2]) / boxes.new_tensor([width, height])  # [G, 2]
    return torch.cat([offsets, sizes], dim=1)


def _yolo_v1_targets(
    boxes: Sequence[Tensor], labels: Sequence[Tensor], image_size: tuple[int, int], grid_size: int
) -> YOLOv1Targets:
    """Unchecked, batched core of :func:`yolo_v1_targets`: ``[N, S, S, 4]`` and ``[N, S, S]``."""
    num_images, cells = len(boxes), grid_size * grid_size
    device, dtype = boxes[0].device, boxes[0].dtype
    all_boxes = torch.cat(list(boxes))  # [G, 4], every object of the batch
    all_labels = torch.cat(list(labels))  # [G]
    image = torch.repeat_interleave(
        torch.arange(num_images, device=device),
        torch.tensor([len(b) for b in boxes], device=device),
        output_size=all_boxes.shape[0],  # known on the host: no read-back of the counts
    )  # [G] which image each object is in
    # One row per cell of the batch, and a scratch row at the end for the objects that get none.
    out_boxes = all_boxes.new_zeros(num_images * cells + 1, 4)
    out_labels = all_labels.new_full((num_images * cells + 1,), -1)
    if all_boxes.shape[0] == 0:
        return YOLOv1Targets(
            out_boxes[:-1].view(num_images, grid_size, grid_size, 4),
            out_labels[:-1].view(num_images, grid_size, grid_size),
        )
    row_col, in_cells = _grid_cells(all_boxes, image_size, grid_size)  # [G, 2], [G, 2]
    flat = image * cells + row_col[:, 0] * grid_size + row_col[:, 1]  # [G] cell of each object
    # A cell holds one object. Several centres in one cell: the largest box keeps it (ties: the
    # first in the input order); the others get no target at all (a limitation of YOLOv1, §2.4).
    area = (all_boxes[:, 2] - all_boxes[:, 0]) * (all_boxes[:, 3] - all_boxes[:, 1])  # [G]
    order = torch.argsort(-area, stable=True)
    rank = torch.empty_like(order).scatter_(0, order, torch.arange(len(order), device=device))
    best_rank = torch.full((num_images * cells,), len(order), dtype=torch.long, device=device)
    best_rank.scatter_reduce_(0, flat, rank, reduce="amin")  # per cell, the best object's rank
    keep = rank == best_rank[flat]  # [G] exactly one object per occupied cell
    cell_boxes = _cell_boxes(all_boxes, row_col, in_cells, image_size)  # [G, 4]
    # The objects that lose their cell write to the scratch row: an index, not a boolean
    # selection, so the number of objects kept is never read back to the host.
    row = torch.where(keep, flat, num_images * cells)  # [G]
    out_boxes[row] = cell_boxes.to(dtype)
    out_labels[row] = all_labels
    return YOLOv1Targets(
        out_boxes[:-1].view(num_images, grid_size, grid_size, 4),
        out_labels[:-1].view(num_images, grid_size, grid_size),
    )


def yolo_v1_targets(
    boxes: Tensor, labels: Tensor, image_size: Sequence[int], grid_size: int
) -> YOLOv1Targets:
    """YOLOv1's per-cell training targets for one image (§2, §2.2).

    The cell that contains an object's centre is responsible for it (:func:`grid_cells`); its
    target is the object's ``(x, y, w, h)`` (centre offset inside the cell, size relative to the
    image) and class. YOLOv1 can represent **one object per cell**: when several centres fall in
    one cell, the largest box (by area; ties: the first in the input) keeps the cell and the others
    are dropped from training (they stay in the evaluation's ground truth, where they become misses).
    A box smaller than a cell is unusual, not invalid: its targets follow the same formulas.

    Args:
        boxes: ``[G, 4]`` float xyxy boxes in pixels (``G = 0`` is allowed).
        labels: ``[G]`` int64 classes ``0..C-1``.
        image_size: ``(height, width)`` of the image.
        grid_size: S.

    Returns:
        :class:`YOLOv1Targets` with ``boxes [S, S, 4]`` and ``labels [S, S]`` (``-1``: no object).

    Raises:
        ValueError, TypeError: on malformed boxes, labels, image size or grid size (the message
            names the argument).

    Chapter: book/08_yolo (section "The grid").
    """
    check_boxes(boxes)
    check_labels(labels, "labels", boxes.shape[0])
    size = check_image_size(image_size)
    check_int(grid_size, "grid_size", low=1)
    batch = _yolo_v1_targets([boxes], [labels], size, grid_size)
    return YOLOv1Targets(batch.boxes[0], batch.labels[0])


# ------------------------------------------------------------------------ responsible predictor


class ResponsiblePredictor(NamedTuple):
    """Result of :func:`responsible_predictor`.

    Attributes:
        index: ``[M]`` int64, the predictor ``b`` in ``0..B-1`` with the highest IoU.
        iou: ``[M]`` its IoU with the ground truth (the confidence target), no gradient.
    """

    index: Tensor
    iou: Tensor


def _iou_cxcywh(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Element-wise IoU of broadcastable ``[..., 4]`` ``(c_x, c_y, w, h)`` boxes (w, h >= 0)."""
    half1, half2 = boxes1[..., 2:] / 2, boxes2[..., 2:] / 2
    low = torch.maximum(boxes1[..., :2] - half1, boxes2[..., :2] - half2)  # [..., 2]
    high = torch.minimum(boxes1[..., :2] + half1, boxes2[..., :2] + half2)  # [..., 2]
    inter = (high - low).clamp(min=0).prod(dim=-1)  # [...]
    union = boxes1[..., 2:].prod(dim=-1) + boxes2[..., 2:].prod(dim=-1) - inter
    return inter / union.clamp(min=torch.finfo(union.dtype).tiny)  # two empty boxes: 0, not NaN


def _responsible_predictor(pred_boxes: Tensor, gt_boxes: Tensor, grid_size: int) -> ResponsiblePredictor:
    """Unchecked core: ``pred_boxes [..., B, 4]`` and ``gt_boxes [..., 4]`` as (x, y, w, h) of one cell."""
    # IoU is unchanged by a translation, so the cell's position drops out: compare the boxes in
    # cell units, centres (x, y) inside the cell and sizes w S, h S.
    scale = pred_boxes.new_tensor([1.0, 1.0, grid_size, grid_size])
    with torch.no_grad():
        iou = _iou_cxcywh(pred_boxes * scale, (gt_boxes * scale).unsqueeze(-2))  # [..., B]
        best = iou.max(dim=-1)  # ties: the lowest index
    return ResponsiblePredictor(best.indices, best.values)


def responsible_predictor(pred_boxes: Tensor, gt_boxes: Tensor, grid_size: int) -> ResponsiblePredictor:
    """Which of a cell's B predictors is responsible for its object: the one of highest IoU (§2.2).

    "YOLO predicts multiple bounding boxes per grid cell. At training time we only want one
    bounding box predictor to be responsible for each object": the predictor whose box has the
    highest *current* IoU with the ground truth. Ties (for example every IoU 0) go to the lowest
    index. The choice is made without gradient; it changes as training moves the boxes, and the
    predictors specialise in sizes and shapes.

    Args:
        pred_boxes: ``[M, B, 4]`` float predicted ``(x, y, w, h)`` of the B predictors of M object
            cells, in YOLO's cell parameterisation (see the module docstring), ``w, h >= 0``.
        gt_boxes: ``[M, 4]`` the object of each cell, same parameterisation.
        grid_size: S (the IoU needs the sizes in cells: ``w S``).

    Returns:
        :class:`ResponsiblePredictor`: ``index [M]`` int64 and ``iou [M]``.

    Raises:
        ValueError, TypeError: on wrong shapes, non-finite values or negative sizes.

    Chapter: book/08_yolo (section "The responsible predictor").
    """
    check_tensor(pred_boxes, "pred_boxes", shape=("M", None, 4), dtype="float")
    check_tensor(gt_boxes, "gt_boxes", shape=(pred_boxes.shape[0], 4), dtype="float")
    check_int(grid_size, "grid_size", low=1)
    for name, value in (("pred_boxes", pred_boxes), ("gt_boxes", gt_boxes)):
        check_finite(value, name)
        if bool((value[..., 2:] < 0).any()):
            raise ValueError(f"{name} must have widths and heights >= 0")
    return _responsible_predictor(pred_boxes, gt_boxes, grid_size)


# ------------------------------------------------------------------------------------- loss


class YOLOv1Loss(NamedTuple):
    """Result of :func:`yolo_v1_loss`, each term with its λ already applied (``total`` is their sum).

    ``[N]`` per image for ``reduction="none"``, scalars otherwise.
    """

    coord: Tensor
    """λ_coord Σ 1^obj_ij [(x - x̂)² + (y - ŷ)²]."""
    size: Tensor
    """λ_coord Σ 1^obj_ij [(√w - √ŵ)² + (√h - √ĥ)²]."""
    obj: Tensor
    """Σ 1^obj_ij (IoU - Ĉ)²: the responsible predictors' confidences towards their IoU."""
    noobj: Tensor
    """λ_noobj Σ 1^noobj_ij Ĉ²: every other predictor's confidence towards 0."""
    cls: Tensor
    """Σ_i 1^obj_i Σ_c (p(c) - p̂(c))²: one class term per object cell."""
    total: Tensor
    """The sum of the five terms (Eq. 3)."""


def _yolo_v1_loss(
    predictions: Tensor,
    target_boxes: Tensor,
    target_labels: Tensor,
    boxes_per_cell: int,
    lambda_coord: float,
    lambda_noobj: float,
) -> YOLOv1Loss:
    """Unchecked core of :func:`yolo_v1_loss`, per image (``[N]`` each term)."""
    n, s = predictions.shape[0], predictions.shape[1]
    num_boxes = boxes_per_cell
    boxes = predictions[..., : 5 * num_boxes].reshape(n, s, s, num_boxes, 5)  # [N, S, S, B, 5]
    probs = predictions[..., 5 * num_boxes :]  # [N, S, S, C]
    has_object = target_labels >= 0  # [N, S, S], 1^obj_i

    # 1^obj_ij: predictor j of an object cell i with the highest IoU (computed on every cell and
    # used only on object cells: no Python loop and no boolean indexing, so no host sync).
    best = _responsible_predictor(boxes[..., :4], target_boxes, s)
    responsible = _one_hot_labels(best.index, num_boxes, torch.bool) & has_object[..., None]  # [N, S, S, B]
    obj = responsible.to(predictions.dtype)
    # [N, S, S, 4]: the responsible predictor's (x, y, w, h, C) of each cell
    chosen = torch.gather(boxes, 3, best.index[..., None, None].expand(n, s, s, 1, 5)).squeeze(3)
    cell_obj = has_object.to(predictions.dtype)  # [N, S, S]

    xy_err = (chosen[..., :2] - target_boxes[..., :2]).pow(2).sum(-1)  # [N, S, S]
    # sqrt: the same error costs more on a small box. The clamp keeps the gradient finite at w = 0.
    root = chosen[..., 2:4].clamp(min=1e-12).sqrt()
    wh_err = (root - target_boxes[..., 2:].clamp(min=0).sqrt()).pow(2).sum(-1)  # [N, S, S]
    confidence = boxes[..., 4]  # [N, S, S, B]
    # rescore=1: the target of the responsible confidence is its IoU (a constant, no gradient)
    obj_err = (chosen[..., 4] - best.iou).pow(2)  # [N, S, S]
    noobj_err = ((1 - obj) * confidence.pow(2)).sum(-1)  # [N, S, S]: every non-responsible predictor
    one_hot = _one_hot_labels(target_labels.clamp(min=0), probs.shape[-1], predictions.dtype)
    cls_err = (probs - one_hot).pow(2).sum(-1)  # [N, S, S]

    def per_image(x: Tensor) -> Tensor:
        return x.flatten(1).sum(1)  # [N]

    coord = lambda_coord * per_image(cell_obj * xy_err)
    size = lambda_coord * per_image(cell_obj * wh_err)
    obj_term = per_image(cell_obj * obj_err)
    noobj = lambda_noobj * per_image(noobj_err)
    cls = per_image(cell_obj * cls_err)
    return YOLOv1Loss(coord, size, obj_term, noobj, cls, coord + size + obj_term + noobj + cls)


def yolo_v1_loss(
    predictions: Tensor,
    target_boxes: Tensor,
    target_labels: Tensor,
    *,
    boxes_per_cell: int = 2,
    lambda_coord: float = 5.0,
    lambda_noobj: float = 0.5,
    reduction: str = "mean",
) -> YOLOv1Loss:
    """The YOLOv1 loss (Redmon et al., 2016, §2.2, Eq. 3), term by term.

    .. math::

        L = λ_{coord} \\sum_{i=0}^{S^2} \\sum_{j=0}^{B} 1^{obj}_{ij} [(x_i - \\hat x_i)^2 + (y_i - \\hat y_i)^2]
          + λ_{coord} \\sum_{i,j} 1^{obj}_{ij} [(\\sqrt{w_i} - \\sqrt{\\hat w_i})^2 + (\\sqrt{h_i} - \\sqrt{\\hat h_i})^2]
          + \\sum_{i,j} 1^{obj}_{ij} (C_i - \\hat C_i)^2 + λ_{noobj} \\sum_{i,j} 1^{noobj}_{ij} (C_i - \\hat C_i)^2
          + \\sum_i 1^{obj}_i \\sum_c (p_i(c) - \\hat p_i(c))^2

    ``1^obj_i``: an object's centre lies in cell i (``target_labels >= 0``). ``1^obj_ij``:
    predictor j of that cell is responsible (:func:`responsible_predictor`, highest IoU).
    ``1^noobj_ij = 1 - 1^obj_ij``: every other predictor, also the non-responsible ones of object
    cells, as in the paper. The confidence target ``C_i`` is the IoU of the responsible box with the
    object (darknet's ``rescore=1``; no gradient flows into it) and 0 elsewhere; ``p_i(c)`` is one-hot.

    Args:
        predictions: ``[N, S, S, B * 5 + C]`` float: per cell B times ``(x, y, w, h, confidence)``,
            then C class probabilities (the activations the network applies: :class:`YOLOv1`
            uses a sigmoid and a softmax). ``w, h >= 0`` (their square roots are taken).
        target_boxes: ``[N, S, S, 4]`` ``(x, y, w, h)`` per cell (:func:`yolo_v1_targets`);
            rows of cells without an object are ignored.
        target_labels: ``[N, S, S]`` int64 class ``0..C-1``, or ``-1`` for a cell without object.
        boxes_per_cell: B.
        lambda_coord: weight of the two coordinate terms (paper: 5).
        lambda_noobj: weight of the no-object confidence term (paper: 0.5).
        reduction: ``"none"``: ``[N]`` per image; ``"sum"``: over the batch; ``"mean"``: the sum
            divided by N (darknet sums over an image and divides the learning rate by the batch).

    Returns:
        :class:`YOLOv1Loss` ``(coord, size, obj, noobj, cls, total)``, λs applied.

    Raises:
        ValueError, TypeError: on wrong shapes or dtypes, NaN or inf, negative predicted or target
            sizes, labels outside ``-1..C-1``, a negative λ or an unknown ``reduction``.

    Chapter: book/08_yolo (section "The whole loss").
    """
    check_reduction(reduction)
    b = check_int(boxes_per_cell, "boxes_per_cell", low=1)
    lambda_coord = check_number(lambda_coord, "lambda_coord", low=0.0)
    lambda_noobj = check_number(lambda_noobj, "lambda_noobj", low=0.0)
    check_tensor(predictions, "predictions", shape=("N", "S", "S", None), dtype="float")
    n, s, s2, depth = predictions.shape
    if s != s2 or depth <= 5 * b:
        raise ValueError(
            f"predictions must be [N, S, S, B * 5 + C] with B = {b} and C >= 1, got "
            f"{list(predictions.shape)}"
        )
    check_tensor(target_boxes, "target_boxes", shape=(n, s, s, 4), dtype="float")
    check_tensor(target_labels, "target_labels", shape=(n, s, s), dtype=torch.int64)
    check_finite(predictions, "predictions")
    check_finite(target_boxes, "target_boxes")
    sizes = predictions[..., : 5 * b].reshape(n, s, s, b, 5)[..., 2:4]
    if bool((sizes < 0).any()):
        raise ValueError("predictions' widths and heights must be >= 0 (the loss takes their square roots)")
    if bool((target_boxes[..., 2:] < 0).any()):
        raise ValueError("target_boxes' widths and heights must be >= 0")
    num_classes = depth - 5 * b
    if target_labels.numel() and bool(((target_labels < -1) | (target_labels >= num_classes)).any()):
        raise ValueError(f"target_labels must be in -1..{num_classes - 1} (-1: no object)")
    terms = _yolo_v1_loss(predictions, target_boxes, target_labels, b, lambda_coord, lambda_noobj)
    if reduction == "none":
        return terms
    total = [t.sum() for t in terms]
    if reduction == "mean":
        total = [t / max(n, 1) for t in total]
    return YOLOv1Loss(*total)


# ------------------------------------------------------------------------------------ detector


class YOLOv1(Detector):
    """A small YOLOv1 (Redmon et al., 2016) implementing the course's Detector contract.

    The network: :class:`~coursepkg.models.backbones.MultiScaleBackbone` (the dense detectors'
    backbone), its C5 upsampled and its C3 max-pooled onto C4 (stride 16) and the three
    concatenated (C3's finer detail raised the shapes' held-out class accuracy and mAP; with C4
    and C5 alone the class term was learned by heart on the training images), one 3 × 3 conv-BN-leaky-ReLU
    (the paper's activation, slope 0.1), and a 1 × 1 convolution to ``B * 5 + C`` channels per
    location; the map is resized to ``S × S`` (average pooling; the identity when ``S = H / 16``,
    the course's 8 × 8 grid on 128 × 128 images). The paper's two fully connected layers over a
    7 × 7 × 1024 map give every cell the whole image as context; on the small shapes images the
    C5 features (stride 32, receptive field over most of the image) play that part.

    Outputs are squashed into the ranges the loss compares them with (a course choice; the paper's
    last layer is linear): a sigmoid on ``x, y, w, h`` and the confidences, a softmax on the class
    probabilities. ``losses`` returns the five terms of Eq. 3 (``coord``, ``size``, ``obj``,
    ``noobj``, ``cls``), each summed over an image and averaged over the batch. ``detect`` scores
    every (cell, predictor, class) with the class-specific confidence ``Pr(class | object) ·
    confidence`` (§2, Eq. 2 of the paper) and hands them to the dense detectors' decoding
    (:func:`~coursepkg.models.dense_decoding.decode_dense_detections`: score threshold, top-k,
    class-aware NMS, ``detections_per_img``).

    Shapes:
        ``forward``: ``[N, 3, H, W]`` -> ``[N, S, S, B * 5 + C]``.

    Args:
        config: every hyper-parameter; the defaults suit 128 × 128 shapes images.

    Chapter: book/08_yolo (section "Training a YOLOv1").
    """

    def __init__(self, config: YOLOv1Config | None = None) -> None:
        super().__init__()
        self.config = config = config or YOLOv1Config()
        self.backbone = MultiScaleBackbone(config.backbone_channels)
        channels = sum(self.backbone.out_channels[k] for k in ("c3", "c4", "c5"))
        self.head = nn.Sequential(
            nn.Conv2d(channels, config.head_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(config.head_channels),
            nn.LeakyReLU(0.1, inplace=True),  # paper §2: leaky rectified linear activation, 0.1
            nn.Conv2d(config.head_channels, config.channels_per_cell, 1),
        )

    def forward(self, images: Tensor) -> Tensor:
        """Activated predictions ``[N, S, S, B * 5 + C]`` (see the class docstring)."""
        check_images(images)
        c = self.config
        features = self.backbone(images)
        c4, c5 = features["c4"], features["c5"]  # [N, C4, H/16, W/16], [N, C5, H/32, W/32]
        c5 = F.interpolate(c5, size=c4.shape[-2:], mode="nearest")  # [N, C5, H/16, W/16]
        # C3's stride-8 detail, max-pooled onto the cells: what tells small shapes apart
        c3 = F.adaptive_max_pool2d(features["c3"], c4.shape[-2:])  # [N, C3, H/16, W/16]
        out = self.head(torch.cat([c3, c4, c5], dim=1))  # [N, B*5+C, H/16, W/16]
        if tuple(out.shape[-2:]) != (c.grid_size, c.grid_size):
            out = F.adaptive_avg_pool2d(out, c.grid_size)  # [N, B*5+C, S, S]
        out = out.permute(0, 2, 3, 1).float()  # [N, S, S, B*5+C]; box math in float32 under AMP
        n, s, b = out.shape[0], c.grid_size, c.boxes_per_cell
        boxes = out[..., : 5 * b].sigmoid()  # [N, S, S, 5B]: x, y, w, h, confidence, all in (0, 1)
        probs = out[..., 5 * b :].softmax(dim=-1)  # [N, S, S, C]
        return torch.cat([boxes, probs], dim=-1).reshape(n, s, s, -1)

    def losses(self, images: Tensor, targets: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        """The five terms of the YOLOv1 loss (Eq. 3) for one batch, each averaged over the images.

        Args:
            images: ``[N, 3, H, W]`` float.
            targets: N dicts with ``"boxes"`` ``[G_i, 4]`` xyxy pixels and ``"labels"`` ``[G_i]``
                int64 in ``0..C-1``; ``G_i = 0`` is allowed (then only the no-object term).

        Returns:
            ``{"coord", "size", "obj", "noobj", "cls"}``, finite scalars, λs applied.

        Raises:
            ValueError, TypeError: on malformed images or targets (naming ``targets[i][key]``).
        """
        c = self.config
        check_images(images)
        check_targets(targets, images.shape[0], num_classes=c.num_classes)
        predictions = self(images)  # [N, S, S, B*5+C]
        with torch.no_grad():
            cells = _yolo_v1_targets(
                [t["boxes"].to(predictions.dtype) for t in targets],
                [t["labels"] for t in targets],
                tuple(images.shape[-2:]),
                c.grid_size,
            )
        terms = _yolo_v1_loss(
            predictions, cells.boxes, cells.labels, c.boxes_per_cell, c.lambda_coord, c.lambda_noobj
        )
        # darknet sums the loss over an image and divides the step by the batch: the mean per image
        return {name: value.mean() for name, value in terms._asdict().items() if name != "total"}

    def detect(self, images: Tensor) -> list[dict[str, Tensor]]:
        """Detections per image: boxes ``[D, 4]``, scores ``[D]`` (decreasing), labels ``[D]`` in 0..C-1.

        Call in ``eval()`` mode and under ``torch.no_grad()``.
        """
        c = self.config
        predictions = self(images)  # [N, S, S, B*5+C]
        n, s, b = predictions.shape[0], c.grid_size, c.boxes_per_cell
        height, width = images.shape[-2:]
        boxes = predictions[..., : 5 * b].reshape(n, s * s * b, 5)  # cell-major, then predictor
        probs = predictions[..., 5 * b :].reshape(n, s * s, 1, -1)  # [N, S*S, 1, C]
        # Eq. 2: Pr(class_i | object) * Pr(object) * IoU = class probability x confidence
        scores = (probs * boxes.view(n, s * s, b, 5)[..., 4:]).reshape(n, s * s * b, -1)
        cell = (height / s, width / s)  # cell size in pixels (h, w)
        corners = location_grid((s, s), cell, offset=0.0, device=images.device, dtype=boxes.dtype)
        corners = corners.repeat_interleave(b, dim=0)  # [S*S*B, 2] top-left of each box's cell

        def decode(regression: Tensor, references: Tensor) -> Tensor:
            """(x, y, w, h) of a cell's predictor -> xyxy pixels: centre inside the cell."""
            centre = references + regression[:, :2] * regression.new_tensor([cell[1], cell[0]])
            size = regression[:, 2:4] * regression.new_tensor([width, height])
            return torch.cat([centre - size / 2, centre + size / 2], dim=1)  # [M, 4]

        return decode_dense_detections(
            [scores],
            [boxes[..., :4]],
            [corners],
            (height, width),
            decode=decode,
            score_thresh=c.score_thresh,
            topk_candidates=c.topk_candidates,
            nms_thresh=c.nms_thresh,
            detections_per_img=c.detections_per_img,
        )
