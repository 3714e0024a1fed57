"""IoU losses: 1 - IoU, -ln IoU (UnitBox), GIoU, DIoU, CIoU, and a rectified-IoU stand-in.

Shapes used in this module:

* **matched** functions (every ``*_loss`` and ``matched_*``): ``boxes1[i]`` against
  ``boxes2[i]``, both ``[N, 4]`` xyxy, the same N; the result is ``[N]`` (``reduction="none"``)
  or a 0-d tensor (``"mean"``, ``"sum"``). ``boxes1`` is usually the prediction and ``boxes2``
  the target; every loss here is symmetric, so the order does not change the value.
* **pairwise** functions (:func:`generalized_box_iou`, :func:`distance_box_iou`,
  :func:`complete_box_iou`): ``[N, 4]`` and ``[M, 4]`` give ``[N, M]``, like ``torchvision.ops``.

``eps`` (default ``1e-7``, torchvision's) is added where torchvision's losses add it: to the union
(``IoU = I / (U + eps)``), to the enclosing box's area (GIoU) and to its squared diagonal (DIoU,
CIoU). It changes a result by about ``eps / U`` and keeps every loss and gradient finite for the
inputs where a formula divides 0 by 0: two zero-area boxes, two identical points. ``eps = 0``
gives the textbook formulas exactly, NaN included. :func:`log_iou_loss` also clamps the IoU at
``eps`` before the logarithm, so disjoint boxes cost ``-ln(eps)`` (about 16.1) instead of ``inf``.

Every function refuses NaN or infinite coordinates and boxes with ``x2 < x1`` or ``y2 < y1``
(``ValueError`` naming ``boxes1`` or ``boxes2``); zero-width and zero-height boxes are legal and
give finite losses.

Chapter: book/12_iou_losses
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from coursepkg.ops.boxes import _check_pair
from coursepkg.ops.validation import (
    check_finite,
    check_number,
    check_reduction,
    check_tensor,
)

DEFAULT_EPS = 1e-7
"""torchvision's ``eps`` in ``generalized_box_iou_loss`` and the DIoU / CIoU losses."""

RIOU_BETA = 0.95
"""β of the rectified IoU loss: where its gradient peaks (Wang & Zhang 2020, via note 003)."""


# --------------------------------------------------------------------------- checks and helpers


def _check_matched(boxes1: Tensor, boxes2: Tensor, eps: float) -> float:
    """Validate a matched pair of box sets and ``eps``; return ``eps`` as a float."""
    _check_pair(boxes1, boxes2)
    if boxes1.shape[0] != boxes2.shape[0]:
        raise ValueError(
            "boxes1 and boxes2 must have the same length (boxes1[i] is matched with boxes2[i]), "
            f"got {boxes1.shape[0]} and {boxes2.shape[0]}"
        )
    return check_number(eps, "eps", low=0.0)


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    """``reduction`` as in ``torch.nn.functional``; the mean of no boxes is 0 (as torchvision)."""
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean() if loss.numel() > 0 else 0.0 * loss.sum()
    return loss


class _Overlap(NamedTuple):
    """The terms every IoU variant is made of, for matched boxes (each ``[N]``)."""

    inter: Tensor  # |B ∩ B_gt|
    union: Tensor  # |B ∪ B_gt|
    iou: Tensor  # inter / (union + eps)
    enclosing_w: Tensor  # width of C, the smallest box enclosing both
    enclosing_h: Tensor


def _overlap(boxes1: Tensor, boxes2: Tensor, eps: float) -> _Overlap:
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)  # [N] each
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    inter_w = torch.min(x2, x2g) - torch.max(x1, x1g)  # negative when apart
    inter_h = torch.min(y2, y2g) - torch.max(y1, y1g)
    # Boxes that do not overlap (or only touch) have no intersection and no gradient through
    # it: torch.where, not clamp, which would pass a gradient along a shared edge.
    overlap = (inter_w > 0) & (inter_h > 0)
    inter = torch.where(overlap, inter_w * inter_h, torch.zeros_like(inter_w))
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    enclosing_w = torch.max(x2, x2g) - torch.min(x1, x1g)
    enclosing_h = torch.max(y2, y2g) - torch.min(y1, y1g)
    return _Overlap(inter, union, inter / (union + eps), enclosing_w, enclosing_h)


