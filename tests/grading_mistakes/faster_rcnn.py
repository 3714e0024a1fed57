"""Seeded mistakes for exercises/07_faster_rcnn."""

from grading_mistakes import mistake

MISTAKES = [
    mistake(
        "make_anchors",
        "scales outer, ratios inner",
        (
            "    for ratio in ratios:\n        for scale in scales:\n",
            "    for scale in scales:\n        for ratio in ratios:\n",
        ),
    ),
    mistake(
        "make_anchors",
        "ratio read as width / height",
        (
            "shapes.append((size / math.sqrt(ratio), size * math.sqrt(ratio)))",
            "shapes.append((size * math.sqrt(ratio), size / math.sqrt(ratio)))",
        ),
    ),
    mistake(
        "make_anchors",
        "columns outer: locations column by column",
        (
            "    for i in range(height):  # rows: the outer loop\n"
            "        for j in range(width):  # x varies fastest\n",
            "    for j in range(width):\n        for i in range(height):\n",
        ),
    ),
    mistake(
        "make_anchors",
        "ignores offset (always the middle of the cell)",
        (
            "c_x, c_y = (j + offset) * stride, (i + offset) * stride",
            "c_x, c_y = (j + 0.5) * stride, (i + 0.5) * stride",
        ),
    ),
    mistake(
        "make_anchors",
        "offset added in pixels, not in cells",
        (
            "c_x, c_y = (j + offset) * stride, (i + offset) * stride",
            "c_x, c_y = j * stride + offset, i * stride + offset",
        ),
    ),
    mistake(
        "label_anchors",
        "forgets the low-quality matches (best anchor per ground truth)",
        ("    labels[is_best.any(dim=0)] = 1\n", ""),
    ),
    mistake(
        "label_anchors",
        "only one anchor per ground truth on ties (argmax)",
        (
            "labels[is_best.any(dim=0)] = 1",
            "labels[iou_matrix.argmax(dim=1)[best_per_gt > 0]] = 1",
        ),
    ),
    mistake(
        "label_anchors",
        "positive threshold > 0.7 instead of >= 0.7",
        ("labels[best_iou >= 0.7] = 1", "labels[best_iou > 0.7] = 1"),
    ),
    mistake(
        "label_anchors",
        "negatives set last, overriding low-quality positives",
        ("    labels[best_iou < 0.3] = 0\n", ""),
        ("    return labels", "    labels[best_iou < 0.3] = 0\n    return labels"),
    ),
    mistake(
        "label_anchors",
        "a ground truth that overlaps nothing makes every anchor positive",
        (" & (best_per_gt[:, None] > 0)", ""),
    ),
    mistake(
        "sample_anchors",
        "the notes' negative budget n_sample * np.sum(label == 1)",
        ("batch_size_per_image - num_pos)  # the notes", "batch_size_per_image * num_pos)  # the notes"),
    ),
    mistake(
        "sample_anchors",
        "no cap on the positives",
        (
            "num_pos = min(len(positives), int(batch_size_per_image * positive_fraction))",
            "num_pos = min(len(positives), batch_size_per_image)",
        ),
    ),
    mistake(
        "sample_anchors",
        "negatives do not fill the batch when positives are few",
        (
            "batch_size_per_image - num_pos)  # the notes",
            "batch_size_per_image - int(batch_size_per_image * positive_fraction))  # the notes",
        ),
    ),
    mistake(
        "sample_anchors",
        "ignores the generator (global random state)",
        (
            "torch.randperm(len(positives), generator=generator)",
            "torch.randperm(len(positives))",
        ),
        (
            "torch.randperm(len(negatives), generator=generator)",
            "torch.randperm(len(negatives))",
        ),
    ),
    mistake(
        "sample_anchors",
        "keeps the first anchors instead of a random subset",
        (
            "positives[torch.randperm(len(positives), generator=generator)[:num_pos]]",
            "positives[:num_pos]",
        ),
        (
            "negatives[torch.randperm(len(negatives), generator=generator)[:num_neg]]",
            "negatives[:num_neg]",
        ),
    ),
    mistake(
        "rpn_loss",
        "smooth-L1 with beta = 1/9 (torchvision's RPN)",
        (
            "torch.where(diff < 1.0, 0.5 * diff**2, diff - 0.5)",
            "torch.where(diff < 1 / 9, 4.5 * diff**2, diff - 0.5 / 9)",
        ),
    ),
    mistake(
        "rpn_loss",
        "regression loss over all anchors",
        (
            "diff = (deltas[positive] - target_deltas[positive]).abs()",
            "diff = (deltas - target_deltas).abs()",
        ),
    ),
    mistake(
        "rpn_loss",
        "regression loss over the sampled anchors, negatives included",
        (
            "diff = (deltas[positive] - target_deltas[positive]).abs()",
            "diff = (deltas[sampled] - target_deltas[sampled]).abs()",
        ),
    ),
    mistake(
        "rpn_loss",
        "box term divided by the number of sampled anchors",
        (
            "box_loss = smooth_l1.sum() / max(int(positive.sum()), 1)",
            "box_loss = smooth_l1.sum() / max(int(sampled.sum()), 1)",
        ),
    ),
    mistake(
        "rpn_loss",
        "lambda = 1",
        ("return cls_loss + 10.0 * box_loss", "return cls_loss + box_loss"),
    ),
    mistake(
        "rpn_loss",
        "ignored anchors counted as negatives",
        ("sampled = labels >= 0  # -1", "sampled = labels >= -1  # -1"),
        (
            "labels[sampled].to(objectness.dtype)",
            "labels[sampled].clamp(min=0).to(objectness.dtype)",
        ),
    ),
]
