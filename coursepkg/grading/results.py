"""What grading a question gives: its :class:`QuestionResult`, and the limits a run works under.

Shared by the runner (which produces results), the kernel harness (which writes them to a file)
and the grader and its report (which read them).

Chapter: book/exercises
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_TIME_LIMIT = 20.0
"""Seconds one question's tests may take in all (the reference answers need well under one)."""

OUTPUT_LIMIT = 4000
"""Characters of the function's printed output that are kept; the rest is counted and dropped."""

KILL_GRACE = 5.0
"""Seconds an isolated run gets past its time limit to report the timeout itself before it is killed."""

STATUSES = ("passed", "failed", "not implemented", "missing", "timeout", "crashed", "error")


@dataclass
class QuestionResult:
    """The outcome of one question.

    Attributes:
        question: its name.
        max_points: what it is worth.
        status: ``passed``, ``failed``, ``not implemented``, ``missing`` (no such function),
            ``timeout``, ``crashed`` (the process running it died) or ``error`` (the grader's own
            fault, e.g. a test module that does not import).
        tests_passed, tests_total: how many of the tests that ran passed.
        message: the first failure in one line ("" when passed).
        details: the first failure in full: input, expected, got, hint.
        picture: boxes to draw for the first failure, or None.
        output: what the function printed, cut to :data:`OUTPUT_LIMIT` characters.
        seconds: wall time of the tests.
    """

    question: str
    max_points: int
    status: str
    tests_passed: int = 0
    tests_total: int = 0
    message: str = ""
    details: str = ""
    picture: dict[str, Any] | None = None
    output: str = ""
    seconds: float = 0.0

    @property
    def points(self) -> int:
        return self.max_points if self.status == "passed" else 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "points": self.points}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuestionResult:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**fields)