def _centre_distance_sq(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """ρ², the squared distance between the boxes' centres, ``[N]``."""
    centre1 = (boxes1[:, :2] + boxes1[:, 2:]) / 2  # [N, 2]
    centre2 = (boxes2[:, :2] + boxes2[:, 2:]) / 2
    return ((centre1 - centre2) ** 2).sum(dim=1)


def _aspect_angle(boxes: Tensor) -> Tensor:
    """``arctan(w / h)`` of each box, ``[N]``: CIoU's measure of shape, in ``[0, π/2]``.

    Written as ``atan2(w, h)``, which is the same angle for ``h > 0`` and stays finite (value and
    gradient) for ``h = 0`` (a horizontal line: π/2). A point (``w = h = 0``) has no shape; it
    gets π/4, the limit of a shrinking square, and no gradient. torchvision's ``atan(w / h)``
    has a NaN gradient for the first and a NaN value for the second.
    """
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    point = (w == 0) & (h == 0)
    # The inner where keeps atan2's gradient at (0, 0), 0/0, out of the backward pass.
    angle = torch.atan2(w, torch.where(point, torch.ones_like(h), h))
    return torch.where(point, torch.full_like(angle, math.pi / 4), angle)


def _matched_giou(boxes1: Tensor, boxes2: Tensor, eps: float) -> Tensor:
    o = _overlap(boxes1, boxes2, eps)
    enclosing = o.enclosing_w * o.enclosing_h  # |C|
    return o.iou - (enclosing - o.union) / (enclosing + eps)


def _matched_diou(boxes1: Tensor, boxes2: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """DIoU and IoU, ``[N]`` each."""
    o = _overlap(boxes1, boxes2, eps)
    diagonal_sq = o.enclosing_w**2 + o.enclosing_h**2 + eps  # c², C's squared diagonal
    return o.iou - _centre_distance_sq(boxes1, boxes2) / diagonal_sq, o.iou


def _matched_ciou(boxes1: Tensor, boxes2: Tensor, eps: float) -> Tensor:
    diou, iou = _matched_diou(boxes1, boxes2, eps)
    v = (4 / math.pi**2) * (_aspect_angle(boxes2) - _aspect_angle(boxes1)) ** 2
    with torch.no_grad():  # α is a weight, not differentiated (DIoU paper, after eq. 11)
        alpha = v / (1 - iou + v + eps)
    return diou - alpha * v


def _iou_loss(boxes1: Tensor, boxes2: Tensor, eps: float) -> Tensor:
    """``1 - IoU`` per matched pair, ``[N]``, without the checks (for a detector's loss)."""
    return 1 - _overlap(boxes1, boxes2, eps).iou


def _giou_loss(boxes1: Tensor, boxes2: Tensor, eps: float) -> Tensor:
    """``1 - GIoU`` per matched pair, ``[N]``, without the checks (for a detector's loss)."""
    return 1 - _matched_giou(boxes1, boxes2, eps)


def _rectified_iou_loss(
    boxes1: Tensor, boxes2: Tensor, eps: float, beta: float = RIOU_BETA, k: float | None = None
) -> Tensor:
    """The rectified stand-in per matched pair, ``[N]``, without the checks (``k`` None: 2 / β)."""
    return _rectified(_overlap(boxes1, boxes2, eps).iou, beta, 2.0 / beta if k is None else k)


def _pairwise(fn, boxes1: Tensor, boxes2: Tensor, eps: float) -> Tensor:
    """Apply a matched function to every pair: ``[N, 4]``, ``[M, 4]`` -> ``[N, M]``."""
    n, m = boxes1.shape[0], boxes2.shape[0]
    left = boxes1[:, None, :].expand(n, m, 4).reshape(n * m, 4)  # row i*M + j is boxes1[i]
    right = boxes2[None, :, :].expand(n, m, 4).reshape(n * m, 4)  # ... and boxes2[j]
    return fn(left, right, eps).reshape(n, m)


# --------------------------------------------------------------------------- IoU variants


def matched_generalized_box_iou(
    boxes1: Tensor, boxes2: Tensor, *, eps: float = DEFAULT_EPS
) -> Tensor:
    """GIoU of ``boxes1[i]`` with ``boxes2[i]``: ``IoU - |C \\ (B ∪ B_gt)| / |C|``.

    Implements the definition of Rezatofighi et al. 2019 (Algorithm 1): ``C`` is the smallest
    box enclosing both. GIoU lies in ``(-1, 1]`` and keeps decreasing as disjoint boxes move
    apart, where IoU stays 0.

    Args:
        boxes1: ``[N, 4]`` xyxy boxes.
        boxes2: ``[N, 4]`` xyxy boxes, same dtype and device.
        eps: added to the union and to ``|C|`` (see the module docstring).

    Returns:
        ``[N]`` GIoU values, dtype of the boxes.

    Raises:
        TypeError: for non-tensor or integer boxes, or different dtypes.
        ValueError: for a bad shape, different lengths, NaN/inf, ``x2 < x1``, or ``eps < 0``.

    Chapter: book/12_iou_losses
    """
    eps = _check_matched(boxes1, boxes2, eps)
    return _matched_giou(boxes1, boxes2, eps)


def matched_distance_box_iou(boxes1: Tensor, boxes2: Tensor, *, eps: float = DEFAULT_EPS) -> Tensor:
    """DIoU of ``boxes1[i]`` with ``boxes2[i]``: ``IoU - ρ²(b, b_gt) / c²``.

    Implements Zheng et al. 2020, eq. (6)-(7): ``ρ`` is the distance between the two centres
    and ``c`` the diagonal of the smallest box enclosing both. DIoU lies in ``(-1, 1]``.

    Args:
        boxes1: ``[N, 4]`` xyxy boxes.
        boxes2: ``[N, 4]`` xyxy boxes, same dtype and device.
        eps: added to the union and to ``c²``.

    Returns:
        ``[N]`` DIoU values.

    Raises:
        TypeError, ValueError: as :func:`matched_generalized_box_iou`.

    Chapter: book/12_iou_losses
    """
    eps = _check_matched(boxes1, boxes2, eps)
    return _matched_diou(boxes1, boxes2, eps)[0]


def matched_complete_box_iou(boxes1: Tensor, boxes2: Tensor, *, eps: float = DEFAULT_EPS) -> Tensor:
    """CIoU of ``boxes1[i]`` with ``boxes2[i]``: ``DIoU - α v``.

    Implements Zheng et al. 2020, eq. (9)-(11): ``v = 4/π² (arctan(w_gt/h_gt) - arctan(w/h))²``
    measures the difference of aspect ratios and ``α = v / ((1 - IoU) + v)`` weights it; ``α`` is
    computed without gradient, as in the paper and torchvision. ``boxes2`` is the target
    (``w_gt, h_gt``), but every term is symmetric, so the order does not change the value. A
    zero-height box has the angle π/2 and a point π/4 (torchvision: a NaN gradient for the
    first, a NaN value for the second).

    Args:
        boxes1: ``[N, 4]`` xyxy boxes (predictions).
        boxes2: ``[N, 4]`` xyxy boxes (targets), same dtype and device.
        eps: added to the union, to ``c²`` and to α's denominator.

    Returns:
        ``[N]`` CIoU values.

    Raises:
        TypeError, ValueError: as :func:`matched_generalized_box_iou`.

    Chapter: book/12_iou_losses
    """
    eps = _check_matched(boxes1, boxes2, eps)
    return _matched_ciou(boxes1, boxes2, eps)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor, *, eps: float = DEFAULT_EPS) -> Tensor:
    """Pairwise GIoU (see :func:`matched_generalized_box_iou`), like ``torchvision.ops``.

    With ``eps=0`` it equals ``torchvision.ops.generalized_box_iou``; the default ``eps`` keeps
    pairs of zero-area boxes finite (torchvision gives NaN).

    Args:
        boxes1: ``[N, 4]`` xyxy boxes.
        boxes2: ``[M, 4]`` xyxy boxes, same dtype and device.
        eps: added to the union and to ``|C|``.

    Returns:
        ``[N, M]`` GIoU values.

    Raises:
        TypeError, ValueError: for bad boxes (named ``boxes1`` or ``boxes2``) or ``eps < 0``.

    Chapter: book/12_iou_losses
    """
    _check_pair(boxes1, boxes2)
    return _pairwise(_matched_giou, boxes1, boxes2, check_number(eps, "eps", low=0.0))


def distance_box_iou(boxes1: Tensor, boxes2: Tensor, *, eps: float = DEFAULT_EPS) -> Tensor:
    """Pairwise DIoU (see :func:`matched_distance_box_iou`), like ``torchvision.ops``.

    Equals ``torchvision.ops.distance_box_iou(boxes1, boxes2, eps)`` up to torchvision's IoU,
    which has no ``eps`` in the union (identical with ``eps=0``).

    Args:
        boxes1: ``[N, 4]`` xyxy boxes.
        boxes2: ``[M, 4]`` xyxy boxes, same dtype and device.
        eps: added to the union and to ``c²``.

    Returns:
        ``[N, M]`` DIoU values.

    Raises:
        TypeError, ValueError: for bad boxes (named ``boxes1`` or ``boxes2``) or ``eps < 0``.

    Chapter: book/12_iou_losses
    """
    _check_pair(boxes1, boxes2)
    eps = check_number(eps, "eps", low=0.0)
    return _pairwise(lambda a, b, e: _matched_diou(a, b, e)[0], boxes1, boxes2, eps)


def complete_box_iou(boxes1: Tensor, boxes2: Tensor, *, eps: float = DEFAULT_EPS) -> Tensor:
    """Pairwise CIoU (see :func:`matched_complete_box_iou`), like ``torchvision.ops``.

    ``boxes2`` holds the targets. Equals ``torchvision.ops.complete_box_iou(boxes1, boxes2, eps)``
    up to torchvision's IoU, which has no ``eps`` in the union (identical with ``eps=0``).

    Args:
        boxes1: ``[N, 4]`` xyxy boxes.
        boxes2: ``[M, 4]`` xyxy boxes, same dtype and device.
        eps: added to the union, to ``c²`` and to α's denominator.

    Returns:
        ``[N, M]`` CIoU values.

    Raises:
        TypeError, ValueError: for bad boxes (named ``boxes1`` or ``boxes2``) or ``eps < 0``.

    Chapter: book/12_iou_losses
    """
    _check_pair(boxes1, boxes2)
    return _pairwise(_matched_ciou, boxes1, boxes2, check_number(eps, "eps", low=0.0))


# --------------------------------------------------------------------------- the losses


def iou_loss(
    boxes1: Tensor, boxes2: Tensor, *, eps: float = DEFAULT_EPS, reduction: str = "mean"
) -> Tensor:
    """Linear IoU loss ``1 - IoU`` of matched boxes (Zheng et al. 2020, eq. 2).

    Its gradient with respect to IoU is -1 for every box; with respect to the coordinates it is
    0 for boxes that do not overlap, which is why GIoU and DIoU add a penalty.

    Args:
        boxes1: ``[N, 4]`` xyxy boxes (predictions).
        boxes2: ``[N, 4]`` xyxy boxes (targets), same dtype and device.
        eps: added to the union: ``IoU = I / (U + eps)``.
        reduction: ``"none"`` (``[N]``), ``"mean"`` (the default, as in ``torch.nn.functional``;
            0 for no boxes, as torchvision) or ``"sum"``.

    Returns:
        The loss, in ``[0, 1]``: ``[N]`` or a 0-d tensor.

    Raises:
        TypeError, ValueError: for bad boxes (named ``boxes1`` or ``boxes2``), different lengths,
            ``eps < 0`` or an unknown ``reduction``.

    Chapter: book/12_iou_losses
    """
    eps = _check_matched(boxes1, boxes2, eps)
    check_reduction(reduction)
    return _reduce(_iou_loss(boxes1, boxes2, eps), reduction)


def log_iou_loss(
    boxes1: Tensor, boxes2: Tensor, *, eps: float = DEFAULT_EPS, reduction: str = "mean"
) -> Tensor:
    """UnitBox's IoU loss ``-ln IoU`` of matched boxes (Yu et al. 2016, Algorithm 1).

    Its gradient with respect to IoU is ``-1 / IoU``: the worse the box, the larger the push,
    the opposite of the rectified loss. IoU is clamped at ``eps`` before the logarithm, so boxes
    that do not overlap cost ``-ln(eps)`` (16.1 for the default) with zero gradient, never
    ``inf``; ``eps`` must therefore be positive.

    Args:
        boxes1: ``[N, 4]`` xyxy boxes (predictions).
        boxes2: ``[N, 4]`` xyxy boxes (targets), same dtype and device.
        eps: added to the union, and the smallest IoU the logarithm sees; > 0.
        reduction: ``"none"``, ``"mean"`` (the default) or ``"sum"``.

    Returns:
        The loss, in ``[0, -ln eps]``: ``[N]`` or a 0-d tensor.

    Raises:
        TypeError, ValueError: as :func:`iou_loss`, and for ``eps <= 0``.

    Chapter: book/12_iou_losses
    """
    _check_matched(boxes1, boxes2, eps)
    eps = check_number(eps, "eps", low=0.0, low_open=True)
    check_reduction(reduction)
    iou = _overlap(boxes1, boxes2, eps).iou
    return _reduce(-torch.log(iou.clamp(min=eps)), reduction)


def giou_loss(
    boxes1: Tensor, boxes2: Tensor, *, eps: float = DEFAULT_EPS, reduction: str = "mean"
) -> Tensor:
    """GIoU loss ``1 - GIoU = 1 - IoU + |C \\ (B ∪ B_gt)| / |C|`` (Rezatofighi et al. 2019).

    Equals ``torchvision.ops.generalized_box_iou_loss`` (values and gradients), except that the
    default ``reduction`` is ``"mean"`` as in ``torch.nn.functional`` (torchvision's is
    ``"none"``). Lies in ``[0, 2)``.

    Args:
        boxes1: ``[N, 4]`` xyxy boxes (predictions).
        boxes2: ``[N, 4]`` xyxy boxes (targets), same dtype and device.
        eps: added to the union and to ``|C|``.
        reduction: ``"none"``, ``"mean"`` (the default) or ``"sum"``.

    Returns:
        ``[N]`` or a 0-d tensor.

    Raises:
        TypeError, ValueError: as :func:`iou_loss`.

    Chapter: book/12_iou_losses
    """
    eps = _check_matched(boxes1, boxes2, eps)
    check_reduction(reduction)
    return _reduce(_giou_loss(boxes1, boxes2, eps), reduction)


def diou_loss(
    boxes1: Tensor, boxes2: Tensor, *, eps: float = DEFAULT_EPS, reduction: str = "mean"
) -> Tensor:
    """DIoU loss ``1 - IoU + ρ²(b, b_gt) / c²`` (Zheng et al. 2020, eq. 7).

    Equals ``torchvision.ops.distance_box_iou_loss`` (values and gradients), except for the
    default ``reduction`` (``"mean"`` here). Lies in ``[0, 2)``.

    Args:
        boxes1: ``[N, 4]`` xyxy boxes (predictions).
        boxes2: ``[N, 4]`` xyxy boxes (targets), same dtype and device.
        eps: added to the union and to ``c²``.
        reduction: ``"none"``, ``"mean"`` (the default) or ``"sum"``.

    Returns:
        ``[N]`` or a 0-d tensor.

    Raises:
        TypeError, ValueError: as :func:`iou_loss`.

    Chapter: book/12_iou_losses
    """
    eps = _check_matched(boxes1, boxes2, eps)
    check_reduction(reduction)
    return _reduce(1 - _matched_diou(boxes1, boxes2, eps)[0], reduction)


def ciou_loss(
    boxes1: Tensor, boxes2: Tensor, *, eps: float = DEFAULT_EPS, reduction: str = "mean"
) -> Tensor:
    """CIoU loss ``1 - IoU + ρ²/c² + α v`` (Zheng et al. 2020, eq. 8-11).

    Equals ``torchvision.ops.complete_box_iou_loss`` (values and gradients; α without gradient)
    wherever torchvision is finite, and stays finite for zero-height boxes and points, where
    torchvision's ``atan(w / h)`` gives a NaN gradient or value (see
    :func:`matched_complete_box_iou`). Default ``reduction`` ``"mean"`` (torchvision's is
    ``"none"``). ``boxes2`` holds the targets.

    Args:
        boxes1: ``[N, 4]`` xyxy boxes (predictions).
        boxes2: ``[N, 4]`` xyxy boxes (targets), same dtype and device.
        eps: added to the union, to ``c²`` and to α's denominator.
        reduction: ``"none"``, ``"mean"`` (the default) or ``"sum"``.

    Returns:
        ``[N]`` or a 0-d tensor.

    Raises:
        TypeError, ValueError: as :func:`iou_loss`.

    Chapter: book/12_iou_losses
    """
    eps = _check_matched(boxes1, boxes2, eps)
    check_reduction(reduction)
    return _reduce(1 - _matched_ciou(boxes1, boxes2, eps), reduction)


# --------------------------------------------------------------------------- rectified IoU


def _check_rectified(beta: float, k: float | None) -> tuple[float, float]:
    beta = check_number(beta, "beta", low=0.0, high=1.0, low_open=True, high_open=True)
    k = 2.0 / beta if k is None else check_number(k, "k", low=0.0, low_open=True)
    return beta, k


def _check_iou_values(iou: Tensor) -> None:
    check_tensor(iou, "iou", dtype="float")
    check_finite(iou, "iou")
    if iou.numel() and not bool(((iou >= 0) & (iou <= 1)).all()):
        bad = iou[(iou < 0) | (iou > 1)][0].item()
        raise ValueError(f"iou must lie in [0, 1], got {bad}")


def rectified_gradient_of_iou(
    iou: Tensor, *, beta: float = RIOU_BETA, k: float | None = None
) -> Tensor:
    """``g(x) = -dL/dx`` of the rectified stand-in: ``k x`` below β, ``kβ(1 - x)/(1 - β)`` above.

    **Our construction, not Wang & Zhang's formula** (which we could not read; see
    :func:`rectified_iou_loss`). The analytic gradient magnitude, against which the tests check
    autograd: it rises linearly to its maximum ``k β`` at ``x = β`` and falls linearly to 0 at 1.

    Args:
        iou: IoU values ``x``, any shape, floating point, in ``[0, 1]``.
        beta: where the gradient peaks, in ``(0, 1)``.
        k: slope of the rise, > 0; default ``2 / β``, which makes ``L(0) = 1`` like ``1 - IoU``.

    Returns:
        ``g(x)``, same shape and dtype as ``iou``, >= 0.

    Raises:
        TypeError, ValueError: for a non-float ``iou``, NaN or values outside ``[0, 1]`` (named
            ``iou``), ``beta`` outside ``(0, 1)`` or ``k <= 0``.

    Chapter: book/12_iou_losses
    """
    beta, k = _check_rectified(beta, k)
    _check_iou_values(iou)
    return torch.where(iou < beta, k * iou, k * beta / (1 - beta) * (1 - iou))


def rectified_loss_of_iou(
    iou: Tensor, *, beta: float = RIOU_BETA, k: float | None = None
) -> Tensor:
    """``L(x) = ∫_x^1 g(t) dt`` of the rectified stand-in, as a function of the IoU ``x``.

    **Our construction, not Wang & Zhang's formula** (see :func:`rectified_iou_loss`)::

        L(x) = k (β - x²) / 2                    for x < β   (concave: the gradient rises)
        L(x) = k β (1 - x)² / (2 (1 - β))        for x >= β  (convex: the gradient falls)

    ``L`` and ``g`` are continuous at β and ``L(1) = 0``; with the default ``k = 2 / β``,
    ``L(0) = 1``, ``L(β) = 1 - β`` and ``L(x) = (1 - x)² / (1 - β)`` above β.

    Args:
        iou: IoU values ``x``, any shape, floating point, in ``[0, 1]``.
        beta: where the gradient peaks, in ``(0, 1)``.
        k: slope of the gradient's rise, > 0; default ``2 / β``.

    Returns:
        ``L(x)``, same shape and dtype as ``iou``, differentiable.

    Raises:
        TypeError, ValueError: as :func:`rectified_gradient_of_iou`.

    Chapter: book/12_iou_losses
    """
    beta, k = _check_rectified(beta, k)
    _check_iou_values(iou)
    return _rectified(iou, beta, k)


def _rectified(iou: Tensor, beta: float, k: float) -> Tensor:
    # Both branches are finite everywhere, so torch.where's backward never meets a NaN.
    below = k / 2 * (beta - iou**2)
    above = k * beta / (2 * (1 - beta)) * (1 - iou) ** 2
    return torch.where(iou < beta, below, above)


def rectified_iou_loss(
    boxes1: Tensor,
    boxes2: Tensor,
    *,
    beta: float = RIOU_BETA,
    k: float | None = None,
    eps: float = DEFAULT_EPS,
    reduction: str = "mean",
) -> Tensor:
    """A rectified IoU loss: ``L(IoU)`` whose gradient grows with IoU up to β, then falls.

    **This is our teaching reconstruction, not the formula of Wang & Zhang (ACM MM 2020).** The
    paper's idea (from its abstract and lecture note 003): the gradient of ``1 - IoU`` is the
    same for every box, so the many low-IoU boxes dominate; a rectified loss gives high-IoU boxes
    a larger gradient and low-IoU boxes a smaller one, rising up to ``IoU = β = 0.95`` and then
    falling sharply, with four parameters ``a, b, c, k`` shaping the curve. Their exact formula
    and the meaning of ``a, b, c`` were not available to us. This stand-in has the stated
    properties with two parameters: the gradient magnitude is :func:`rectified_gradient_of_iou`
    (a linear rise of slope ``k`` to β, a linear fall to 0 at 1) and the loss its integral,
    :func:`rectified_loss_of_iou`. The box geometry enters only through IoU, as in
    :func:`iou_loss`. With the default ``k = 2 / β``, its gradient is below 1 (that of
    ``1 - IoU``) for ``IoU < β / 2`` and above 1 for ``β / 2 < IoU < 1 - (1 - β) / 2``.

    Args:
        boxes1: ``[N, 4]`` xyxy boxes (predictions).
        boxes2: ``[N, 4]`` xyxy boxes (targets), same dtype and device.
        beta: where the gradient peaks, in ``(0, 1)``.
        k: slope of the gradient's rise, > 0; default ``2 / β``.
        eps: added to the union.
        reduction: ``"none"``, ``"mean"`` (the default) or ``"sum"``.

    Returns:
        ``[N]`` or a 0-d tensor, in ``[0, k β / 2]``.

    Raises:
        TypeError, ValueError: as :func:`iou_loss`, and for ``beta`` outside ``(0, 1)`` or
            ``k <= 0``.

    Chapter: book/12_iou_losses
    """
    eps = _check_matched(boxes1, boxes2, eps)
    beta, k = _check_rectified(beta, k)
    check_reduction(reduction)
    return _reduce(_rectified_iou_loss(boxes1, boxes2, eps, beta, k), reduction)
