"""The question bank: every graded question, its points, its exercise notebook and its tests.

A question is one function the student writes. Its name is the function's name (``check("nms")``
grades the notebook's ``nms``), and its tests are a pytest module in the part's folder named
``test_<name>.py``; each test receives the student's function through the ``student`` fixture.
A part of the course plugs its questions in by listing them in a module (``part1/__init__.py``
has ``QUESTIONS``) and adding that module to :data:`PARTS`.

Chapter: book/exercises
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path

PARTS = (
    "coursepkg.grading.part1",
    "coursepkg.grading.part2",
    "coursepkg.grading.part3",
    "coursepkg.grading.part4",
)
"""The modules whose ``QUESTIONS`` tuple make up the bank, in course order."""


@dataclass(frozen=True)
class Question:
    """One graded function.

    Attributes:
        name: the function the student defines, and the name ``check`` takes.
        points: awarded in full when every test of the question passes, else 0.
        exercise: the notebook it belongs to, e.g. ``"02_boxes_iou"``.
        summary: one line for score tables.
        tests: the pytest module holding the question's tests.
    """

    name: str
    points: int
    exercise: str
    summary: str
    tests: Path


def question(name: str, points: int, exercise: str, summary: str, folder: Path) -> Question:
    """Declare a question whose tests live in ``folder / f"test_{name}.py"``."""
    tests = Path(folder) / f"test_{name}.py"
    if not tests.is_file():
        raise FileNotFoundError(f"question {name!r} has no test module {tests}")
    return Question(name=name, points=points, exercise=exercise, summary=summary, tests=tests)


def all_questions() -> tuple[Question, ...]:
    """Every question of every part, in course order."""
    bank: list[Question] = []
    for part in PARTS:
        bank.extend(importlib.import_module(part).QUESTIONS)
    return tuple(bank)


def exercises() -> tuple[str, ...]:
    """The exercise notebooks' names (``"01_sliding_windows"``, ...), in course order."""
    return tuple(dict.fromkeys(q.exercise for q in all_questions()))


def get_question(name: str) -> Question:
    """The question called ``name``.

    Raises:
        KeyError: if there is none; the message lists the questions that exist.
    """
    for q in all_questions():
        if q.name == name:
            return q
    known = ", ".join(q.name for q in all_questions())
    raise KeyError(f"no question named {name!r}; the questions are: {known}")


def exercise_questions(exercise: str) -> tuple[Question, ...]:
    """The questions of one exercise notebook, in the order the notebook asks them.

    Raises:
        KeyError: for an unknown exercise name.
    """
    found = tuple(q for q in all_questions() if q.exercise == exercise)
    if not found:
        raise KeyError(
            f"no exercise named {exercise!r}; the exercises are: {', '.join(exercises())}"
        )
    return found


def exercise_for(path: str | Path, source: str = "") -> str | None:
    """Which exercise a notebook file is, from its name or else from the ``check`` calls in it.

    Students rename files ("Copy of 02_boxes_iou.ipynb", "02_boxes_iou (1).ipynb"), so the name
    only has to contain the exercise's name. Failing that, the first ``check("...")`` in
    ``source`` whose question is known decides.

    Returns:
        The exercise name, or None if neither the name nor the source tells.
    """
    stem = Path(path).name
    for exercise in exercises():
        if exercise in stem:
            return exercise
    names = {q.name: q.exercise for q in all_questions()}
    for called in re.findall(r"""\bcheck\(\s*["'](\w+)["']""", source):
        if called in names:
            return names[called]
    return None
