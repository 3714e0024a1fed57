"""Seeded mistakes for exercises/12_iou_losses."""

from grading_mistakes import mistake

MISTAKES = [
    mistake(
        "giou_loss",
        "enclosing box taken as the intersection",
        ("    enclosing = enc_w * enc_h\n", "    enclosing = inter\n"),
    ),
    mistake(
        "giou_loss",
        "penalty misses the union term: |C| / |C| instead of (|C| - U) / |C|",
        (
            "return 1 - iou + (enclosing - union) / (enclosing + eps)",
            "return 1 - iou + enclosing / (enclosing + eps)",
        ),
    ),
    mistake(
        "giou_loss",
        "no eps: identical points give 0 / 0 = nan",
        ("    iou = inter / (union + eps)\n", "    iou = inter / union\n"),
        (
            "(enclosing - union) / (enclosing + eps)",
            "(enclosing - union) / enclosing",
        ),
    ),
    mistake(
        "giou_loss",
        "union without subtracting the intersection",
        (
            "union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter\n    iou = inter / (union + eps)\n    enc_w",
            "union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g)\n    iou = inter / (union + eps)\n    enc_w",
        ),
    ),
    mistake(
        "giou_loss",
        "intersection widths not clamped at 0",
        (
            "    inter_w = (torch.minimum(x2, x2g) - torch.maximum(x1, x1g)).clamp(min=0)\n"
            "    inter_h = (torch.minimum(y2, y2g) - torch.maximum(y1, y1g)).clamp(min=0)\n"
            "    inter = inter_w * inter_h\n"
            "    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter\n"
            "    iou = inter / (union + eps)\n"
            "    enc_w",
            "    inter_w = torch.minimum(x2, x2g) - torch.maximum(x1, x1g)\n"
            "    inter_h = torch.minimum(y2, y2g) - torch.maximum(y1, y1g)\n"
            "    inter = inter_w * inter_h\n"
            "    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter\n"
            "    iou = inter / (union + eps)\n"
            "    enc_w",
        ),
    ),
    mistake(
        "diou_loss",
        "centre distance not squared",
        (
            "    rho2 = ((x1 + x2) / 2 - (x1g + x2g) / 2) ** 2 + ((y1 + y2) / 2 - (y1g + y2g) / 2) ** 2\n",
            "    rho2 = (((x1 + x2) / 2 - (x1g + x2g) / 2) ** 2 + ((y1 + y2) / 2 - (y1g + y2g) / 2) ** 2) ** 0.5\n",
        ),
    ),
    mistake(
        "diou_loss",
        "the union's area instead of the enclosing box's squared diagonal",
        ("    c2 = enc_w**2 + enc_h**2  # its squared diagonal\n", "    c2 = union\n"),
    ),
    mistake(
        "diou_loss",
        "diagonal of the intersection instead of the enclosing box",
        (
            "    c2 = enc_w**2 + enc_h**2  # its squared diagonal\n",
            "    c2 = inter_w**2 + inter_h**2\n",
        ),
    ),
    mistake(
        "diou_loss",
        "diagonal not squared",
        (
            "    c2 = enc_w**2 + enc_h**2  # its squared diagonal\n",
            "    c2 = (enc_w**2 + enc_h**2) ** 0.5\n",
        ),
    ),
    mistake(
        "diou_loss",
        "no eps: identical points give 0 / 0 = nan",
        ("    iou = inter / (union + eps)\n    rho2", "    iou = inter / union\n    rho2"),
        ("return 1 - iou + rho2 / (c2 + eps)", "return 1 - iou + rho2 / c2"),
    ),
]
