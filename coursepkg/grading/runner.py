"""Run one question's tests against one function, with a time limit and a cap on printed output.

:func:`run_tests` runs the question's pytest module in this process, handing the function to
the tests through the ``student`` fixture. :func:`run_question` does that with the student's
function itself, with a ``SIGALRM`` time limit; ``check`` uses it in the notebook. The notebook
grader hands the tests a proxy instead, which calls the function in the student's kernel (see
:mod:`coursepkg.grading.judge`).

Points are all or nothing: a question earns its points when every one of its tests passes.

Chapter: book/exercises
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from coursepkg.grading.expect import DIAGNOSE, Failure
from coursepkg.grading.questions import Question
from coursepkg.grading.results import DEFAULT_TIME_LIMIT, OUTPUT_LIMIT, QuestionResult

_PYTEST_INI = Path(__file__).with_name("pytest.ini")


class QuestionTimeout(BaseException):
    """Raised inside the student's code when the time limit is up.

    A ``BaseException``, so ``except Exception`` in the student's code does not swallow it.
    """


class StudentCrashed(BaseException):
    """Raised in the grader's tests when the process running the student's function died."""


@dataclass
class _TestOutcome:
    test: str
    passed: bool
    error: BaseException | None = None


@dataclass
class _Collector:
    """pytest plugin: provides the ``student`` fixture and records every test's outcome."""

    function: Callable[..., Any]
    timer: _Timer
    outcomes: list[_TestOutcome] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # collection or internal errors: the grader's
    interrupted: bool = False  # a KeyboardInterrupt stopped the session
    _raised: dict[str, BaseException] = field(default_factory=dict)  # node id -> exception
    _session: Any = None

    @pytest.fixture
    def student(self) -> Callable[..., Any]:
        return self.function

    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> None:
        if call.excinfo is not None:
            self._raised.setdefault(item.nodeid, call.excinfo.value)

    def pytest_configure(self, config: pytest.Config) -> None:
        # Failures are reported from the exceptions themselves: pytest's own tracebacks are not
        # shown, so ask for the cheapest kind (the default one parses the source of every frame).
        config.option.tbstyle = "native"

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self._session = session

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or (report.when == "setup" and report.failed):
            error = self._raised.pop(report.nodeid, None) if report.failed else None
            self.outcomes.append(_TestOutcome(report.nodeid.split("::")[-1], report.passed, error))
            if report.failed:
                DIAGNOSE.set(False)  # only the first failure is shown in full
        if self.timer.fired or self.timer.crashed:
            self._session.shouldstop = "time limit or crash"  # no further tests after a timeout

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo) -> None:
        self.interrupted = True

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.errors.append(str(report.longrepr))

    def pytest_internalerror(self, excrepr: Any) -> bool:
        if not self.timer.fired:
            self.errors.append(str(excrepr))
        return True  # handled: nothing printed


@dataclass
class _Timer:
    fired: bool = False  # the time limit is up
    armed: bool = False
    crashed: bool = False  # the student's process died


