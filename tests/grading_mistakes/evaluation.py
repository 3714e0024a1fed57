"""Seeded mistakes for exercises/04_evaluation."""

from grading_mistakes import mistake

MISTAKES = [
    mistake(
        "match_detections",
        "a ground truth matched twice",
        ("if iou >= iou_threshold and gt not in claimed:", "if iou >= iou_threshold:"),
    ),
    mistake(
        "match_detections",
        "forgets to sort by score",
        (
            "order = torch.sort(pred_scores, descending=True, stable=True).indices",
            "order = torch.arange(len(pred_scores))",
        ),
    ),
    mistake(
        "match_detections",
        "an IoU exactly at the threshold counts as a miss (> instead of >=)",
        (
            "if iou >= iou_threshold and gt not in claimed:",
            "if iou > iou_threshold and gt not in claimed:",
        ),
    ),
    mistake(
        "match_detections",
        "falls back to the best free ground truth (COCO's rule, not VOC's)",
        (
            "    best_iou, best_gt = box_iou(pred_boxes[order], gt_boxes).max(dim=1)  # [D] each\n",
            "    ious = box_iou(pred_boxes[order], gt_boxes)\n"
            "    best_iou, best_gt = ious.max(dim=1)  # [D] each\n",
        ),
        (
            "        if iou >= iou_threshold and gt not in claimed:\n",
            "        free = [j for j in range(len(gt_boxes)) if j not in claimed]\n"
            "        if free:\n"
            "            gt = max(free, key=lambda j: float(ious[i, j]))\n"
            "            iou = float(ious[i, gt])\n"
            "        if iou >= iou_threshold and gt not in claimed:\n",
        ),
    ),
    mistake(
        "ap_all_point",
        "no monotone precision envelope",
        ("    p = p.flip(0).cummax(0).values.flip(0)  # the envelope: p[n] = max(p[n:])\n", ""),
    ),
    mistake(
        "ap_all_point",
        "the envelope taken from the left",
        ("p = p.flip(0).cummax(0).values.flip(0)", "p = p.cummax(0).values"),
    ),
    mistake(
        "ap_all_point",
        "no recall-0 sentinel: the first rectangle is lost",
        (
            "r = torch.cat([recall.new_zeros(1), recall, recall.new_ones(1)])",
            "r = torch.cat([recall[:1], recall, recall.new_ones(1)])",
        ),
    ),
    mistake(
        "ap_all_point",
        "trapezoids instead of rectangles",
        ("return float(((r[1:] - r[:-1]) * p[1:]).sum())", "return float(torch.trapezoid(p, r))"),
    ),
    mistake(
        "ap_11_point",
        "averages over 10 instead of 11 points",
        ("return total / 11", "return total / 10"),
    ),
    mistake(
        "ap_11_point",
        "leaves out the recall level 1.0",
        (
            "torch.linspace(0, 1, 11, dtype=torch.float64)",
            "torch.linspace(0, 0.9, 10, dtype=torch.float64)",
        ),
    ),
    mistake(
        "ap_11_point",
        "the precision of the first point that reaches the level, not the best",
        ("float(precision[reached].max())", "float(precision[reached][0])"),
    ),
    mistake(
        "ap_11_point",
        "a level counts only when recall strictly exceeds it",
        ("reached = recall >= level", "reached = recall > level"),
    ),
    mistake(
        "mean_average_precision",
        "ignores the labels when matching",
        ('gt_boxes = target["boxes"][target["labels"] == label]', 'gt_boxes = target["boxes"]'),
    ),
    mistake(
        "mean_average_precision",
        "ranks detections image by image, not across images",
        (
            "ranking = torch.sort(torch.cat(scores), descending=True, stable=True).indices",
            "ranking = torch.arange(len(torch.cat(scores)))",
        ),
    ),
    mistake(
        "mean_average_precision",
        "averages over every class seen, also those without ground truth",
        (
            'classes = torch.unique(torch.cat([target["labels"] for target in targets]))',
            'classes = torch.unique(torch.cat([t["labels"] for t in targets] + [p["labels"] for p in preds]))',
        ),
        (
            "        # Rank the class's detections",
            "        if num_gt == 0:\n            aps.append(0.0)\n            continue\n        # Rank the class's detections",
        ),
    ),
    mistake(
        "mean_average_precision",
        "recall over the objects of the images that have detections only",
        ("num_gt += len(gt_boxes)", "num_gt += len(gt_boxes) if bool(mine.any()) else 0"),
    ),
    mistake(
        "match_detections",
        "on equal IoUs takes the last ground truth (pycocotools keeps the first)",
        (
            "    best_iou, best_gt = box_iou(pred_boxes[order], gt_boxes).max(dim=1)  # [D] each\n",
            "    best_iou, best_gt = box_iou(pred_boxes[order], gt_boxes).flip(1).max(dim=1)  # [D] each\n"
            "    best_gt = len(gt_boxes) - 1 - best_gt\n",
        ),
    ),
]
