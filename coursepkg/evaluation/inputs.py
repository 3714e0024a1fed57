"""Checking and flattening the lists of per-image dicts that VOC and COCO evaluation take.

Shapes::

    one image's preds    {"boxes": [D, 4] xyxy float, "scores": [D] float, "labels": [D] int}
    one image's targets  {"boxes": [G, 4] xyxy float, "labels": [G] int,
                          "iscrowd": [G] bool or 0/1 int (optional), "area": [G] float (optional)}

Chapter: book/04_evaluation
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from coursepkg.ops.validation import check_boxes


class Images(NamedTuple):
    """A batch of images flattened into numpy arrays (detections and GTs of all images)."""

    det_image: np.ndarray  # [N] int64 image index
    det_boxes: np.ndarray  # [N, 4] float64 xyxy
    det_scores: np.ndarray  # [N] float64
    det_labels: np.ndarray  # [N] int64
    gt_image: np.ndarray  # [G] int64
    gt_boxes: np.ndarray  # [G, 4] float64 xyxy
    gt_labels: np.ndarray  # [G] int64
    gt_crowd: np.ndarray  # [G] bool
    gt_area: np.ndarray  # [G] float64: "area" if given, else the box area


def _check_field(image: Mapping, key: str, name: str, kind: str, length: int | None) -> Tensor:
    """Type, dtype and shape of one field of one image dict (cheap: no pass over the values)."""
    value = image[key]
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}[{key!r}] must be a torch.Tensor, got {type(value).__name__}")
    floating = value.is_floating_point()
    if kind == "float" and not floating:
        raise TypeError(f"{name}[{key!r}] must be a floating-point tensor, got {value.dtype}")
    if kind == "int" and (floating or value.is_complex() or value.dtype == torch.bool):
        raise TypeError(f"{name}[{key!r}] must be an integer tensor, got {value.dtype}")
    if kind == "flag" and (floating or value.is_complex()):
        raise TypeError(f"{name}[{key!r}] must be a bool or integer tensor, got {value.dtype}")
    if length is None:  # boxes
        if value.dim() != 2 or value.shape[1] != 4:
            raise ValueError(f"{name}[{key!r}] must be [N, 4], got {list(value.shape)}")
    elif value.dim() != 1 or value.shape[0] != length:
        raise ValueError(
            f"{name}[{key!r}] must be [{length}] like its boxes, got {list(value.shape)}"
        )
    return value


def _cat(tensors: list[Tensor], dtype: torch.dtype, shape: tuple[int, ...]) -> Tensor:
    """Concatenate on the CPU (one copy for all images), detached, in ``dtype``."""
    if not tensors:
        return torch.zeros(shape, dtype=dtype)
    return torch.cat(tensors).detach().cpu().to(dtype)


def _check_values(bad: Tensor, counts: list[int], names: list[str], what: str) -> None:
    """Raise naming the first image with a bad value; ``bad`` flags the concatenated values."""
    if not bool(bad.any()):
        return
    first_bad = int(torch.nonzero(bad)[0, 0])
    image = int(np.searchsorted(np.cumsum(counts), first_bad, side="right"))
    row = first_bad - sum(counts[:image])
    raise ValueError(f"{names[image]} must be {what} (row {row} is not)")


def images_from_dicts(preds: object, targets: object, first: int = 0) -> Images:
    """Validate lists of per-image prediction and target dicts and flatten them.

    Structure (types, dtypes, shapes) is checked image by image; values (finite, ``x2 >= x1``,
    labels >= 0, ...) once on the concatenation of all images, so that 5,000 images cost
    milliseconds; an error still names the first bad image (``preds[3]['boxes']``). Image ``i``
    of the lists gets index ``first + i``.
    """
    for arg, value in (("preds", preds), ("targets", targets)):
        if isinstance(value, (Mapping, str, Tensor)) or not isinstance(value, Sequence):
            kind = type(value).__name__
            raise TypeError(f"{arg} must be a list of dicts (one per image), got {kind}")
    if len(preds) != len(targets):
        raise ValueError(
            f"preds and targets must have one entry per image, got {len(preds)} and {len(targets)}"
        )
    det_boxes, det_scores, det_labels, gt_boxes, gt_labels = [], [], [], [], []
    optional: dict[str, list[Tensor]] = {"iscrowd": [], "area": []}
    given: dict[str, list[bool]] = {"iscrowd": [], "area": []}  # per image
    for i, (pred, target) in enumerate(zip(preds, targets, strict=True)):
        for arg, image, keys in (
            ("preds", pred, ("boxes", "scores", "labels")),
            ("targets", target, ("boxes", "labels")),
        ):
            if not isinstance(image, Mapping):
                raise TypeError(f"{arg}[{i}] must be a dict, got {type(image).__name__}")
            if any(k not in image for k in keys):
                missing = [k for k in keys if k not in image]
                raise ValueError(f"{arg}[{i}] is missing {missing}; it needs {list(keys)}")
        det_boxes.append(_check_field(pred, "boxes", f"preds[{i}]", "float", None))
        num = len(det_boxes[-1])
        det_scores.append(_check_field(pred, "scores", f"preds[{i}]", "float", num))
        det_labels.append(_check_field(pred, "labels", f"preds[{i}]", "int", num))
        gt_boxes.append(_check_field(target, "boxes", f"targets[{i}]", "float", None))
        num = len(gt_boxes[-1])
        gt_labels.append(_check_field(target, "labels", f"targets[{i}]", "int", num))
        for key, kind in (("iscrowd", "flag"), ("area", "float")):
            given[key].append(target.get(key) is not None)
            if given[key][-1]:
                optional[key].append(_check_field(target, key, f"targets[{i}]", kind, num))

    num_dets, num_gts = [len(b) for b in det_boxes], [len(b) for b in gt_boxes]
    boxes = {
        "preds": _cat(det_boxes, torch.float64, (0, 4)),
        "targets": _cat(gt_boxes, torch.float64, (0, 4)),
    }
    for arg, counts in (("preds", num_dets), ("targets", num_gts)):
        try:
            check_boxes(boxes[arg], f"{arg} boxes")
        except ValueError:  # find the image, and let check_boxes name it
            for i, chunk in enumerate(boxes[arg].split(counts)):
                check_boxes(chunk, f"{arg}[{i}]['boxes']")
            raise
    scores = _cat(det_scores, torch.float64, (0,))
    names = [f"preds[{i}]['scores']" for i in range(len(preds))]
    _check_values(~torch.isfinite(scores), num_dets, names, "finite")
    labels = {
        "preds": _cat(det_labels, torch.int64, (0,)),
        "targets": _cat(gt_labels, torch.int64, (0,)),
    }
    for arg, counts in (("preds", num_dets), ("targets", num_gts)):
        names = [f"{arg}[{i}]['labels']" for i in range(len(preds))]
        _check_values(labels[arg] < 0, counts, names, "a class id >= 0")

    # Optional fields. Where an image does not give them: not crowd, and the box's area.
    b = boxes["targets"]
    gt_crowd = torch.zeros(len(b), dtype=torch.bool)  # [G]
    gt_area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # [G]
    for key, out in (("iscrowd", gt_crowd), ("area", gt_area)):
        if not optional[key]:
            continue
        values = _cat(optional[key], torch.float64, (0,))
        counts = [n for n, g in zip(num_gts, given[key], strict=True) if g]
        names = [f"targets[{i}][{key!r}]" for i, g in enumerate(given[key]) if g]
        if key == "iscrowd":
            _check_values((values != 0) & (values != 1), counts, names, "0 or 1")
        else:
            _check_values(~(torch.isfinite(values) & (values >= 0)), counts, names, "finite, >= 0")
        per_gt = torch.repeat_interleave(torch.tensor(given[key]), torch.tensor(num_gts))  # [G]
        out[per_gt] = values.to(out.dtype)

    image = np.arange(first, first + len(preds))
    return Images(
        det_image=np.repeat(image, num_dets),
        det_boxes=boxes["preds"].numpy(),
        det_scores=scores.numpy(),
        det_labels=labels["preds"].numpy(),
        gt_image=np.repeat(image, num_gts),
        gt_boxes=boxes["targets"].numpy(),
        gt_labels=labels["targets"].numpy(),
        gt_crowd=gt_crowd.numpy(),
        gt_area=gt_area.numpy(),
    )
