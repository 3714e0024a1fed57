"""The detector contract: the two methods every model in the course implements.

Every chapter's model, from the sliding-window baseline to FCOS, is an ``nn.Module`` that
subclasses :class:`Detector` and implements exactly two methods. The training engine
(:mod:`coursepkg.engine.training`), the evaluation helpers and the plots rely on nothing else, so a new
detector plugs into all of them by writing these two methods::

    losses(images, targets) -> dict[str, Tensor]     # training: one finite scalar per term
    detect(images)          -> list[dict[str, Tensor]]  # inference: boxes, scores, labels

There are no hidden mode flags: ``losses`` always returns losses and ``detect`` always returns
detections, whatever ``model.training`` says. (``model.train()`` / ``model.eval()`` still switch
dropout and batch norm, as everywhere in PyTorch; the engine calls them for you.) ``forward`` is
left to each model, typically for its raw head outputs; the engine never calls it.

Shapes::

    images                 [B, 3, H, W]  float, one batch of equally sized images
    targets[i]["boxes"]    [G_i, 4]      float32 xyxy, absolute pixels of the input image
    targets[i]["labels"]   [G_i]         int64 in 0..K-1
    losses(...)[name]      []            finite float scalar; the engine sums all terms
    detect(...)[i]["boxes"]  [D_i, 4]    float xyxy in input pixels
    detect(...)[i]["scores"] [D_i]       float, sorted in decreasing order
    detect(...)[i]["labels"] [D_i]       int64 in 0..K-1

Targets follow torchvision's convention (a list with one dict per image; extra keys such as
``"image_id"`` are allowed and ignored). Detections are in the format that
:meth:`coursepkg.evaluation.MeanAveragePrecision.update` takes, so evaluating a model is
``metric.update(model.detect(images), targets)``. An image without objects has ``G_i = 0``
(``boxes`` of shape ``[0, 4]``); an image without detections has ``D_i = 0``.

:func:`check_targets`, :func:`check_losses` and :func:`check_detections` validate each side of
the contract at the public boundary; the engine calls them on every batch, and a chapter can call
them while it builds a model step by step.

Chapter: book/training (section "The detector contract"); every chapter that trains a detector.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from coursepkg.ops.validation import (
    _all_true,
    _target_looks_valid,
    check_finite,
    check_target,
    check_tensor,
)

__all__ = ["Detector", "check_detections", "check_images", "check_losses", "check_targets"]


class Detector(nn.Module, ABC):
    """Base class of every detector in the course: an ``nn.Module`` with ``losses`` and ``detect``.

    Subclasses implement both abstract methods (and usually ``forward`` for their raw outputs).
    Instantiating a subclass that misses one of them is a ``TypeError``.

    Example::

        class MyDetector(Detector):
            def losses(self, images, targets):
                ...
                return {"cls": cls_loss, "box": box_loss}

            def detect(self, images):
                ...
                return [{"boxes": b, "scores": s, "labels": l} for b, s, l in ...]

    Chapter: book/training (section "The detector contract").
    """

    @abstractmethod
    def losses(self, images: Tensor, targets: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        """The training losses of one batch.

        Args:
            images: [B, 3, H, W] float images on the model's device.
            targets: B dicts with ``"boxes"`` [G_i, 4] float32 xyxy pixels and ``"labels"``
                [G_i] int64 in 0..K-1, on the model's device.

        Returns:
            A non-empty dict from term name (``"cls"``, ``"box"``, ...) to a finite float scalar
            tensor (shape ``[]``) attached to the autograd graph, with the same names at every
            step (a zero tensor for a term a batch does not have). The engine backpropagates
            their sum and logs each term; each term carries its paper's weight already.
        """

    @abstractmethod
    def detect(self, images: Tensor) -> list[dict[str, Tensor]]:
        """Detections for a batch of images, after score thresholding and NMS.

        Args:
            images: [B, 3, H, W] float images on the model's device.

        Returns:
            B dicts, one per image, with ``"boxes"`` [D_i, 4] float xyxy in input pixels,
            ``"scores"`` [D_i] float sorted in decreasing order and ``"labels"`` [D_i] int64 in
            0..K-1. Callers run it under ``torch.no_grad()`` and in ``eval()`` mode.
        """


def check_images(images: object) -> None:
    """Check that ``images`` is a float ``[B, 3, H, W]`` tensor, as :meth:`Detector.losses` takes.

    Raises:
        TypeError: if ``images`` is not a floating ``torch.Tensor``.
        ValueError: if its shape is not ``[B, 3, H, W]``.
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {list(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating tensor, got {images.dtype}")


def _check_batch_list(name: str, items: object, batch_size: int) -> None:
    if not isinstance(items, Sequence) or isinstance(items, str | bytes):
        raise TypeError(
            f"{name} must be a list with one dict per image, got {type(items).__name__}"
        )
    if len(items) != batch_size:
        raise ValueError(
            f"{name} must have one dict per image: expected {batch_size}, got {len(items)}"
        )


def check_targets(
    targets: Sequence[Mapping[str, Tensor]],
    batch_size: int,
    *,
    num_classes: int | None = None,
    positive_size: bool = False,
) -> None:
    """Validate the ground truth of one batch against the contract.

    Args:
        targets: ``batch_size`` dicts with ``"boxes"`` [G_i, 4] float xyxy pixels and
            ``"labels"`` [G_i] int64; other keys are ignored.
        batch_size: the number of images B.
        num_classes: K, if known; labels must then be below it.
        positive_size: also refuse zero-width or zero-height boxes (a detector that regresses
            towards them would take ``log(0)``).

    Raises:
        TypeError: if ``targets`` is not a list of dicts, boxes are not floating or labels not int64.
        ValueError: on a wrong length, a missing key, a wrong shape, NaN/inf, x2 < x1 or y2 < y1,
            or a label outside 0..K-1. The message names the offending ``targets[i][key]``
            (:func:`coursepkg.ops.validation.check_target`, the one target check of the course).

    Chapter: book/training (section "The detector contract").
    """
    _check_batch_list("targets", targets, batch_size)
    flags = [
        _target_looks_valid(target, num_classes=num_classes, positive_size=positive_size)
        for target in targets
    ]
    if _all_true(flags):  # one host synchronisation for the whole batch
        return
    for i, target in enumerate(targets):  # something is wrong: name the first problem
        check_target(target, f"targets[{i}]", num_classes=num_classes, positive_size=positive_size)


def check_detections(
    detections: Sequence[Mapping[str, Tensor]], batch_size: int, *, num_classes: int | None = None
) -> None:
    """Validate the output of :meth:`Detector.detect` against the contract.

    Args:
        detections: what ``detect`` returned for a batch of ``batch_size`` images.
        batch_size: the number of images B that went in.
        num_classes: K, if known; labels must then be below it.

    Raises:
        TypeError: if it is not a list of dicts of tensors, boxes or scores are not floating, or
            labels are not int64.
        ValueError: on a wrong number of dicts, a missing key, wrong or inconsistent shapes,
            NaN/inf, x2 < x1 or y2 < y1, labels outside 0..K-1, or scores that are not sorted in
            decreasing order. The message names the offending ``detections[i][key]``.

    Chapter: book/training (section "The detector contract").
    """
    _check_batch_list("detections", detections, batch_size)
    for i, det in enumerate(detections):
        name = f"detections[{i}]"
        missing = [
            k for k in ("boxes", "scores", "labels") if isinstance(det, Mapping) and k not in det
        ]
        if missing:
            raise ValueError(f"{name} is missing key(s) {missing}; it has {sorted(det)}")
        check_target(det, name, num_classes=num_classes)  # boxes and labels
        count = det["boxes"].shape[0]
        scores = check_tensor(det["scores"], f"{name}['scores']", shape=(count,), dtype="float")
        check_finite(scores, f"{name}['scores']")
        if (scores[1:] > scores[:-1]).any():
            raise ValueError(f"{name}['scores'] must be sorted in decreasing order")


def check_losses(losses: Mapping[str, Tensor], *, step: int | None = None) -> dict[str, float]:
    """Validate the output of :meth:`Detector.losses` and return its values as Python floats.

    Args:
        losses: what ``losses`` returned: a non-empty dict from name to a float scalar tensor.
        step: the training step, quoted in error messages when given.

    Returns:
        ``{name: float(value)}`` in the same order, for logging (one device synchronisation).

    Raises:
        TypeError: if ``losses`` is not a dict, a key is not a string, or a value is not a
            floating scalar tensor.
        ValueError: if the dict is empty.
        FloatingPointError: if a term is NaN or inf; the message lists every term's value.

    Chapter: book/training (section "The detector contract").
    """
    where = f" at step {step}" if step is not None else ""
    if not isinstance(losses, Mapping):
        raise TypeError(
            f"losses() must return a dict of scalar tensors{where}, got {type(losses).__name__}"
        )
    if not losses:
        raise ValueError(
            f"losses() returned an empty dict{where}; it must return at least one loss term"
        )
    for key, value in losses.items():
        if not isinstance(key, str):
            raise TypeError(f"losses() keys must be strings{where}, got {key!r}")
        if not isinstance(value, Tensor):
            raise TypeError(
                f"losses()[{key!r}] must be a scalar tensor{where}, got {type(value).__name__}"
            )
        if value.dim() != 0:
            raise TypeError(
                f"losses()[{key!r}] must be a scalar tensor (shape []){where}, got shape "
                f"{list(value.shape)}; reduce it with .sum() or .mean() inside losses()"
            )
        if not value.is_floating_point():
            raise TypeError(
                f"losses()[{key!r}] must be a floating tensor{where}, got {value.dtype}"
            )
    values = torch.stack([value.detach().float() for value in losses.values()]).tolist()
    floats = dict(zip(losses.keys(), values, strict=True))
    bad = [key for key, value in floats.items() if not math.isfinite(value)]
    if bad:
        listing = ", ".join(f"{key}={value:.6g}" for key, value in floats.items())
        raise FloatingPointError(f"non-finite loss {bad}{where}: {listing}")
    return floats
