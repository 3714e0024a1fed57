"""Seeded mistakes for exercises/01_sliding_windows."""

from grading_mistakes import mistake

MISTAKES = [
    mistake(
        "window_positions",
        "the notes' exclusive stop misses the last window",
        ("range(0, length - window + 1, step)", "range(0, length - window, step)"),
    ),
    mistake(
        "window_positions",
        "windows that stick out of the image",
        ("range(0, length - window + 1, step)", "range(0, length, step)"),
    ),
    mistake(
        "window_positions",
        "always adds a window flush with the border, off the step grid",
        (
            "return list(range(0, length - window + 1, step))",
            "return sorted(set(range(0, length - window, step)) | {length - window})",
        ),
    ),
    mistake(
        "window_positions",
        "starts at step instead of 0",
        ("range(0, length - window + 1, step)", "range(step, length - window + 1, step)"),
    ),
    mistake(
        "window_boxes",
        "columns first: y varies fastest",
        (
            "        for y in range(0, height - win_h + 1, step_y)  # rows: the outer loop\n"
            "        for x in range(0, width - win_w + 1, step_x)  # x varies fastest\n",
            "        for x in range(0, width - win_w + 1, step_x)\n"
            "        for y in range(0, height - win_h + 1, step_y)\n",
        ),
    ),
    mistake(
        "window_boxes",
        "image_size and window_size read as (width, height)",
        (
            "(height, width), (win_h, win_w), (step_y, step_x) = image_size",
            "(width, height), (win_w, win_h), (step_y, step_x) = image_size",
        ),
    ),
    mistake(
        "window_boxes",
        "xywh rows instead of xyxy",
        ("(x, y, x + win_w, y + win_h)", "(x, y, win_w, win_h)"),
    ),
    mistake(
        "window_boxes",
        "the notes' exclusive stop misses the last row and column",
        ("range(0, height - win_h + 1, step_y)", "range(0, height - win_h, step_y)"),
        ("range(0, width - win_w + 1, step_x)", "range(0, width - win_w, step_x)"),
    ),
]
