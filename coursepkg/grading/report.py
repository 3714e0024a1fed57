"""The grader's score table (text) and its JSON twin.

Chapter: book/exercises
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from coursepkg.grading.notebooks import NotebookResult

_MESSAGE_WIDTH = 90


def _short(text: str, width: int = _MESSAGE_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def format_table(results: Sequence[NotebookResult], *, details: bool = False) -> str:
    """One block per notebook: execution notes, then question, points, result, tests, first failure.

    With ``details``, each failure's full explanation follows its notebook's table.
    """
    blocks = []
    for nb in results:
        lines = [f"{nb.path}  (exercise {nb.exercise or '?'})"]
        if nb.error:
            lines.append(f"  NOT GRADED: {nb.error}")
            blocks.append("\n".join(lines))
            continue
        lines.append(
            f"  notebook ran in {nb.execution_seconds:.1f} s, tests in {nb.grading_seconds:.1f} s"
        )
        lines += [f"  note: {_short(e, 110)}" for e in nb.cell_errors]
        width = max([len("question")] + [len(q.question) for q in nb.questions])
        lines.append(
            f"  {'question':<{width}}  {'points':>7}  {'result':<15}  {'tests':>7}  first failure"
        )
        for q in nb.questions:
            tests = f"{q.tests_passed}/{q.tests_total}" if q.tests_total else "-"
            points = f"{q.points} / {q.max_points}"
            lines.append(
                f"  {q.question:<{width}}  {points:>7}  {q.status:<15}  {tests:>7}  {_short(q.message)}"
            )
        percent = 100 * nb.score / nb.max_score if nb.max_score else 0.0
        total = f"{nb.score} / {nb.max_score}"
        lines.append(f"  {'total':<{width}}  {total:>7}  ({percent:.0f} %)")
        if details:
            for q in nb.questions:
                if q.status != "passed":
                    lines.append(f"\n  --- {q.question} ({q.status}) ---")
                    lines += [f"  {line}" for line in (q.details or q.message).splitlines()]
        blocks.append("\n".join(lines))
    if len(results) > 1:
        score, max_score = sum(r.score for r in results), sum(r.max_score for r in results)
        blocks.append(f"all notebooks: {score} / {max_score} points")
    return "\n\n".join(blocks)


def to_json(results: Sequence[NotebookResult]) -> dict[str, Any]:
    """The same results as a JSON-ready dict: ``{"score", "max_score", "notebooks": [...]}``."""
    return {
        "score": sum(r.score for r in results),
        "max_score": sum(r.max_score for r in results),
        "notebooks": [r.to_dict() for r in results],
    }


def write_json(results: Sequence[NotebookResult], path: str) -> None:
    with open(path, "w") as f:
        json.dump(to_json(results), f, indent=2)
