"""Seeded mistakes for exercises/06_fast_rcnn."""

from grading_mistakes import mistake

MISTAKES = [
    mistake(
        "roi_max_pool",
        "average pooling instead of max pooling",
        (".amax(dim=(1, 2))", ".mean(dim=(1, 2))"),
    ),
    mistake(
        "roi_max_pool",
        "no rounding of the RoI: the scaled corners are truncated",
        ("math.floor(v * spatial_scale + 0.5)", "int(v * spatial_scale)"),
    ),
    mistake(
        "roi_max_pool",
        "rounds with Python's round (halves to even)",
        ("math.floor(v * spatial_scale + 0.5)", "round(v * spatial_scale)"),
    ),
    mistake(
        "roi_max_pool",
        "forgets spatial_scale",
        ("math.floor(v * spatial_scale + 0.5)", "math.floor(v + 0.5)"),
    ),
    mistake(
        "roi_max_pool",
        "bins computed with floor on both ends",
        (
            "bottom = min(max(y1 + math.ceil((p + 1) * roi_h / out_h), 0), height)",
            "bottom = min(max(y1 + math.floor((p + 1) * roi_h / out_h), 0), height)",
        ),
        (
            "right = min(max(x1 + math.ceil((q + 1) * roi_w / out_w), 0), width)",
            "right = min(max(x1 + math.floor((q + 1) * roi_w / out_w), 0), width)",
        ),
    ),
    mistake(
        "roi_max_pool",
        "the window without its last cell (x2 - x1 instead of x2 - x1 + 1)",
        ("roi_w = max(x2 - x1 + 1, 1)", "roi_w = max(x2 - x1, 1)"),
        ("roi_h = max(y2 - y1 + 1, 1)", "roi_h = max(y2 - y1, 1)"),
    ),
]
