"""The focal loss of RetinaNet, from logits.

Focal Loss for Dense Object Detection (Lin et al., 2017), §3. With ``p = sigmoid(x)`` the
predicted probability of the class and ``y`` in ``{0, 1}`` its label, write ``p_t = p`` for
positives and ``p_t = 1 - p`` for negatives. Then

    CE(p_t) = -log(p_t)                                         (Eq. 1-2)
    FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)                 (Eq. 5)

with ``alpha_t = alpha`` for positives and ``1 - alpha`` for negatives (Eq. 3). The factor
``(1 - p_t)^gamma`` scales the loss of well-classified examples down: with ``gamma = 2`` an
example at ``p_t = 0.9`` costs 100 times less than under CE, one at ``p_t ≈ 0.968`` 1000 times
less, so the ~100k easy background anchors of an image no longer swamp the few positives.

Computing ``log(p_t)`` as ``log(sigmoid(x))`` gives ``-inf`` once the sigmoid rounds to 0 or 1
(``|x|`` above ~17 in float32, ~37 in float64); ``-log(p_t)`` is therefore taken from
``binary_cross_entropy_with_logits``, which uses ``log(1 + exp(-|x|))`` and stays finite.

The function is ``torchvision.ops.sigmoid_focal_loss`` (same arguments and defaults; a negative
``alpha`` switches the alpha-weighting off), with the inputs checked.

Shapes::

    inputs, targets            [*]   any shape, the same for both (e.g. [N, K] anchors x classes)
    sigmoid_focal_loss(...)    [*] for reduction="none", [] otherwise

Chapter: book/10_retinanet (section "The focal loss").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from coursepkg.ops.validation import check_finite, check_number, check_reduction, check_tensor

__all__ = ["sigmoid_focal_loss"]


def sigmoid_focal_loss(
    inputs: Tensor,
    targets: Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> Tensor:
    """Focal loss of every element, from logits (Eq. 5 of Focal Loss for Dense Object Detection).

    ``FL = -alpha_t (1 - p_t)^gamma log(p_t)`` with ``p = sigmoid(inputs)``,
    ``p_t = p y + (1 - p)(1 - y)`` and ``alpha_t = alpha y + (1 - alpha)(1 - y)``. ``gamma = 0``
    and ``alpha < 0`` give plain binary cross-entropy. Soft targets in ``[0, 1]`` follow the same
    formula (as in torchvision).

    Args:
        inputs: ``[*]`` float logits, one per (anchor, class).
        targets: ``[*]`` float labels in ``[0, 1]`` (1 for the anchor's class, 0 elsewhere),
            the shape of ``inputs``.
        alpha: weight of the positives, in ``[0, 1]`` (0.25 in the paper, §4); any negative
            value turns the weighting off (``alpha_t = 1``), as torchvision's ``alpha=-1``.
        gamma: focusing parameter ``>= 0`` (2 in the paper; 0 is cross-entropy). For
            ``0 < gamma < 1`` the factor ``(1 - p_t)^gamma`` has an infinite slope at ``p_t = 1``:
            a saturated logit (``p_t`` rounds to 1) then gets a NaN gradient, as in torchvision.
        reduction: ``"none"`` (the default, like torchvision: ``[*]`` per element), ``"mean"``
            over all elements or ``"sum"``. The detector normalises the sum itself, by the
            number of positive anchors (§4.1).

    Returns:
        ``[*]`` per-element losses, or a scalar.

    Raises:
        TypeError: if ``inputs`` or ``targets`` is not a floating tensor.
        ValueError: if the shapes differ, ``inputs`` has NaN or inf (naming ``inputs``),
            ``targets`` lies outside ``[0, 1]`` (naming ``targets``), ``alpha > 1``, ``gamma < 0``
            or ``reduction`` is unknown.

    Chapter: book/10_retinanet (section "The focal loss").
    """
    check_tensor(inputs, "inputs", dtype="float")
    check_tensor(targets, "targets", dtype="float")
    if inputs.shape != targets.shape:
        raise ValueError(
            f"targets must have the shape of inputs {list(inputs.shape)}, got {list(targets.shape)}"
        )
    alpha = check_number(alpha, "alpha", high=1.0)
    gamma = check_number(gamma, "gamma", low=0.0)
    check_reduction(reduction)
    check_finite(inputs, "inputs")
    if targets.numel() and not bool(((targets >= 0) & (targets <= 1)).all()):
        bad = targets[~((targets >= 0) & (targets <= 1))][0].item()
        raise ValueError(f"targets must be in [0, 1] (labels 0 or 1), got {bad}")
    return _sigmoid_focal_loss(inputs, targets, alpha, gamma, reduction)


def _sigmoid_focal_loss(
    inputs: Tensor, targets: Tensor, alpha: float, gamma: float, reduction: str
) -> Tensor:
    """:func:`sigmoid_focal_loss` without the checks, for a detector that built its own targets."""
    p = torch.sigmoid(inputs)
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")  # -log(p_t), stable
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma  # Eq. 4: the modulating factor (1 - p_t)^gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss  # Eq. 5: alpha_t
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss
