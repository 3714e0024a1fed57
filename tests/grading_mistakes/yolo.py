"""Seeded mistakes for exercises/08_yolo."""

from grading_mistakes import mistake

MISTAKES = [
    mistake(
        "responsible_predictor",
        "picks the predictor by confidence instead of IoU",
        ("            if iou > best_iou:", "            iou = predictions[row, col, 5 * b + 4].item()\n            if iou > best_iou:"),
    ),
    mistake(
        "responsible_predictor",
        "the cell of the box's top-left corner instead of its centre",
        ("cx, cy = (x1 + x2) / 2, (y1 + y2) / 2\n", "cx, cy = x1, y1\n"),
        ("        gx, gy = cx * s / width - col, cy * s / height - row", "        gx, gy = ((x1 + x2) / 2) * s / width - col, ((y1 + y2) / 2) * s / height - row"),
    ),
    mistake(
        "responsible_predictor",
        "off by one at the image border: no clamp to S - 1",
        ("col = min(math.floor(cx * s / width), s - 1)", "col = min(math.floor(cx * s / width), s)"),
        ("row = min(math.floor(cy * s / height), s - 1)", "row = min(math.floor(cy * s / height), s)"),
    ),
    mistake(
        "responsible_predictor",
        "ties go to the last predictor",
        ("            if iou > best_iou:", "            if iou >= best_iou:"),
    ),
    mistake(
        "responsible_predictor",
        "IoU with sizes in image units but centres in cells",
        ("            w, h = w * s, h * s\n", ""),
        ("gw, gh = (x2 - x1) / width * s, (y2 - y1) / height * s", "gw, gh = (x2 - x1) / width, (y2 - y1) / height"),
    ),
    mistake(
        "yolo_loss",
        "no square roots on w and h",
        (
            "(math.sqrt(gt[2]) - math.sqrt(w)) ** 2 + (math.sqrt(gt[3]) - math.sqrt(h)) ** 2",
            "(gt[2] - w) ** 2 + (gt[3] - h) ** 2",
        ),
    ),
    mistake(
        "yolo_loss",
        "lambda_noobj applied to the object cells' responsible confidence too",
        ("total += (ious[b] - confidence) ** 2  # target: the IoU", "total += lambda_noobj * (ious[b] - confidence) ** 2"),
    ),
    mistake(
        "yolo_loss",
        "confidence target 1 instead of the IoU",
        ("total += (ious[b] - confidence) ** 2  # target: the IoU", "total += (1.0 - confidence) ** 2"),
    ),
    mistake(
        "yolo_loss",
        "responsible predictor by confidence instead of IoU",
        (
            "responsible = max(range(num_boxes), key=lambda b: ious[b])  # first of ties",
            "responsible = max(range(num_boxes), key=lambda b: cell[5 * b + 4])",
        ),
    ),
    mistake(
        "yolo_loss",
        "the other predictor of an object cell left out of the no-object term",
        (
            "                    else:\n                        total += lambda_noobj * confidence**2  # target: 0",
            "                    elif responsible < 0:\n                        total += lambda_noobj * confidence**2",
        ),
    ),
]
