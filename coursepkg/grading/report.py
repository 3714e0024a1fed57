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
        blocks.append(format_summary(results))
    return "\n\n".join(blocks)


def format_summary(results: Sequence[NotebookResult]) -> str:
    """One line per notebook (points, percent, questions passed), then the total of all of them.

    A notebook that could not be graded scores 0 of its exercise's points and says why in short.
    """
    rows = []
    for nb in results:
        passed = sum(q.status == "passed" for q in nb.questions)
        if nb.error:
            rows.append((nb.path, "0 / ?", "", f"not graded: {_short(nb.error, 60)}"))
            continue
        percent = f"{100 * nb.score / nb.max_score:.0f} %" if nb.max_score else ""
        rows.append((nb.path, f"{nb.score} / {nb.max_score}", percent, f"{passed}/{len(nb.questions)} questions"))
    score, max_score = sum(r.score for r in results), sum(r.max_score for r in results)
    total_percent = f"{100 * score / max_score:.0f} %" if max_score else ""
    passed = sum(q.status == "passed" for nb in results for q in nb.questions)
    asked = sum(len(nb.questions) for nb in results)
    rows.append(("all notebooks", f"{score} / {max_score}", total_percent, f"{passed}/{asked} questions"))
    width = max(len("notebook"), *(len(r[0]) for r in rows))
    lines = ["summary", f"  {'notebook':<{width}}  {'points':>9}  {'':>5}  passed"]
    lines += [f"  {path:<{width}}  {points:>9}  {percent:>5}  {note}" for path, points, percent, note in rows]
    return "\n".join(lines)


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
