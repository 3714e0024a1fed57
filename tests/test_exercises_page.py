"""book/exercises.md lists every graded question with its points, as the question bank declares them.

The page is plain Markdown (fast to read, no kernel); this test keeps its two tables equal to
:mod:`coursepkg.grading.questions`. When it fails it prints the tables to paste.
"""

import importlib
from pathlib import Path

import yaml

from coursepkg.grading.questions import PARTS, all_questions, exercises

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "book" / "exercises.md"
PART_NAMES = ("Part I", "Part II", "Part III", "Part IV")


def _colab(exercise: str) -> str:
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    path = repo["url"].rstrip("/").removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{path}/blob/{repo['branch']}/exercises/{exercise}.ipynb"


def expected_question_rows() -> list[str]:
    rows = []
    for exercise in exercises():
        asked = ", ".join(f"`{q.name}` ({q.points})" for q in all_questions() if q.exercise == exercise)
        rows.append(f"| `{exercise}` | {{doc}}`{exercise}` | {asked} | [{exercise}.ipynb]({_colab(exercise)}) |")
    return rows


def expected_points_rows() -> list[str]:
    rows = []
    assert len(PARTS) == len(PART_NAMES)
    for name, part in zip(PART_NAMES, PARTS, strict=True):
        questions = importlib.import_module(part).QUESTIONS
        per_exercise = {}
        for q in questions:
            per_exercise[q.exercise] = per_exercise.get(q.exercise, 0) + q.points
        notebooks = ", ".join(f"`{e}` {p}" for e, p in per_exercise.items())
        rows.append(f"| {name} | {notebooks} | {sum(q.points for q in questions)} |")
    rows.append(f"| **all** | {len(exercises())} notebooks, {len(all_questions())} questions | "
                f"**{sum(q.points for q in all_questions())}** |")
    return rows


def _table_rows(first_header_cell: str) -> list[str]:
    lines = PAGE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header_cell} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(line.strip())
    return rows


def test_the_question_table_lists_every_question_with_its_points_and_colab_link():
    expected = expected_question_rows()
    assert _table_rows("exercise") == expected, "paste into book/exercises.md:\n" + "\n".join(expected)


def test_the_points_table_adds_up_each_part():
    expected = expected_points_rows()
    assert _table_rows("part") == expected, "paste into book/exercises.md:\n" + "\n".join(expected)


def test_every_exercise_notebook_is_in_the_bank_and_the_page():
    on_disk = sorted(p.stem for p in (ROOT / "exercises").glob("*.md"))
    assert on_disk == sorted(exercises())