@contextlib.contextmanager
def _time_limit(seconds: float | None, timer: _Timer) -> Iterator[None]:
    """Raise :class:`QuestionTimeout` in the main thread after ``seconds``, and every 0.5 s after.

    Repeating makes a timeout that the student's code swallowed (a bare ``except:``) fire again.
    Without ``signal.setitimer`` (Windows) or off the main thread there is no limit.
    """
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if seconds is None or not usable:
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        if timer.armed:
            timer.fired = True
            raise QuestionTimeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    timer.armed = True
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.5)
    try:
        yield
    finally:
        timer.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _CappedText(io.TextIOBase):
    """A text stream that keeps the first ``limit`` characters and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit, self.parts, self.kept, self.dropped = limit, [], 0, 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        text = str(text)
        room = max(self.limit - self.kept, 0)
        if room:
            self.parts.append(text[:room])
            self.kept += min(room, len(text))
        self.dropped += max(len(text) - room, 0)
        return len(text)

    def getvalue(self) -> str:
        text = "".join(self.parts)
        return text + (f"\n... ({self.dropped} more characters not shown)" if self.dropped else "")


@contextlib.contextmanager
def _pytest_environment() -> Iterator[None]:
    """No plugins from the environment (nbval, anyio, ...) inside the grading session."""
    key = "PYTEST_DISABLE_PLUGIN_AUTOLOAD"
    before = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _from_package(module: str) -> bool:
    return module.split(".")[0] == "coursepkg"


def precheck(question: Question, kind: str, type_name: str, module: str) -> QuestionResult | None:
    """The result of a question whose function cannot be tested, else None.

    Args:
        question: the question.
        kind: ``"missing"``, ``"not callable"`` or ``"callable"``.
        type_name: the type of the notebook's object of that name.
        module: its ``__module__``.
    """
    name = question.name
    if kind == "missing":
        return QuestionResult(
            name,
            question.points,
            "missing",
            message=f"no function named {name}",
            details=f"no function named {name}: define it with that name and run its cell",
        )
    if kind != "callable":
        return QuestionResult(
            name,
            question.points,
            "missing",
            message=f"{name} is a {type_name}, not a function",
            details=f"{name} is a {type_name}, not a function: did a later "
            "cell assign something else to that name?",
        )
    if _from_package(module):
        return QuestionResult(
            name,
            question.points,
            "failed",
            message=f"{name} is coursepkg's own {name}, not your code",
            details=f"{name} is coursepkg's own {name}: write the function "
            "yourself (the package's version is what your answer is compared with)",
        )
    return None


def run_question(
    question: Question,
    function: Callable[..., Any] | None,
    *,
    time_limit: float | None = DEFAULT_TIME_LIMIT,
    output_limit: int = OUTPUT_LIMIT,
) -> QuestionResult:
    """Run ``question``'s tests on ``function`` in this process. Never raises.

    This is what ``check`` does in a notebook: feedback, in the student's own process. The
    notebook grader does not use it on notebook code (see :mod:`coursepkg.grading.judge`).

    Args:
        question: the question.
        function: the student's function (None if the notebook does not define it).
        time_limit: seconds for all the question's tests; None for no limit.
        output_limit: characters of printed output to keep.

    Returns:
        The question's result.
    """
    start = time.perf_counter()
    kind = "missing" if function is None else "callable" if callable(function) else "not callable"
    early = precheck(
        question, kind, type(function).__name__, getattr(function, "__module__", None) or ""
    )
    if early is not None:
        return early
    timer = _Timer()
    output = _CappedText(output_limit)
    with _time_limit(time_limit, timer):
        collector = run_tests(question, function, timer, output)
    return _summarise(
        question, collector, timer, output.getvalue(), time.perf_counter() - start, time_limit
    )


def run_tests(
    question: Question, student: Callable[..., Any], timer: _Timer, output: io.TextIOBase
) -> _Collector:
    """Run the question's pytest module with ``student`` as the ``student`` fixture.

    Never raises: a :class:`QuestionTimeout` or :class:`StudentCrashed` ends the session, an
    error of the grader is recorded in the collector's ``errors``.
    """
    collector = _Collector(student, timer)
    args = [
        str(question.tests),
        "-c", str(_PYTEST_INI),
        "-s", "--noconftest", "--import-mode=importlib",
        "-p", "no:terminal", "-p", "no:cacheprovider", "-p", "no:faulthandler",
        "-p", "no:stepwise", "-p", "no:logging",
    ]  # fmt: skip
    diagnose = DIAGNOSE.set(True)
    try:
        with (
            _pytest_environment(),
            contextlib.redirect_stdout(output),
            contextlib.redirect_stderr(output),
        ):
            try:
                pytest.main(args, plugins=[collector])
            except (QuestionTimeout, StudentCrashed):
                pass
    except (QuestionTimeout, StudentCrashed):
        pass
    except Exception as error:  # a bug of the grader, reported as such
        collector.errors.append(f"{type(error).__name__}: {error}")
    finally:
        DIAGNOSE.reset(diagnose)
    return collector


def _summarise(
    question: Question,
    collector: _Collector,
    timer: _Timer,
    output: str,
    seconds: float,
    time_limit: float | None,
) -> QuestionResult:
    outcomes = collector.outcomes
    passed = sum(o.passed for o in outcomes)
    result = QuestionResult(
        question.name,
        question.points,
        "failed",
        tests_passed=passed,
        tests_total=len(outcomes),
        output=output,
        seconds=round(seconds, 3),
    )
    failures = [o for o in outcomes if not o.passed]
    if timer.crashed:
        result.status = "crashed"
        result.message = "the process running your function died before the tests finished"
        result.details = result.message + ": does it call os._exit, or crash Python?"
    elif timer.fired:
        stuck = next((o.test for o in failures if isinstance(o.error, QuestionTimeout)), "")
        result.status = "timeout"
        result.message = f"time limit of {time_limit:g} s exceeded" + (
            f" in {stuck}" if stuck else ""
        )
        result.details = (
            result.message + ": look for a loop that never ends, or work that grows too fast"
        )
    elif collector.interrupted:
        result.message = "interrupted (KeyboardInterrupt) after " + f"{len(outcomes)} tests"
        result.details = result.message + ": the tests stopped; run check again to see them all"
    elif collector.errors or not outcomes:
        result.status = "error"
        text = collector.errors[0] if collector.errors else "no tests ran"
        result.message = "the grader could not run this question's tests (not your fault)"
        result.details = f"{result.message}:\n{text[-3000:]}"
    elif not failures:
        result.status = "passed"
    else:
        first = failures[0]
        if isinstance(first.error, Failure):
            result.message = first.error.headline
            result.details = first.error.render()
            result.picture = first.error.picture.to_dict() if first.error.picture else None
        else:
            text = f"{type(first.error).__name__}: {first.error}" if first.error else "failed"
            result.message = text
            result.details = f"{first.test}\n{text}"
        if (
            all(isinstance(o.error, Failure) and o.error.not_implemented for o in failures)
            and not passed
        ):
            result.status = "not implemented"
            result.message = "not implemented yet (the function still raises NotImplementedError)"
    return result
