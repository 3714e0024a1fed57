"""Detection targets: the item format every dataset returns, its validator and batching.

An item is ``(image, target)`` as in torchvision's detection models:

* ``image``: ``[3, H, W]`` float32 in ``[0, 1]``;
* ``target``: a dict with ``"boxes"`` ``[G, 4]`` float32 xyxy in absolute pixels (continuous
  coordinates), ``"labels"`` ``[G]`` int64 in ``0..K-1`` and ``"image_id"`` (an int); readers of
  real datasets add fields such as ``"difficult"`` (VOC) or ``"iscrowd"`` and ``"area"`` (COCO).

Dataset labels are ``0..K-1`` everywhere. A softmax classification head needs a background class
too; it takes index 0 and the object classes move to ``1..K``, in exactly one place:
:func:`coursepkg.ops.labels.to_softmax_labels`.

Chapter: book/data_and_conventions
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from coursepkg.ops import validation


def check_target(
    target: Mapping[str, object], image_size: Sequence[int], num_classes: int | None = None
) -> None:
    """Raise a clear error unless ``target`` is a valid detection target for an image.

    The dataset side of :func:`coursepkg.ops.validation.check_target`, the one target check of the
    course, with the image size that every box must fit in.

    Args:
        target: a mapping with ``"boxes"`` (``[G, 4]`` float xyxy) and ``"labels"`` (``[G]``
            int64); other keys are allowed and not checked.
        image_size: ``(height, width)`` of the image; every box must lie inside ``[0, W] x [0, H]``.
        num_classes: if given, labels must lie in ``0..num_classes-1``; else they must be ``>= 0``.

    Raises:
        TypeError: if ``target`` is not a mapping, boxes are not a float tensor (see
            :func:`coursepkg.ops.boxes.check_boxes`) or labels are not int64.
        ValueError: if a key is missing, a shape is wrong, the lengths differ, a label is out of
            range or a box leaves the image (the message names the first offending box).

    Chapter: book/data_and_conventions
    """
    validation.check_target(
        target,
        "target",
        num_classes=num_classes,
        image_size=validation.check_image_size(image_size),
    )


class DetectionBatch(NamedTuple):
    """Result of :func:`collate_detection`; unpacks as ``images, targets = batch``."""

    images: Tensor
    """[B, 3, H, W] the stacked images."""
    targets: list[Mapping[str, object]]
    """The B targets, in order."""


def collate_detection(
    batch: Sequence[tuple[Tensor, Mapping[str, object]]],
) -> DetectionBatch:
    """Stack the images of a batch and keep its targets as a list (they differ in length).

    Use as ``DataLoader(dataset, batch_size=8, collate_fn=collate_detection)``.

    Args:
        batch: a non-empty sequence of ``(image [3, H, W], target)`` pairs, all the same size.

    Returns:
        :class:`DetectionBatch` ``(images [B, 3, H, W], targets)``, the ``B`` targets in order.

    Raises:
        ValueError: if the batch is empty or the images differ in shape (resize them first).
        TypeError: if an item is not an ``(image tensor, target)`` pair.

    Chapter: book/data_and_conventions
    """
    if len(batch) == 0:
        raise ValueError("batch must hold at least one (image, target) pair, got an empty batch")
    images, targets = [], []
    for i, item in enumerate(batch):
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise TypeError(
                f"batch[{i}] must be an (image, target) pair, got {type(item).__name__}"
            )
        image, target = item
        if not isinstance(image, Tensor):
            raise TypeError(f"batch[{i}] image must be a torch.Tensor, got {type(image).__name__}")
        images.append(image)
        targets.append(target)
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) > 1:
        raise ValueError(
            f"collate_detection needs images of one size to stack them, got shapes "
            f"{sorted(shapes)}; resize the images (and boxes) first"
        )
    return DetectionBatch(torch.stack(images), targets)
