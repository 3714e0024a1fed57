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

from coursepkg.ops.validation import check_boxes, check_image_size


def check_target(
    target: Mapping[str, object], image_size: Sequence[int], num_classes: int | None = None
) -> None:
    """Raise a clear error unless ``target`` is a valid detection target for an image.

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
    if not isinstance(target, Mapping):
        raise TypeError(f"target must be a mapping (dict), got {type(target).__name__}")
    missing = [key for key in ("boxes", "labels") if key not in target]
    if missing:
        raise ValueError(f"target is missing {missing}; it has keys {sorted(target)}")
    height, width = check_image_size(image_size)
    boxes, labels = target["boxes"], target["labels"]
    check_boxes(boxes, "target['boxes']")
    if not isinstance(labels, Tensor):
        raise TypeError(f"target['labels'] must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype != torch.int64:
        raise TypeError(f"target['labels'] must be int64, got {labels.dtype}")
    if labels.shape != (boxes.shape[0],):
        raise ValueError(
            f"target['labels'] must be [G] with G = {boxes.shape[0]} boxes, "
            f"got {list(labels.shape)}"
        )
    low = 0
    high = num_classes - 1 if num_classes is not None else None
    bad = labels < low if high is None else (labels < low) | (labels > high)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0, 0])
        allowed = ">= 0" if high is None else f"in 0..{high}"
        raise ValueError(f"target['labels'] must be {allowed}, label {i} is {int(labels[i])}")
    inside = (
        (boxes[:, 0] >= 0) & (boxes[:, 1] >= 0) & (boxes[:, 2] <= width) & (boxes[:, 3] <= height)
    )
    if not bool(inside.all()):
        i = int(torch.nonzero(~inside)[0, 0])
        raise ValueError(
            f"target['boxes'] must lie inside the image [0, {width}] x [0, {height}] "
            f"(image_size {(height, width)}), box {i} is {boxes[i].tolist()}"
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
