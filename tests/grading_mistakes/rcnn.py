"""Seeded mistakes for exercises/05_rcnn."""

from grading_mistakes import mistake

MISTAKES = [
    mistake(
        "regression_targets",
        "the notes' t_h typo: log(g_h / h) read as the ground truth's own height",
        ("t_h = torch.log(g_h / p_h)", "t_h = torch.log(g_h / g_h)"),
    ),
    mistake(
        "regression_targets",
        "t_y normalised by the proposal's width (the notes' ĝ_y typo, copied from the x line)",
        ("t_y = (g_y - p_y) / p_h", "t_y = (g_y - p_y) / p_w"),
    ),
    mistake(
        "regression_targets",
        "no log on the size targets",
        ("t_w = torch.log(g_w / p_w)", "t_w = g_w / p_w"),
        ("t_h = torch.log(g_h / p_h)", "t_h = g_h / p_h"),
    ),
    mistake(
        "regression_targets",
        "exp instead of log",
        ("t_w = torch.log(g_w / p_w)", "t_w = torch.exp(g_w / p_w)"),
        ("t_h = torch.log(g_h / p_h)", "t_h = torch.exp(g_h / p_h)"),
    ),
    mistake(
        "regression_targets",
        "top-left corners instead of centres",
        ("p_x = proposals[:, 0] + 0.5 * p_w  # centres", "p_x = proposals[:, 0]"),
        ("p_y = proposals[:, 1] + 0.5 * p_h", "p_y = proposals[:, 1]"),
        ("g_x = gt_boxes[:, 0] + 0.5 * g_w", "g_x = gt_boxes[:, 0]"),
        ("g_y = gt_boxes[:, 1] + 0.5 * g_h", "g_y = gt_boxes[:, 1]"),
    ),
    mistake(
        "regression_targets",
        "shifts divided by the ground truth's width and height",
        ("t_x = (g_x - p_x) / p_w", "t_x = (g_x - p_x) / g_w"),
        ("t_y = (g_y - p_y) / p_h", "t_y = (g_y - p_y) / g_h"),
    ),
    mistake(
        "apply_deltas",
        "the notes' ĝ_y typo: the y centre shifted from p_x",
        ("g_y = p_h * d_y + p_y  # p_y, not the notes' p_x", "g_y = p_h * d_y + p_x"),
    ),
    mistake(
        "apply_deltas",
        "no exp on the size deltas",
        ("g_w = p_w * torch.exp(d_w)", "g_w = p_w * d_w"),
        ("g_h = p_h * torch.exp(d_h)", "g_h = p_h * d_h"),
    ),
    mistake(
        "apply_deltas",
        "log instead of exp",
        ("g_w = p_w * torch.exp(d_w)", "g_w = p_w * torch.log(d_w.abs())"),
        ("g_h = p_h * torch.exp(d_h)", "g_h = p_h * torch.log(d_h.abs())"),
    ),
    mistake(
        "apply_deltas",
        "shifts the top-left corner instead of the centre",
        ("p_x = proposals[:, 0] + 0.5 * p_w\n", "p_x = proposals[:, 0]\n"),
        ("p_y = proposals[:, 1] + 0.5 * p_h\n", "p_y = proposals[:, 1]\n"),
    ),
    mistake(
        "apply_deltas",
        "returns (centre x, centre y, width, height) instead of xyxy",
        (
            "return torch.stack([g_x - g_w / 2, g_y - g_h / 2, g_x + g_w / 2, g_y + g_h / 2], dim=1)",
            "return torch.stack([g_x, g_y, g_w, g_h], dim=1)",
        ),
    ),
    mistake(
        "apply_deltas",
        "no cast of the proposals to the deltas' dtype",
        ("    proposals = proposals.to(deltas.dtype)\n", ""),
    ),
    mistake(
        "apply_deltas",
        "computes the widths and heights in the caller's proposals, in place",
        (
            "    p_w = proposals[:, 2] - proposals[:, 0]  # [N]\n    p_h = proposals[:, 3] - proposals[:, 1]\n",
            "    proposals[:, 2:] -= proposals[:, :2]  # widths and heights\n"
            "    p_w = proposals[:, 2]\n    p_h = proposals[:, 3]\n",
        ),
    ),
    mistake(
        "apply_deltas",
        "float64 deltas come back as float32",
        (
            "return torch.stack([g_x - g_w / 2, g_y - g_h / 2, g_x + g_w / 2, g_y + g_h / 2], dim=1)",
            "return torch.stack([g_x - g_w / 2, g_y - g_h / 2, g_x + g_w / 2, g_y + g_h / 2], dim=1).float()",
        ),
    ),
]
