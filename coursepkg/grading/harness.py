"""The part of the grader that runs inside the student's kernel, after the notebook has run.

The grader appends one cell to the executed notebook. That cell first drops every ``coursepkg``
module the notebook imported (so that nothing the notebook did to them survives), imports this
module afresh and calls :func:`grade_in_kernel`, which looks up each question's function by
name in the notebook's namespace and runs its tests in a forked child with a time limit. The
results go to a file the grader chose; nothing the notebook prints or defines is read back.

Chapter: book/exercises
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

GRADING_ENV = "COURSEPKG_GRADING"
"""Set by the grader in the kernels it starts: ``check`` then does nothing (the grader runs the
tests itself, after the whole notebook has run)."""


def grade_in_kernel(
    result_path: str, names: list[str], *, time_limit: float, output_limit: int
) -> None:
    """Grade the questions ``names`` against the notebook's functions; write the results as JSON.

    Args:
        result_path: where to write a JSON list of :class:`~coursepkg.grading.runner.QuestionResult`
            dicts, one per name, in order.
        names: the questions to grade.
        time_limit: seconds per question.
        output_limit: characters of each function's printed output to keep.
    """
    from coursepkg.grading.questions import get_question
    from coursepkg.grading.runner import run_question_isolated

    namespace = vars(sys.modules["__main__"])  # the notebook's variables, in an IPython kernel
    results = [
        run_question_isolated(
            get_question(name),
            namespace.get(name),
            time_limit=time_limit,
            output_limit=output_limit,
        ).to_dict()
        for name in names
    ]
    Path(result_path).write_text(json.dumps(results))


HARNESS_CELL = """\
import sys as _grader_sys
for _grader_module in [m for m in _grader_sys.modules if m == "coursepkg" or m.startswith("coursepkg.")]:
    del _grader_sys.modules[_grader_module]
from coursepkg.grading.harness import grade_in_kernel as _grader_run
_grader_run({result_path!r}, {names!r}, time_limit={time_limit!r}, output_limit={output_limit!r})
"""
"""The cell the grader appends; formatted with the arguments of :func:`grade_in_kernel`."""
