"""Seeded mistakes for exercises/09_confidence_bce."""

from grading_mistakes import mistake

MISTAKES = [
    mistake(
        "bce_from_logits",
        "naive log(sigmoid(x)): inf at a logit of -100 in float32",
        (
            "    return positive_part - logits * targets + torch.log1p(torch.exp(-logits.abs()))",
            "    p = torch.sigmoid(logits)\n"
            "    return -(targets * torch.log(p) + (1 - targets) * torch.log(1 - p))",
        ),
    ),
    mistake(
        "bce_from_logits",
        "exp(-x) instead of exp(-|x|): overflows for large negative logits",
        ("torch.exp(-logits.abs())", "torch.exp(-logits)"),
    ),
    mistake(
        "bce_from_logits",
        "sign error on the x * y term",
        ("positive_part - logits * targets", "positive_part + logits * targets"),
    ),
    mistake(
        "bce_from_logits",
        "forgets max(x, 0)",
        ("    return positive_part - logits", "    return -logits"),
    ),
    mistake(
        "confidence_over_anchors",
        "ignored anchors counted as negatives",
        (
            "p, y = objectness[keep], labels[keep].to(probs.dtype)",
            "p, y = objectness, labels.clamp(min=0).to(probs.dtype)",
        ),
        ("max(int(keep.sum()), 1)", "max(len(labels), 1)"),
    ),
    mistake(
        "confidence_over_anchors",
        "mean over all anchors (100), not the 80 participating",
        ("max(int(keep.sum()), 1)", "max(len(labels), 1)"),
    ),
    mistake(
        "confidence_over_anchors",
        "objectness as 1 - P(background) instead of the largest foreground probability",
        ("probs[:, 1:].amax(dim=1)", "1 - probs[:, 0]"),
    ),
    mistake(
        "confidence_over_anchors",
        "background column taken as a foreground class (last column dropped instead)",
        ("probs[:, 1:].amax(dim=1)", "probs[:, :-1].amax(dim=1)"),
    ),
    mistake(
        "confidence_over_anchors",
        "sign error: the loss comes out negative",
        ("losses = -(y * torch.log(p)", "losses = (y * torch.log(p)"),
    ),
    mistake(
        "confidence_over_anchors",
        "y and 1 - y swapped",
        (
            "-(y * torch.log(p) + (1 - y) * torch.log(1 - p))",
            "-((1 - y) * torch.log(p) + y * torch.log(1 - p))",
        ),
    ),
]
