"""Run one question's tests against one function, with a time limit and a cap on printed output.

:func:`run_question` runs the question's pytest module in this process, handing the function to
the tests through the ``student`` fixture; ``check`` uses it. :func:`run_question_isolated` runs
the same in a forked child process that is killed when it overruns, so a function that loops
forever (even one that swallows the timeout) costs only its own question; the grader uses it.

Points are all or nothing: a question earns its points when every one of its tests passes.

Chapter: book/exercises
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from coursepkg.grading.expect import DIAGNOSE, Failure
from coursepkg.grading.questions import Question
from coursepkg.grading.results import DEFAULT_TIME_LIMIT, KILL_GRACE, OUTPUT_LIMIT, QuestionResult

_PYTEST_INI = Path(__file__).with_name("pytest.ini")


class QuestionTimeout(BaseException):
    """Raised inside the student's code when the time limit is up.

    A ``BaseException``, so ``except Exception`` in the student's code does not swallow it.
    """


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
        if self.timer.fired:
            self._session.shouldstop = "time limit"  # no further tests after a timeout

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
    fired: bool = False
    armed: bool = False


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


def _from_package(function: Callable[..., Any]) -> bool:
    return (getattr(function, "__module__", None) or "").split(".")[0] == "coursepkg"


def run_question(
    question: Question,
    function: Callable[..., Any] | None,
    *,
    time_limit: float | None = DEFAULT_TIME_LIMIT,
    output_limit: int = OUTPUT_LIMIT,
) -> QuestionResult:
    """Run ``question``'s tests on ``function`` in this process. Never raises.

    Args:
        question: the question.
        function: the student's function (None if the notebook does not define it).
        time_limit: seconds for all the question's tests; None for no limit.
        output_limit: characters of printed output to keep.

    Returns:
        The question's result.
    """
    start = time.perf_counter()
    if function is None:
        return QuestionResult(
            question.name,
            question.points,
            "missing",
            message=f"no function named {question.name}",
            details=f"no function named {question.name}: define it with that name and run its cell",
        )
    if not callable(function):
        return QuestionResult(
            question.name,
            question.points,
            "missing",
            message=f"{question.name} is a {type(function).__name__}, not a function",
            details=f"{question.name} is a {type(function).__name__}, not a function: did a later "
            "cell assign something else to that name?",
        )
    if _from_package(function):
        return QuestionResult(
            question.name,
            question.points,
            "failed",
            message=f"{question.name} is coursepkg's own {function.__name__}, not your code",
            details=f"{question.name} is coursepkg's own {function.__name__}: write the function "
            "yourself (the package's version is what your answer is compared with)",
        )
    timer = _Timer()
    collector = _Collector(function, timer)
    output = _CappedText(output_limit)
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
            with _time_limit(time_limit, timer):
                try:
                    pytest.main(args, plugins=[collector])
                except QuestionTimeout:
                    pass
    except QuestionTimeout:
        pass
    except Exception as error:  # a bug of the grader, reported as such
        collector.errors.append(f"{type(error).__name__}: {error}")
    finally:
        DIAGNOSE.reset(diagnose)
    return _summarise(
        question, collector, timer, output.getvalue(), time.perf_counter() - start, time_limit
    )


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
    if timer.fired:
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


# --------------------------------------------------------------------------- isolated runs


def run_question_isolated(
    question: Question,
    function: Callable[..., Any] | None,
    *,
    time_limit: float = DEFAULT_TIME_LIMIT,
    output_limit: int = OUTPUT_LIMIT,
) -> QuestionResult:
    """Like :func:`run_question`, but in a forked child that is killed if it overruns.

    The child inherits the function (and everything it refers to) from this process, runs the
    tests with the same soft time limit, writes its result to a file and exits; past the limit
    plus a grace period the parent kills the child's whole process group. Where ``os.fork`` does
    not exist (Windows) this falls back to :func:`run_question`.
    """
    if function is None or not hasattr(os, "fork"):
        return run_question(question, function, time_limit=time_limit, output_limit=output_limit)
    fd, path = tempfile.mkstemp(prefix="coursepkg-grade-", suffix=".json")
    os.close(fd)
    start = time.perf_counter()
    gc.freeze()  # the child never collects (and so never finalises) what it inherited
    try:
        pid = os.fork()
    except OSError:
        gc.unfreeze()
        os.unlink(path)
        return run_question(question, function, time_limit=time_limit, output_limit=output_limit)
    if pid == 0:  # the child
        status = 1
        try:
            os.setpgid(0, 0)
            _quiet_standard_streams()
            result = run_question(
                question, function, time_limit=time_limit, output_limit=output_limit
            )
            Path(path).write_text(json.dumps(result.to_dict()))
            status = 0
        finally:
            os._exit(status)
    gc.unfreeze()
    killed, code = _wait(pid, time_limit + KILL_GRACE)
    seconds = round(time.perf_counter() - start, 3)
    try:
        text = Path(path).read_text()
    finally:
        os.unlink(path)
    if text:
        return QuestionResult.from_dict(json.loads(text))
    if killed:
        message = f"time limit of {time_limit:g} s exceeded (the tests were stopped)"
        return QuestionResult(
            question.name,
            question.points,
            "timeout",
            message=message,
            details=message,
            seconds=seconds,
        )
    message = f"the process running your function died ({code}) before the tests finished"
    return QuestionResult(
        question.name,
        question.points,
        "crashed",
        message=message,
        details=message + ": does it call os._exit, or crash Python?",
        seconds=seconds,
    )


def _quiet_standard_streams() -> None:
    """In the child: file descriptors 0-2 to /dev/null, Python's streams to throwaway buffers.

    Inside a Jupyter kernel the inherited ``sys.stdout`` talks to the kernel's I/O thread, which
    does not exist in the child; writing to it could hang.
    """
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    sys.stdin = io.StringIO()
    sys.stdout = sys.stderr = _CappedText(0)


def _wait(pid: int, seconds: float) -> tuple[bool, str]:
    """Wait for the child; kill its process group after ``seconds``. Returns (killed, how it ended)."""
    deadline = time.monotonic() + seconds
    delay = 0.002
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return False, _describe_status(status)
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return True, "killed"
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit status {os.WEXITSTATUS(status)}"
