"""Seeded mistakes for exercises/11_iou_aware_retinanet."""

from grading_mistakes import mistake

SCORE = "    return cls_prob**alpha * iou_prob[:, None] ** (1 - alpha)"  # the cell's last line
CORNERS = "    x1, y1, x2, y2 = x - w / 2, y - h / 2, x + w / 2, y + h / 2\n"
UNION = "    union = w * h + (gx2 - gx1) * (gy2 - gy1) - inter\n"
BCE = '    bce = F.binary_cross_entropy_with_logits(iou_logits, iou_target, reduction="none")  # [N]\n'

MISTAKES = [
    mistake(
        "iou_aware_score",
        "alpha applied to the wrong factor: p^(1 - alpha) * IoU^alpha",
        (SCORE, "    return cls_prob ** (1 - alpha) * iou_prob[:, None] ** alpha"),
    ),
    mistake(
        "iou_aware_score",
        "the IoU broadcast along the classes instead of the anchors",
        (SCORE, "    return cls_prob**alpha * iou_prob[None, :] ** (1 - alpha)"),
    ),
    mistake(
        "iou_aware_score",
        "a weighted sum instead of a product of powers",
        (SCORE, "    return alpha * cls_prob + (1 - alpha) * iou_prob[:, None]"),
    ),
    mistake(
        "iou_aware_score",
        "the same exponent alpha on both factors",
        (SCORE, "    return cls_prob**alpha * iou_prob[:, None] ** alpha"),
    ),
    mistake(
        "iou_targets",
        "IoU target computed with the anchors instead of the regressed boxes",
        (CORNERS, "    x1, y1, x2, y2 = anchors.unbind(dim=1)\n"),
        (UNION, "    union = p_w * p_h + (gx2 - gx1) * (gy2 - gy1) - inter\n"),
    ),
    mistake(
        "iou_targets",
        "the centre offset not scaled by the anchor's size",
        (
            "    x, y = p_x + d_x * p_w, p_y + d_y * p_h  # the regressed box's centre\n",
            "    x, y = p_x + d_x, p_y + d_y\n",
        ),
    ),
    mistake(
        "iou_targets",
        "width and height decoded without the exponential",
        (
            "    w, h = p_w * torch.exp(d_w), p_h * torch.exp(d_h)  # and size\n",
            "    w, h = p_w * (1 + d_w), p_h * (1 + d_h)\n",
        ),
    ),
    mistake(
        "iou_targets",
        "intersection widths not clamped at 0",
        (
            "    inter_w = (torch.minimum(x2, gx2) - torch.maximum(x1, gx1)).clamp(min=0)\n"
            "    inter_h = (torch.minimum(y2, gy2) - torch.maximum(y1, gy1)).clamp(min=0)\n",
            "    inter_w = torch.minimum(x2, gx2) - torch.maximum(x1, gx1)\n"
            "    inter_h = torch.minimum(y2, gy2) - torch.maximum(y1, gy1)\n",
        ),
    ),
    mistake(
        "iou_prediction_loss",
        "loss over all anchors, not only the positives",
        ("    return bce[positive].sum() / num_pos", "    return bce.sum() / num_pos"),
    ),
    mistake(
        "iou_prediction_loss",
        "loss over the positives and the negatives (only the ignored left out)",
        ("    return bce[positive].sum() / num_pos", "    return bce[labels >= 0].sum() / num_pos"),
    ),
    mistake(
        "iou_prediction_loss",
        "divided by the number of anchors instead of the positives",
        (
            "    num_pos = max(int(positive.sum()), 1)\n",
            "    num_pos = max(len(labels), 1)\n",
        ),
    ),
    mistake(
        "iou_prediction_loss",
        "BCE of the sigmoid instead of the logits (overflows for large logits)",
        (
            BCE,
            '    bce = F.binary_cross_entropy(torch.sigmoid(iou_logits), iou_target, reduction="none")\n',
        ),
    ),
    mistake(
        "iou_prediction_loss",
        "no max(N_pos, 1): an image without positives gives 0 / 0",
        ("    num_pos = max(int(positive.sum()), 1)\n", "    num_pos = int(positive.sum())\n"),
    ),
]
