"""Seeded mistakes for exercises/03_nms."""

from grading_mistakes import mistake

MISTAKES = [
    mistake(
        "nms",
        "suppresses boxes at exactly the threshold (>= instead of >)",
        ("ious[i] > iou_threshold", "ious[i] >= iou_threshold"),
    ),
    mistake(
        "nms",
        "forgets to sort by score",
        (
            "order = torch.sort(scores, descending=True, stable=True).indices",
            "order = torch.arange(len(scores))",
        ),
    ),
    mistake(
        "nms",
        "suppressed boxes suppress others too",
        (
            "        if suppressed[i]:\n            continue\n        keep.append(i)\n",
            "        if not suppressed[i]:\n            keep.append(i)\n",
        ),
    ),
    mistake(
        "nms",
        "returns the kept indices in input order",
        (
            "return torch.tensor(keep, dtype=torch.int64)",
            "return torch.tensor(sorted(keep), dtype=torch.int64)",
        ),
    ),
    mistake(
        "nms",
        "breaks score ties by the later box",
        (
            "order = torch.sort(scores, descending=True, stable=True).indices",
            "order = (len(scores) - 1) - torch.sort(scores.flip(0), descending=True, stable=True).indices",
        ),
    ),
    mistake(
        "nms",
        "the notes' overlap (intersection over the other box's area) instead of IoU",
        (
            "ious = box_iou(boxes, boxes)  # [N, N]",
            "top_left = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])\n"
            "    bottom_right = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])\n"
            "    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)  # [N, N]\n"
            "    ious = inter / ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=1e-9)",
        ),
    ),
    mistake(
        "batched_nms",
        "ignores the classes",
        (
            "    keep = []\n    for label in torch.unique(labels):",
            "    return course_nms.nms(boxes, scores, iou_threshold)\n    keep = []\n    for label in torch.unique(labels):",
        ),
    ),
    mistake(
        "batched_nms",
        "returns indices into each class's subset",
        ("keep.append(members[kept])", "keep.append(kept)"),
    ),
    mistake(
        "batched_nms",
        "concatenates the classes without sorting by score",
        ("keep = torch.cat(keep).sort().values if keep", "keep = torch.cat(keep) if keep"),
        (
            "    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]",
            "    return keep",
        ),
    ),
    mistake(
        "batched_nms",
        "the offset trick with a fixed offset of 1000 pixels per class",
        (
            "    keep = []\n    for label in torch.unique(labels):",
            "    return course_nms.nms(boxes + labels[:, None] * 1000.0, scores, iou_threshold)\n    keep = []\n    for label in torch.unique(labels):",
        ),
    ),
    mistake(
        "nms",
        "int32 indices",
        (
            "return torch.tensor(keep, dtype=torch.int64)",
            "return torch.tensor(keep, dtype=torch.int32)",
        ),
    ),
    mistake(
        "nms",
        "zeroes the scores of suppressed boxes in the caller's tensor",
        (
            "        suppressed |= ious[i] > iou_threshold",
            "        scores[(ious[i] > iou_threshold) & ~suppressed] = 0.0\n        suppressed |= ious[i] > iou_threshold",
        ),
    ),
    mistake(
        "nms",
        "no boxes give an empty float tensor",
        (
            "return torch.tensor(keep, dtype=torch.int64)",
            "return torch.tensor(keep, dtype=torch.int64) if keep else torch.tensor([])",
        ),
    ),
    mistake(
        "batched_nms",
        "int32 indices",
        (
            "    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]",
            "    return keep[torch.sort(scores[keep], descending=True, stable=True).indices].int()",
        ),
    ),
    mistake(
        "batched_nms",
        "no boxes give an empty float tensor",
        ("else torch.zeros(0, dtype=torch.int64)", "else torch.zeros(0)"),
    ),
    mistake(
        "batched_nms",
        "the offset trick applied to the caller's boxes in place",
        (
            "    keep = []\n    for label in torch.unique(labels):",
            "    if len(boxes):\n"
            "        boxes += labels[:, None].to(boxes.dtype) * (boxes.max() + 1)  # classes apart\n"
            "    return course_nms.nms(boxes, scores, iou_threshold)\n"
            "    keep = []\n    for label in torch.unique(labels):",
        ),
    ),
]
