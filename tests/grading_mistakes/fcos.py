"""Seeded mistakes for exercises/13_fcos."""

from grading_mistakes import mistake

MISTAKES = [
    mistake(
        "fcos_targets",
        "a point on an edge counted as inside (>= 0 instead of > 0)",
        ("(distances.amin(dim=-1) > 0)", "(distances.amin(dim=-1) >= 0)"),
    ),
    mistake(
        "fcos_targets",
        "level chosen by the smallest distance instead of the largest",
        ("largest = distances.amax(dim=-1)  # [N, G]", "largest = distances.amin(dim=-1)  # [N, G]"),
    ),
    mistake(
        "fcos_targets",
        "largest area wins instead of the smallest",
        ("cost = torch.where(positive, area,", "cost = torch.where(positive, -area,"),
    ),
    mistake(
        "fcos_targets",
        "open level ranges: a largest distance on a bound belongs to no level",
        ("(largest >= low) & (largest <= high)", "(largest > low) & (largest < high)"),
    ),
    mistake(
        "fcos_targets",
        "no level ranges at all: every level takes every box",
        ("(largest >= low) & (largest <= high)", "(largest >= 0)"),
    ),
    mistake(
        "centerness",
        "l paired with t instead of r",
        ("distances[:, [0, 2]]  # [N, 2]", "distances[:, [0, 1]]  # [N, 2]"),
        ("top_bottom = distances[:, [1, 3]]", "top_bottom = distances[:, [2, 3]]"),
    ),
    mistake(
        "centerness",
        "no square root",
        ("return torch.sqrt(torch.nan_to_num(ratio_x * ratio_y, nan=0.0))",
         "return torch.nan_to_num(ratio_x * ratio_y, nan=0.0)"),
    ),
    mistake(
        "centerness",
        "0 / 0 left as NaN",
        ("torch.sqrt(torch.nan_to_num(ratio_x * ratio_y, nan=0.0))", "torch.sqrt(ratio_x * ratio_y)"),
    ),
    mistake(
        "centerness",
        "the mean of the two ratios instead of the product",
        ("ratio_x * ratio_y, nan=0.0", "(ratio_x + ratio_y) / 2, nan=0.0"),
    ),
]
