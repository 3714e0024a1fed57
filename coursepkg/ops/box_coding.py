"""Box regression targets of R-CNN, Fast R-CNN and Faster R-CNN: encode and decode.

A detector does not predict box corners directly. It predicts how to move and stretch a reference
box ``P`` (a proposal in R-CNN, an anchor in Faster R-CNN) into the ground truth ``G``. With
centres ``(p_x, p_y)``, widths ``p_w`` and heights ``p_h`` (R-CNN, appendix C):

    t_x = (g_x - p_x) / p_w        t_y = (g_y - p_y) / p_h
    t_w = log(g_w / p_w)           t_h = log(g_h / p_h)

and the prediction ``d`` is turned back into a box with

    ĝ_x = p_w d_x + p_x            ĝ_y = p_h d_y + p_y
    ĝ_w = p_w exp(d_w)             ĝ_h = p_h exp(d_h)

These are equations ``rcnn-targets`` and ``rcnn-decode`` of book/05_rcnn. The lecture notes print
two typos: ``ĝ_y`` with ``p_x`` instead of ``p_y``, and ``t_h = log(g_h / h)`` instead of
``log(g_h / p_h)``; the chapter runs both and shows what goes wrong. The forms above are correct.

Point-based detectors (FCOS, Tian et al. 2019, Eq. (1)) encode a box by the distances from a
location ``(x, y)`` to its four sides instead:

    l = x - x1,   t = y - y1,   r = x2 - x,   b = y2 - y

:func:`boxes_to_distances` and :func:`distances_to_boxes` are that pair.

Shapes::

    reference_boxes, proposals   [N, 4]      xyxy, absolute pixels
    encode_boxes(...)            [N, 4]      (t_x, t_y, t_w, t_h) times weights
    deltas                       [N, 4 * C]  one (d_x, d_y, d_w, d_h) per class, C >= 1
    decode_boxes(deltas, boxes)  [N, 4 * C]  xyxy per class
    boxes_to_distances(points, boxes)      [..., 2], [..., 4] -> [..., 4]   (l, t, r, b)
    distances_to_boxes(points, distances)  [..., 2], [..., 4] -> [..., 4]   xyxy

Where we follow whom:

* ``weights`` and ``bbox_xform_clip`` are torchvision's ``BoxCoder`` (Faster R-CNN's second stage
  uses ``weights=(10, 10, 5, 5)``, the inverse of py-faster-rcnn's target stds 0.1, 0.1, 0.2, 0.2;
  the RPN uses ``(1, 1, 1, 1)``). ``decode_boxes`` is torchvision's ``BoxCoder.decode_single``.
* ``encode_boxes`` clamps the *reference* widths and heights at the machine epsilon of their dtype
  before dividing, as the lecture notes do for anchors (``np.maximum(width, eps)``). torchvision
  does not clamp (a zero-width reference gives inf/NaN there); for every reference box wider than
  eps both agree exactly. Ground-truth widths are not clamped anywhere: a zero-width ground truth
  gives ``t_w = -inf`` in the notes, in torchvision and here, so datasets drop zero-area boxes.

Chapter: book/05_rcnn (section "Bounding-box regression"); reused in book/07_faster_rcnn and
book/10_retinanet; the distances: book/13_fcos (sections "Targets of one point", "The head and
the loss").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from coursepkg.ops.validation import check_boxes, check_finite, check_number, check_tensor

__all__ = [
    "DEFAULT_BBOX_XFORM_CLIP",
    "encode_boxes",
    "decode_boxes",
    "boxes_to_distances",
    "distances_to_boxes",
]

# torchvision's default: exp(d_w) is capped at 1000 / 16, i.e. a box never grows more than 62.5x.
DEFAULT_BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def _check_weights(
    weights: Sequence[float], name: str = "weights"
) -> tuple[float, float, float, float]:
    if not isinstance(weights, Sequence) or len(weights) != 4:
        raise ValueError(f"{name} must be 4 numbers (w_x, w_y, w_w, w_h), got {weights!r}")
    return tuple(  # type: ignore[return-value]
        check_number(w, f"{name}[{i}]", low=0.0, low_open=True) for i, w in enumerate(weights)
    )


def _centres_and_sizes(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """xyxy [N, 4] -> centre x, centre y, width, height, each [N]."""
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    return boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights, widths, heights


def encode_boxes(
    reference_boxes: Tensor,
    proposals: Tensor,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
) -> Tensor:
    """Regression targets that move each proposal onto its ground truth (R-CNN, appendix C).

    Implements equation ``rcnn-targets`` of book/05_rcnn (R-CNN's Eq. for t_x, t_y, t_w, t_h):
    ``t = (w_x (g_x - p_x) / p_w, w_y (g_y - p_y) / p_h, w_w log(g_w / p_w), w_h log(g_h / p_h))``
    with ``p_w`` and ``p_h`` clamped at ``torch.finfo(dtype).eps`` (the lecture notes' guard against
    zero-size anchors; torchvision does not clamp). Same argument order and result as torchvision's
    ``BoxCoder(weights).encode_single(reference_boxes, proposals)``.

    Args:
        reference_boxes: ground-truth boxes ``G``, [N, 4] float xyxy in pixels, one per proposal.
        proposals: reference boxes ``P`` (anchors or proposals), [N, 4] float xyxy in pixels.
        weights: ``(w_x, w_y, w_w, w_h)``, multiplied into the targets (torchvision's convention).

    Returns:
        Targets ``(t_x, t_y, t_w, t_h)``, [N, 4], dtype and device of ``reference_boxes``.
        A zero-width (or zero-height) ground truth gives ``t_w = -inf`` (``t_h``), as in torchvision.

    Raises:
        TypeError: if a box tensor is not floating point.
        ValueError: on wrong shapes, different N, NaN/inf, x2 < x1 or y2 < y1, or weights that
            are not finite positive numbers.

    Chapter: book/05_rcnn (section "Bounding-box regression").
    """
    check_boxes(reference_boxes, "reference_boxes")
    check_boxes(proposals, "proposals")
    if reference_boxes.shape[0] != proposals.shape[0]:
        raise ValueError(
            "reference_boxes and proposals must have the same length, "
            f"got {reference_boxes.shape[0]} and {proposals.shape[0]}"
        )
    return _encode_boxes(reference_boxes, proposals, _check_weights(weights))


def _encode_boxes(
    reference_boxes: Tensor, proposals: Tensor, weights: tuple[float, float, float, float]
) -> Tensor:
    """:func:`encode_boxes` without the checks, for callers that validated their inputs."""
    w_x, w_y, w_w, w_h = weights
    proposals = proposals.to(reference_boxes.dtype)

    g_x, g_y, g_w, g_h = _centres_and_sizes(reference_boxes)
    p_x, p_y, p_w, p_h = _centres_and_sizes(proposals)
    # The notes' guard: a zero-size anchor would divide by zero. No-op for any real box.
    eps = torch.finfo(proposals.dtype).eps
    p_w, p_h = p_w.clamp(min=eps), p_h.clamp(min=eps)

    t_x = w_x * (g_x - p_x) / p_w
    t_y = w_y * (g_y - p_y) / p_h  # p_h, not p_w: the notes' ĝ_y typo would swap these
    t_w = w_w * torch.log(g_w / p_w)
    t_h = w_h * torch.log(g_h / p_h)  # p_h, not h: the notes' t_h typo
    return torch.stack((t_x, t_y, t_w, t_h), dim=1)  # [N, 4]


def decode_boxes(
    deltas: Tensor,
    boxes: Tensor,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    bbox_xform_clip: float = DEFAULT_BBOX_XFORM_CLIP,
) -> Tensor:
    """Apply predicted deltas to reference boxes: the inverse of :func:`encode_boxes`.

    Implements equation ``rcnn-decode`` of book/05_rcnn (R-CNN's ĝ_x, ĝ_y, ĝ_w, ĝ_h):
    ``ĝ_x = p_w d_x / w_x + p_x``, ``ĝ_y = p_h d_y / w_y + p_y``,
    ``ĝ_w = p_w exp(min(d_w / w_w, clip))``, ``ĝ_h = p_h exp(min(d_h / w_h, clip))``, returned as
    xyxy. Identical to torchvision's ``BoxCoder(weights, bbox_xform_clip).decode_single``, including
    per-class deltas: column group ``c`` of ``deltas`` decodes class ``c`` against the same box.
    The clip keeps ``exp`` from overflowing on a wild prediction early in training.

    Args:
        deltas: predicted ``(d_x, d_y, d_w, d_h)``, [N, 4 * C] float (C = 1 for class-agnostic).
        boxes: reference boxes (anchors or proposals), [N, 4] float xyxy in pixels.
        weights: ``(w_x, w_y, w_w, w_h)`` that :func:`encode_boxes` multiplied in.
        bbox_xform_clip: upper bound on ``d_w / w_w`` and ``d_h / w_h`` before ``exp``.

    Returns:
        Decoded boxes, [N, 4 * C] xyxy in pixels, dtype of ``deltas`` (``boxes`` is cast to it).

    Raises:
        TypeError: if ``deltas`` or ``boxes`` is not floating point.
        ValueError: on wrong shapes, different N, NaN or inf in ``deltas``, NaN/inf or x2 < x1
            in ``boxes``, weights that are not finite positive numbers, or a ``bbox_xform_clip``
            that is not a finite positive number.

    Chapter: book/05_rcnn (section "Bounding-box regression"); book/07_faster_rcnn (proposals).
    """
    check_boxes(boxes, "boxes")
    check_tensor(deltas, "deltas", dtype="float")
    if deltas.dim() != 2 or deltas.shape[1] == 0 or deltas.shape[1] % 4 != 0:
        raise ValueError(f"deltas must be [N, 4 * C] with C >= 1, got {list(deltas.shape)}")
    if deltas.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"deltas and boxes must have the same length, got {deltas.shape[0]} and {boxes.shape[0]}"
        )
    check_finite(deltas, "deltas")
    weights = _check_weights(weights)
    bbox_xform_clip = check_number(bbox_xform_clip, "bbox_xform_clip", low=0.0, low_open=True)
    return _decode_boxes(deltas, boxes, weights, bbox_xform_clip)


def _decode_boxes(
    deltas: Tensor,
    boxes: Tensor,
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
    bbox_xform_clip: float = DEFAULT_BBOX_XFORM_CLIP,
) -> Tensor:
    """:func:`decode_boxes` without the checks, for callers that validated their inputs."""
    w_x, w_y, w_w, w_h = weights
    p_x, p_y, p_w, p_h = (v[:, None] for v in _centres_and_sizes(boxes.to(deltas.dtype)))  # [N, 1]
    d_x = deltas[:, 0::4] / w_x  # [N, C]
    d_y = deltas[:, 1::4] / w_y
    d_w = (deltas[:, 2::4] / w_w).clamp(max=bbox_xform_clip)
    d_h = (deltas[:, 3::4] / w_h).clamp(max=bbox_xform_clip)

    ctr_x = d_x * p_w + p_x
    ctr_y = d_y * p_h + p_y
    half_w = 0.5 * torch.exp(d_w) * p_w
    half_h = 0.5 * torch.exp(d_h) * p_h
    decoded = torch.stack((ctr_x - half_w, ctr_y - half_h, ctr_x + half_w, ctr_y + half_h), dim=2)
    return decoded.flatten(1)  # [N, C, 4] -> [N, 4 * C]


def _check_points_pair(points: Tensor, other: Tensor, other_name: str) -> None:
    check_tensor(points, "points", dtype="float")
    check_tensor(other, other_name, dtype="float")
    if points.dim() == 0 or points.shape[-1] != 2:
        raise ValueError(f"points must be [..., 2] (x, y), got {list(points.shape)}")
    if other.dim() == 0 or other.shape[-1] != 4:
        raise ValueError(f"{other_name} must be [..., 4], got {list(other.shape)}")
    try:
        torch.broadcast_shapes(points.shape[:-1], other.shape[:-1])
    except RuntimeError:
        raise ValueError(
            f"points {list(points.shape)} and {other_name} {list(other.shape)} do not broadcast"
        ) from None
    check_finite(points, "points")
    check_finite(other, other_name)


def boxes_to_distances(points: Tensor, boxes: Tensor) -> Tensor:
    """FCOS's regression targets: distances from each point to the four sides of its box.

    ``(l, t, r, b) = (x - x1, y - y1, x2 - x, y2 - y)`` (FCOS, Eq. (1)). Nothing is clamped: a
    point outside its box gets a negative distance, which is how FCOS tells that the point is not
    a positive for that box (``min(l, t, r, b) > 0``). Leading dimensions broadcast, so ``points``
    ``[N, 1, 2]`` and ``boxes`` ``[1, G, 4]`` give every point-box pair ``[N, G, 4]``.

    Args:
        points: ``(x, y)`` in pixels, [..., 2] float.
        boxes: xyxy in pixels, [..., 4] float (leading dimensions broadcast with ``points``).

    Returns:
        Distances ``(l, t, r, b)`` in pixels, [broadcast(...), 4].

    Raises:
        TypeError: if an input is not a floating tensor.
        ValueError: if the last dimensions are not 2 and 4, the leading ones do not broadcast,
            or an input has NaN or inf.

    Chapter: book/13_fcos (section "Targets of one point").
    """
    _check_points_pair(points, boxes, "boxes")
    x, y = points[..., 0], points[..., 1]
    return torch.stack(
        (x - boxes[..., 0], y - boxes[..., 1], boxes[..., 2] - x, boxes[..., 3] - y), dim=-1
    )


def distances_to_boxes(points: Tensor, distances: Tensor) -> Tensor:
    """Boxes from points and distances to their sides: the inverse of :func:`boxes_to_distances`.

    ``(x1, y1, x2, y2) = (x - l, y - t, x + r, y + b)``. Negative distances are not clamped (the
    result may then have ``x2 < x1``); a detector applies ``relu`` or ``exp`` to its predictions
    so that they are non-negative before decoding. Leading dimensions broadcast.

    Args:
        points: ``(x, y)`` in pixels, [..., 2] float.
        distances: ``(l, t, r, b)`` in pixels, [..., 4] float.

    Returns:
        Boxes, [broadcast(...), 4] xyxy in pixels.

    Raises:
        TypeError: if an input is not a floating tensor.
        ValueError: if the last dimensions are not 2 and 4, the leading ones do not broadcast,
            or an input has NaN or inf.

    Chapter: book/13_fcos (section "The head and the loss").
    """
    _check_points_pair(points, distances, "distances")
    return _distances_to_boxes(points, distances)


def _distances_to_boxes(points: Tensor, distances: Tensor) -> Tensor:
    """:func:`distances_to_boxes` without the checks."""
    points = points.to(distances.dtype)
    return torch.cat((points - distances[..., :2], points + distances[..., 2:]), dim=-1)
