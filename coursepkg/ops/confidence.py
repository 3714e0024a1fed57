"""The confidence (objectness) loss: binary cross-entropy over anchors, computed from logits.

Every anchor (or feature-map location) gets one number, the probability that it holds *some*
object, and a label from the assignment: 1 positive, 0 negative, -1 ignored. The loss is the
binary cross-entropy (BCE) of that probability against the label,

    BCE(p, y) = -[y log p + (1 - y) log(1 - p)],

over the anchors that take part (labels 0 and 1). Two ways of getting ``p`` appear in the lecture
notes: the largest foreground probability of a classifier (:func:`objectness_from_class_probs`),
or a separate objectness output with its own sigmoid (YOLO's "confidence", the RPN's objectness),
which is what :func:`confidence_loss` takes, as a logit.

Computed from probabilities, the formula breaks when ``p`` reaches 0 or 1, which a float32 sigmoid
does for logits above about 16.6 (``p`` rounds to 1) and below about -88.7 (``exp(-x)`` overflows,
``p = 0``): ``log 0 = -inf`` gives an infinite loss, and ``0 * log 0`` gives NaN (:func:`binary_cross_entropy_naive` shows it). From the logit ``x``,
with ``p = sigmoid(x)``, ``-log p = softplus(-x)`` and ``-log(1 - p) = softplus(x)``, so

    BCE(sigmoid(x), y) = max(x, 0) - x y + log(1 + exp(-|x|)),

which is finite for every finite ``x``: this is ``torch.nn.functional.binary_cross_entropy_with_logits``.

Normalisation. ``reduction="mean"`` divides the sum by the number of participating anchors (the
anchor-based rule of the notes, and the RPN's). Anchor-free detectors divide the sum by a count
of objects instead (:func:`normalize_by_boxes`, at the call site, after ``reduction="sum"``).

Shapes::

    probs     [N, C]   class probabilities, background at ``background_index``
    logits    [...]    one objectness logit per anchor
    labels    [...]    int, 1 positive / 0 negative / -1 ignored, same shape as ``logits``
    loss      [...] for reduction="none" (0 where ignored), else a scalar

Chapter: book/09_confidence_bce
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from coursepkg.ops.validation import check_finite, check_int, check_reduction, check_tensor

__all__ = [
    "binary_cross_entropy_naive",
    "confidence_loss",
    "normalize_by_boxes",
    "objectness_from_class_probs",
]


def _check_in_unit_interval(value: Tensor, name: str) -> None:
    """Raise unless every element is finite and in [0, 1] (one host sync when all are)."""
    if value.numel() == 0:
        return
    low, high = torch.aminmax(value)
    if not bool((low >= 0) & (high <= 1)):  # NaN fails both tests
        check_finite(value, name)
        raise ValueError(
            f"{name} must hold probabilities in [0, 1], got min {low.item()} and max {high.item()}"
        )


def objectness_from_class_probs(probs: Tensor, background_index: int = 0) -> Tensor:
    """Objectness as the largest foreground-class probability: ``p = max_{k != bg} P(k)``.

    Method 1 of the lecture notes (note 000): an anchor is as likely to hold an object as its most
    likely foreground class. This is *not* ``1 - P(background)``, which sums the foreground classes
    instead: ``[0.1, 0.3, 0.6]`` gives 0.6 here and 0.9 there (the chapter compares the two).

    Args:
        probs: ``[N, C]`` float class probabilities (softmax outputs or independent sigmoids),
            ``C >= 2``, each in ``[0, 1]``.
        background_index: the column of the background class (0 for softmax heads, the course's
            convention).

    Returns:
        ``[N]`` objectness probabilities, same dtype and device as ``probs``.

    Raises:
        TypeError: if ``probs`` is not a floating-point tensor or ``background_index`` not an int.
        ValueError: if ``probs`` is not ``[N, C]`` with ``C >= 2``, holds NaN, inf or a value
            outside ``[0, 1]``, or ``background_index`` is not in ``0..C-1``.

    Chapter: book/09_confidence_bce (section "Objectness from class probabilities, or its own
    branch").
    """
    check_tensor(probs, "probs", shape=("N", "C"), dtype="float")
    num_classes = probs.shape[1]
    if num_classes < 2:
        raise ValueError(
            f"probs must have C >= 2 columns (background + classes), got {num_classes}"
        )
    background_index = check_int(background_index, "background_index", low=0, high=num_classes - 1)
    _check_in_unit_interval(probs, "probs")
    foreground = torch.cat(
        [probs[:, :background_index], probs[:, background_index + 1 :]], dim=1
    )  # [N, C - 1]
    return foreground.amax(dim=1)


def binary_cross_entropy_naive(p: Tensor, y: Tensor) -> Tensor:
    """The textbook BCE in probability space, ``-[y log p + (1 - y) log(1 - p)]``, unclamped.

    For teaching only: it returns ``inf`` when the wrong class gets probability 1 (``log 0``) and
    NaN when the right one does (``0 * log 0``), which is why losses are computed from logits
    (:func:`confidence_loss`). ``torch.nn.functional.binary_cross_entropy`` hides the same problem
    by clamping each log at -100.

    Args:
        p: ``[...]`` float probabilities in ``[0, 1]`` (0 and 1 included).
        y: ``[...]`` labels, 0 or 1, same shape as ``p`` (any real or integer dtype).

    Returns:
        ``[...]`` per-element losses in ``p``'s dtype; ``inf`` or NaN where ``p`` is 0 or 1.

    Raises:
        TypeError: if ``p`` is not a floating-point tensor or ``y`` not a tensor.
        ValueError: if ``p`` is outside ``[0, 1]`` or not finite, ``y`` is not 0 or 1, or the
            shapes differ.

    Chapter: book/09_confidence_bce (section "Why from logits").
    """
    check_tensor(p, "p", dtype="float")
    check_tensor(y, "y")
    if y.shape != p.shape:
        raise ValueError(f"y must have the shape of p, {list(p.shape)}, got {list(y.shape)}")
    _check_in_unit_interval(p, "p")
    if y.numel() and not bool(((y == 0) | (y == 1)).all()):
        raise ValueError(f"y must hold labels 0 or 1, got values {torch.unique(y).tolist()}")
    y = y.to(p.dtype)
    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p))


def confidence_loss(logits: Tensor, labels: Tensor, *, reduction: str = "mean") -> Tensor:
    """BCE confidence loss from objectness logits over positive, negative and ignored anchors.

    ``BCE(sigmoid(x), y) = max(x, 0) - x y + log(1 + exp(-|x|))`` for every anchor with label
    ``y`` in {0, 1} (note 000; the RPN's objectness term, Faster R-CNN eq. 1); anchors labelled -1
    contribute nothing, neither to the sum nor to the count.

    Args:
        logits: ``[...]`` float objectness logits, finite.
        labels: ``[...]`` integer tensor of the same shape: 1 positive, 0 negative, -1 ignored.
        reduction: ``"none"``: per-anchor losses ``[...]``, 0 where ignored; ``"sum"``: their sum;
            ``"mean"`` (default, as in torch): the sum divided by the number of participating
            anchors, ``max(N_pos + N_neg, 1)``, the anchor-based normaliser. With no participating
            anchor (all ignored, or no anchors) ``"sum"`` and ``"mean"`` are 0, never NaN (torch's
            mean of nothing is NaN). For the anchor-free normaliser take ``"sum"`` and divide with
            :func:`normalize_by_boxes`.

    Returns:
        Per-anchor losses ``[...]`` or a scalar, in ``logits``' dtype and device.

    Raises:
        TypeError: if ``logits`` is not floating point or ``labels`` not an integer tensor.
        ValueError: on NaN or infinite ``logits``, labels outside {-1, 0, 1}, different shapes,
            or an unknown ``reduction``.

    Chapter: book/09_confidence_bce
    """
    check_reduction(reduction)
    check_tensor(logits, "logits", dtype="float")
    check_tensor(labels, "labels", dtype="int")
    if labels.shape != logits.shape:
        raise ValueError(
            f"labels must have the shape of logits, {list(logits.shape)}, got {list(labels.shape)}"
        )
    check_finite(logits, "logits")
    if labels.numel() and not bool(((labels >= -1) & (labels <= 1)).all()):
        raise ValueError(
            f"labels must be 1 (positive), 0 (negative) or -1 (ignored), got values "
            f"{torch.unique(labels).tolist()}"
        )
    participating = labels >= 0
    targets = labels.clamp(min=0).to(logits.dtype)  # ignored anchors get a dummy target 0
    per_anchor = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    per_anchor = torch.where(participating, per_anchor, torch.zeros_like(per_anchor))
    if reduction == "none":
        return per_anchor
    total = per_anchor.sum()
    if reduction == "sum":
        return total
    return total / max(int(participating.sum()), 1)  # anchor-based: / (N_pos + N_neg)


def normalize_by_boxes(loss_sum: Tensor, num_boxes: int) -> Tensor:
    """The anchor-free normaliser: a summed loss divided by ``max(num_boxes, 1)``.

    Note 000's rule for anchor-free detectors: the BCE summed over the positive and negative
    locations, divided by a count of objects rather than of anchors, so that adding anchors (a
    finer grid, a larger image) does not shrink every anchor's gradient. FCOS divides by the number
    of positive locations, N_pos, and YOLOX by the number of matched foreground predictions; pass
    whichever count the detector uses. An image without objects divides by 1, so the loss of its
    negatives is kept, finite.

    Args:
        loss_sum: a scalar float tensor, e.g. ``confidence_loss(..., reduction="sum")``.
        num_boxes: the count to divide by, an int >= 0 (a 0-d integer tensor is accepted).

    Returns:
        ``loss_sum / max(num_boxes, 1)``, a scalar.

    Raises:
        TypeError: if ``loss_sum`` is not a floating tensor or ``num_boxes`` not an int.
        ValueError: if ``loss_sum`` is not a scalar or ``num_boxes`` is negative.

    Chapter: book/09_confidence_bce (section "Normalising by anchors or by boxes").
    """
    check_tensor(loss_sum, "loss_sum", shape=(), dtype="float")
    num_boxes = check_int(num_boxes, "num_boxes", low=0)
    return loss_sum / max(num_boxes, 1)
