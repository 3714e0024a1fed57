"""The one label shift of the course: dataset labels ``0..K-1`` to softmax labels ``1..K``.

Dataset labels are ``0..K-1`` everywhere. A softmax classification head (R-CNN, Fast R-CNN, the
Faster R-CNN box head) needs a background class as well, and puts it at index 0, as torchvision
and the papers do; its foreground classes are therefore ``1..K``. Sigmoid heads (RetinaNet, FCOS)
have ``K`` outputs and need no shift: their target for a location is a one-hot row, all zeros
for background (:func:`one_hot_labels`). This module is the only place where the shift happens.

Shapes::

    labels                          [N] integer, any shape works (elementwise)
    one_hot_labels(labels, K)       [..., K], a row of zeros where the label is -1

Chapter: book/data_and_conventions (section "Images, targets and labels").
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["to_softmax_labels", "from_softmax_labels", "one_hot_labels"]


def to_softmax_labels(labels: Tensor) -> Tensor:
    """Dataset labels ``0..K-1`` to softmax-head labels ``1..K`` (background takes index 0).

    Args:
        labels: ``[...]`` integer tensor of dataset labels (>= 0).

    Returns:
        ``labels + 1``, same shape, dtype and device.

    Raises:
        TypeError: if ``labels`` is not an integer tensor.
        ValueError: if a label is negative.

    Chapter: book/data_and_conventions
    """
    _check_integer_labels(labels, "labels")
    if labels.numel() and bool((labels < 0).any()):
        raise ValueError(f"labels must be >= 0 (dataset labels), got min {int(labels.min())}")
    return _to_softmax_labels(labels)


def _to_softmax_labels(labels: Tensor) -> Tensor:
    """:func:`to_softmax_labels` on labels already checked (its check costs a host sync on a GPU)."""
    return labels + 1


def from_softmax_labels(labels: Tensor) -> Tensor:
    """The inverse of :func:`to_softmax_labels`: softmax labels ``1..K`` back to ``0..K-1``.

    Background (index 0) has no dataset label: drop background predictions before converting.

    Args:
        labels: ``[...]`` integer tensor with values ``>= 1``.

    Returns:
        ``labels - 1``, same shape, dtype and device.

    Raises:
        TypeError: if ``labels`` is not an integer tensor.
        ValueError: if a label is 0 (background) or negative.

    Chapter: book/data_and_conventions
    """
    _check_integer_labels(labels, "labels")
    if labels.numel() and bool((labels < 1).any()):
        raise ValueError(
            f"labels must be >= 1 (0 is the background, which has no dataset label), "
            f"got min {int(labels.min())}"
        )
    return labels - 1


def _check_integer_labels(labels: object, name: str) -> None:
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {labels.dtype}")


def one_hot_labels(labels: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """One-hot rows of dataset labels ``0..K-1``; a label of -1 (background) gives a row of zeros.

    The classification target of a sigmoid head (RetinaNet, FCOS): 1 at ``(location, its class)``,
    0 everywhere else. Unlike ``torch.nn.functional.one_hot``, which reads the labels' minimum
    and maximum back to the host to check them (two host-device synchronisations on a GPU), the
    rows come from one comparison with ``arange(K)``; the detectors check their targets once per
    batch and call the unchecked :func:`_one_hot_labels` in the training step.

    Args:
        labels: ``[...]`` integer tensor with values in ``-1..K-1``.
        num_classes: ``K``.
        dtype: dtype of the result (``torch.bool`` gives a mask).

    Returns:
        ``[..., K]`` tensor of 0 and 1, on the labels' device.

    Raises:
        TypeError: if ``labels`` is not an integer tensor.
        ValueError: if ``num_classes < 1`` or a label is outside ``-1..K-1``.

    Chapter: book/10_retinanet (section "The loss, normalised by the positives").
    """
    _check_integer_labels(labels, "labels")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    if labels.numel() and bool(((labels < -1) | (labels >= num_classes)).any()):
        bad = labels[(labels < -1) | (labels >= num_classes)][0]
        raise ValueError(
            f"labels must be in -1..{num_classes - 1} (-1: background), got {int(bad)}"
        )
    return _one_hot_labels(labels, num_classes, dtype)


def _one_hot_labels(labels: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """:func:`one_hot_labels` without the check: no host synchronisation."""
    classes = torch.arange(num_classes, device=labels.device)  # [K]
    return (labels[..., None] == classes).to(dtype)  # [..., K]
