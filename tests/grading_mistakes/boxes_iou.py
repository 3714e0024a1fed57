"""Seeded mistakes for exercises/02_boxes_iou."""

from grading_mistakes import mistake

MISTAKES = [
    mistake(
        "box_convert",
        "xywh treated as xyxy",
        ("x1, y1, x2, y2 = a, b, a + c, b + d", "x1, y1, x2, y2 = a, b, c, d"),
    ),
    mistake(
        "box_convert",
        "cxcywh corners at the centre plus/minus the full size",
        ("a - c / 2, b - d / 2, a + c / 2, b + d / 2", "a - c, b - d, a + c, b + d"),
    ),
    mistake(
        "box_convert",
        "xyxy to xywh keeps the second corner",
        ("out = (x1, y1, x2 - x1, y2 - y1)", "out = (x1, y1, x2, y2)"),
    ),
    mistake(
        "box_convert",
        "modifies the input boxes in place",
        (
            "a, b, c, d = boxes.unbind(dim=1)",
            "boxes *= 1.0\n    a, b, c, d = boxes.unbind(dim=1)\n    boxes[:, 0] += 0.0 * a + 1",
        ),
    ),
    mistake(
        "box_convert",
        "accepts unknown format names",
        ("    if in_fmt not in formats or out_fmt not in formats:\n", "    if False:\n"),
    ),
    mistake(
        "iou",
        "no clamping of the intersection at zero",
        ("max(0.0, min(ax2, bx2) - max(ax1, bx1))", "min(ax2, bx2) - max(ax1, bx1)"),
        ("max(0.0, min(ay2, by2) - max(ay1, by1))", "min(ay2, by2) - max(ay1, by1)"),
    ),
    mistake(
        "iou",
        "clamps the product instead of each side",
        ("max(0.0, min(ax2, bx2) - max(ax1, bx1))", "min(ax2, bx2) - max(ax1, bx1)"),
        ("max(0.0, min(ay2, by2) - max(ay1, by1))", "min(ay2, by2) - max(ay1, by1)"),
        ("inter = inter_w * inter_h", "inter = max(0.0, inter_w * inter_h)"),
    ),
    mistake(
        "iou",
        "the notes' +1 convention where continuous coordinates are asked",
        ("max(0.0, min(ax2, bx2) - max(ax1, bx1))", "max(0.0, min(ax2, bx2) - max(ax1, bx1) + 1)"),
        ("max(0.0, min(ay2, by2) - max(ay1, by1))", "max(0.0, min(ay2, by2) - max(ay1, by1) + 1)"),
        (
            "(ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1)",
            "(ax2 - ax1 + 1) * (ay2 - ay1 + 1) + (bx2 - bx1 + 1) * (by2 - by1 + 1)",
        ),
    ),
    mistake(
        "iou",
        "the union counts the overlap twice",
        ("(by2 - by1) - inter", "(by2 - by1)"),
    ),
    mistake(
        "iou",
        "divides by zero for two zero-area boxes",
        ("return inter / union if union > 0 else 0.0", "return inter / union"),
    ),
    mistake(
        "iou_pairwise",
        "no clamping of the intersection at zero",
        ("sides = (bottom_right - top_left).clamp(min=0)", "sides = bottom_right - top_left"),
    ),
    mistake(
        "iou_pairwise",
        "the notes' +1 convention where continuous coordinates are asked",
        (
            "area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])",
            "area1 = (boxes1[:, 2] - boxes1[:, 0] + 1) * (boxes1[:, 3] - boxes1[:, 1] + 1)",
        ),
        (
            "area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])",
            "area2 = (boxes2[:, 2] - boxes2[:, 0] + 1) * (boxes2[:, 3] - boxes2[:, 1] + 1)",
        ),
        ("(bottom_right - top_left).clamp(min=0)", "(bottom_right - top_left + 1).clamp(min=0)"),
    ),
    mistake(
        "iou_pairwise",
        "xywh boxes treated as xyxy (the sizes read as corners)",
        (
            "    area1 = ",
            "    boxes1 = torch.cat([boxes1[:, :2], boxes1[:, 2:] - boxes1[:, :2]], dim=1)\n    boxes2 = torch.cat([boxes2[:, :2], boxes2[:, 2:] - boxes2[:, :2]], dim=1)\n    area1 = ",
        ),
    ),
    mistake(
        "iou_pairwise",
        "NaN for two zero-area boxes (unguarded division)",
        ("return inter / union.clamp(min=torch.finfo(union.dtype).tiny)", "return inter / union"),
    ),
    mistake(
        "iou_pairwise",
        "a float32 result whatever the boxes' dtype",
        (
            "return inter / union.clamp(min=torch.finfo(union.dtype).tiny)",
            "return (inter / union.clamp(min=torch.finfo(union.dtype).tiny)).float()",
        ),
    ),
    mistake(
        "iou_pairwise",
        "the transposed [M, N] matrix",
        (
            "return inter / union.clamp(min=torch.finfo(union.dtype).tiny)",
            "return (inter / union.clamp(min=torch.finfo(union.dtype).tiny)).T",
        ),
    ),
    mistake(
        "box_convert",
        "returns the input tensor itself when the formats are equal",
        (
            "    a, b, c, d = boxes.unbind(dim=1)",
            "    if in_fmt == out_fmt:\n        return boxes\n    a, b, c, d = boxes.unbind(dim=1)",
        ),
    ),
    mistake(
        "box_convert",
        "returns a view of the input when the formats are equal",
        (
            "    a, b, c, d = boxes.unbind(dim=1)",
            "    if in_fmt == out_fmt:\n        return boxes.view(-1, 4)\n    a, b, c, d = boxes.unbind(dim=1)",
        ),
    ),
    mistake(
        "box_convert",
        "float64 boxes come back as float32",
        ("return torch.stack(out, dim=1)", "return torch.stack(out, dim=1).float()"),
    ),
    mistake(
        "box_convert",
        "no boxes give a [0] tensor instead of [0, 4]",
        (
            "    a, b, c, d = boxes.unbind(dim=1)",
            "    if len(boxes) == 0:\n        return boxes.new_zeros(0)\n    a, b, c, d = boxes.unbind(dim=1)",
        ),
    ),
]
