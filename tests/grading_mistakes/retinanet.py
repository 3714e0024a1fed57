"""Seeded mistakes for exercises/10_retinanet."""

from grading_mistakes import mistake

MISTAKES = [
    mistake(
        "focal_loss",
        "log of the sigmoid computed naively (inf at extreme logits)",
        (
            '    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # -log(p_t)\n'
            "    p_t = p * targets + (1 - p) * (1 - targets)\n",
            "    p_t = p * targets + (1 - p) * (1 - targets)\n    ce = -torch.log(p_t)\n",
        ),
    ),
    mistake(
        "focal_loss",
        "alpha applied to the negatives, 1 - alpha to the positives",
        (
            "alpha_t = alpha * targets + (1 - alpha) * (1 - targets)",
            "alpha_t = (1 - alpha) * targets + alpha * (1 - targets)",
        ),
    ),
    mistake(
        "focal_loss",
        "modulating factor on p instead of 1 - p_t",
        ("return alpha_t * (1 - p_t) ** gamma * ce", "return alpha_t * (1 - p) ** gamma * ce"),
    ),
    mistake(
        "focal_loss",
        "no alpha weighting",
        ("return alpha_t * (1 - p_t) ** gamma * ce", "return (1 - p_t) ** gamma * ce"),
    ),
    mistake(
        "focal_loss",
        "summed instead of per element",
        ("return alpha_t * (1 - p_t) ** gamma * ce", "return (alpha_t * (1 - p_t) ** gamma * ce).sum()"),
    ),
    mistake(
        "label_retina_anchors",
        ">= instead of < at the 0.4 boundary",
        ("labels[best_iou < 0.4] = 0", "labels[best_iou <= 0.4] = 0"),
    ),
    mistake(
        "label_retina_anchors",
        "forgets the low-quality matches",
        ("    labels[is_best.any(dim=0)] = 1\n", ""),
    ),
    mistake(
        "label_retina_anchors",
        "the ignore band labelled negative",
        ("labels[best_iou < 0.4] = 0", "labels[best_iou < 0.5] = 0"),
    ),
    mistake(
        "label_retina_anchors",
        "positive threshold > 0.5 instead of >= 0.5",
        ("labels[best_iou >= 0.5] = 1", "labels[best_iou > 0.5] = 1"),
    ),
    mistake(
        "label_retina_anchors",
        "matched ground truth kept for negative and ignored anchors",
        (
            "matched_gt = torch.where(labels == 1, best_gt, torch.full_like(best_gt, -1))",
            "matched_gt = best_gt",
        ),
    ),
    mistake(
        "label_retina_anchors",
        "negatives set after the low-quality positives",
        ("    labels[best_iou < 0.4] = 0\n", ""),
        (
            "    matched_gt = torch.where(",
            "    labels[best_iou < 0.4] = 0\n    matched_gt = torch.where(",
        ),
    ),
]
