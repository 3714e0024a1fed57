"""Graded exercises: ``check`` in the notebooks, a question bank, and the notebook grader.

* :func:`check` (in an exercise notebook): run one question's tests on your function now.
* ``python -m coursepkg.grade PATH``: execute notebooks in a fresh kernel and score every
  question (:func:`coursepkg.grading.notebooks.grade_paths` from Python).
* The question bank (:mod:`coursepkg.grading.questions`): each question is one function the
  student writes, worth some points, with a pytest module of tests that compare it with the
  package's reference implementation on worked examples, edge cases and seeded random inputs.

Chapter: book/exercises
"""

from coursepkg.grading.feedback import check
from coursepkg.grading.questions import Question, all_questions, exercise_questions, get_question
from coursepkg.grading.results import QuestionResult
from coursepkg.grading.runner import run_question

__all__ = [
    "Question",
    "QuestionResult",
    "all_questions",
    "check",
    "exercise_questions",
    "get_question",
    "run_question",
]
