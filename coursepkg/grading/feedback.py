"""``check("question")``: run one question's tests in the notebook and explain the result.

Each exercise notebook calls ``check`` after every function stub. It finds the function by the
question's name among the caller's globals (the notebook's variables), runs the question's
tests at once with a time limit, and prints a pass/fail report: for a failure, the input, the
expected and the actual result, where they first differ, and a hint; for box questions it also
draws the boxes. ``check`` never raises, whatever the function does.

Chapter: book/exercises
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections import Counter
from collections.abc import Callable
from typing import Any

from coursepkg.grading.harness import GRADING_ENV
from coursepkg.grading.questions import get_question
from coursepkg.grading.results import DEFAULT_TIME_LIMIT, QuestionResult
from coursepkg.grading.runner import run_question


def check(
    question: str,
    function: Callable[..., Any] | None = None,
    *,
    time_limit: float = DEFAULT_TIME_LIMIT,
    show_picture: bool = True,
) -> None:
    """Run the tests of ``question`` on your function now and print what passed or failed.

    Args:
        question: the question's name, which is also the name of the function it grades
            (``check("iou")`` tests the notebook's ``iou``).
        function: test this function instead of the one named ``question``.
        time_limit: seconds for all the question's tests.
        show_picture: draw the boxes of a failing box question.

    Never raises: a missing function, a function that raises or loops, an unknown question name
    and even an interrupt are reported in the printout.
    """
    try:
        if os.environ.get(GRADING_ENV):
            print(f"check({question!r}) skipped: the grader runs every question's tests itself.")
            return
        try:
            q = get_question(question)
        except KeyError as error:
            print(error.args[0])
            return
        if function is None:
            function = sys._getframe(1).f_globals.get(q.name)
        result = run_question(q, function, time_limit=time_limit)
        print(format_result(result))
        if show_picture and result.picture and result.status == "failed":
            draw_picture(result.picture)
    except BaseException as error:  # noqa: BLE001 -- check must never break a notebook
        print(f"check({question!r}) stopped: {type(error).__name__}: {error}")


def format_result(result: QuestionResult) -> str:
    """The report ``check`` prints: a verdict line, then the first failure in full."""
    score = f"{result.points}/{result.max_points} points"
    name = result.question
    if result.status == "passed":
        return f"✓ {name}: all {result.tests_total} tests passed ({score})"
    if result.status == "not implemented":
        return (
            f"✗ {name}: not implemented yet ({score})\n"
            f"  Replace `raise NotImplementedError` with your code, run the cell, then check again."
        )
    if result.status in ("failed", "timeout") and result.tests_total:
        verdict = f"{result.tests_passed} of {result.tests_total} tests passed"
    else:
        verdict = result.status
    lines = [
        f"✗ {name}: {verdict} ({score})",
        textwrap.indent(result.details or result.message, "  "),
    ]
    if result.output.strip():
        lines.append("  what your function printed:")
        lines.append(textwrap.indent(result.output.rstrip(), "  | "))
    return "\n".join(lines)


def draw_picture(picture: dict[str, Any]) -> Any:
    """Draw the boxes of a failure (layers of ``[x1, y1, x2, y2]``), y pointing down like an image.

    Each layer has its colour (dashed for the student's answer); labels go inside the top-left
    corner, stacked when several boxes share a corner.

    Returns:
        The matplotlib figure (already shown).
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(6, 3.8))
    corners, labels_at = [], Counter()
    for layer in picture["layers"]:
        dashed = bool(layer.get("dashed"))
        texts = layer.get("texts") or []
        for k, (x1, y1, x2, y2) in enumerate(layer["boxes"]):
            corners += [(x1, y1), (x2, y2)]
            ax.add_patch(
                Rectangle(
                    (x1, y1),
                    x2 - x1,
                    y2 - y1,
                    fill=False,
                    edgecolor=layer["color"],
                    linestyle="--" if dashed else "-",
                    linewidth=2.5 if dashed else 1.5,
                    label=layer["label"] if k == 0 else None,
                )
            )
            if k < len(texts):
                stacked = labels_at[(round(x1, 3), round(y1, 3))]
                labels_at[(round(x1, 3), round(y1, 3))] += 1
                ax.annotate(
                    texts[k],
                    (x1, y1),
                    xytext=(3, -3 - 10 * stacked),
                    textcoords="offset points",
                    va="top",
                    fontsize=8,
                    color=layer["color"],
                )
    if corners:
        xs, ys = [c[0] for c in corners], [c[1] for c in corners]
        pad = 0.08 * max(max(xs) - min(xs), max(ys) - min(ys), 1.0)
        ax.set_xlim(min(xs) - pad, max(xs) + pad)
        ax.set_ylim(max(ys) + pad, min(ys) - pad)  # y down, as in an image
    ax.set_aspect("equal")
    ax.set_title(picture["title"], fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    plt.show()
    plt.close(fig)
    return fig
