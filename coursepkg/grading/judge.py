"""The grader's test process: runs the questions' tests, calling the notebook's functions remotely.

The notebook grader (:mod:`coursepkg.grading.notebooks`) starts this process itself, from the
folder its own ``coursepkg`` was loaded from, in an empty temporary working directory, so nothing
in the student's folder can shadow it. No student code ever runs here: each test's call to the
``student`` fixture is sent over a Unix socket to a child of the notebook's kernel
(:func:`coursepkg.grading.harness.serve`), which runs the function and sends back the value it
returned (decoded here with ``torch.load(weights_only=True)``), the arguments after the call (so
in-place changes are seen), what it printed, or the exception it raised. The pass/fail counts are
pytest's own, in this process; the results go back to the grader on this process's stdout, a pipe
only the grader holds, framed with a random nonce the grader sent on stdin.

Time limits are deadlines on the replies: past a question's limit the judge kills the child
(found from the socket's peer credentials) and the question times out; a child that dies
mid-question makes it "crashed".

Protocol on stdin: one JSON line (the job, see :func:`main`), then end of file once the harness
cell has finished in the kernel (questions whose child never connected are then "crashed").

Chapter: book/exercises
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from typing import Any

import torch
from torch import Tensor

from coursepkg.grading.harness import Opaque, decode, encode, rebuild_exception, receive, send
from coursepkg.grading.questions import Question, get_question
from coursepkg.grading.results import QuestionResult
from coursepkg.grading.runner import (
    QuestionTimeout,
    StudentCrashed,
    _CappedText,
    _summarise,
    _Timer,
    precheck,
    run_tests,
)

_HELLO_TIMEOUT = 10.0  # seconds a connected child gets to introduce itself


class _Remote:
    """The ``student`` fixture of a graded notebook: calls the function in the kernel's child."""

    def __init__(
        self, conn: socket.socket, pid: int | None, deadline: float, timer: _Timer, limit: int
    ) -> None:
        self.conn, self.pid, self.deadline, self.timer, self.limit = (
            conn,
            pid,
            deadline,
            timer,
            limit,
        )
        self.printed, self.dropped = "", 0

    def __call__(self, *args: Any) -> Any:
        if self.timer.fired:
            raise QuestionTimeout()
        if self.timer.crashed:
            raise StudentCrashed()
        try:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.conn.settimeout(left)
            send(self.conn, [encode(a) for a in args])
            reply = receive(self.conn)
        except TimeoutError:
            self.stop()
            self.timer.fired = True
            raise QuestionTimeout() from None
        except OSError:  # ConnectionError included
            reply = None
        if not (
            isinstance(reply, tuple) and len(reply) >= 5 and reply[0] in ("returned", "raised")
        ):
            self.stop()
            self.timer.crashed = True
            raise StudentCrashed()
        with contextlib.suppress(Exception):
            self.printed, self.dropped = str(reply[-2])[: self.limit], max(int(reply[-1]), 0)
        if reply[0] == "raised":
            mro, message, where = reply[1], reply[2], reply[3]
            mro = [str(n) for n in mro] if isinstance(mro, list) else ["Exception"]
            raise rebuild_exception(mro, str(message), str(where))
        got = _decode(reply[1])
        if isinstance(got, Tensor) and isinstance(reply[3], list):
            got.grader_aliases = [i for i in reply[3] if type(i) is int]  # see expect.call
        after = reply[2] if isinstance(reply[2], list) else []
        if len(after) == len(args):
            for local, changed in zip(args, after, strict=True):
                _mirror(local, _decode(changed))
        return got

    def output(self) -> str:
        extra = f"\n... ({self.dropped} more characters not shown)" if self.dropped else ""
        return self.printed + extra

    def stop(self) -> None:
        """Kill the child (and its process group) and close the connection."""
        pid = self.pid
        if pid is not None and pid > 1 and pid not in (os.getpid(), os.getppid()):
            for kill in (os.killpg, os.kill):
                with contextlib.suppress(OSError):
                    kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.conn.close()


def _decode(value: Any) -> Any:
    try:
        return decode(value)
    except Exception:  # a malformed answer is a wrong answer
        return type("unreadable", (Opaque,), {})()


def _mirror(local: Any, changed: Any) -> None:
    """Copy what the call did to an argument in the kernel onto the test's own copy of it."""
    if isinstance(local, Tensor) and isinstance(changed, Tensor):
        with torch.no_grad():
            if local.shape == changed.shape and local.dtype == changed.dtype:
                local.copy_(changed)
            else:
                local.data = changed
    elif isinstance(local, list) and isinstance(changed, list):
        local[:] = changed
    elif isinstance(local, dict) and isinstance(changed, dict):
        local.clear()
        local.update(changed)


def _peer_pid(conn: socket.socket, claimed: Any) -> int | None:
    """The connected process's pid, from the kernel where it can tell (Linux), else as claimed."""
    if hasattr(socket, "SO_PEERCRED"):
        with contextlib.suppress(OSError):
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            return struct.unpack("3i", creds)[0]
    return claimed if type(claimed) is int else None


def grade_connection(
    question: Question, conn: socket.socket, hello: tuple, time_limit: float, output_limit: int
) -> QuestionResult:
    """Run one question's tests against the function served on ``conn``."""
    start = time.perf_counter()
    try:
        kind, type_name, module = (str(v) for v in hello[2])
    except Exception:
        kind, type_name, module = "missing", "NoneType", ""
    timer = _Timer()
    remote = _Remote(
        conn,
        _peer_pid(conn, hello[3] if len(hello) > 3 else None),
        time.monotonic() + time_limit,
        timer,
        output_limit,
    )
    early = precheck(question, kind, type_name, module)
    if early is not None:
        remote.stop()  # the kernel waits for this child before it serves the next question
        return early
    collector = run_tests(question, remote, timer, _CappedText(0))
    remote.stop()
    seconds = time.perf_counter() - start
    return _summarise(question, collector, timer, remote.output(), seconds, time_limit)


def not_served(question: Question) -> QuestionResult:
    """The result of a question whose function the kernel never served."""
    message = "the notebook's kernel never ran this question's tests"
    return QuestionResult(
        question.name,
        question.points,
        "crashed",
        message=message,
        details=message + ": did the notebook exit or break its kernel (os._exit, sys.modules, "
        "built-ins)?",
    )


def judge(
    listener: socket.socket,
    token: str,
    names: list[str],
    time_limit: float,
    output_limit: int,
    stdin_fd: int = 0,
) -> list[dict[str, Any]]:
    """Accept the kernel's connections, one per question, and grade each; until stdin closes."""
    remaining = {name: get_question(name) for name in names}
    results: dict[str, QuestionResult] = {}
    open_stdin = True
    while remaining and open_stdin:
        ready, _, _ = select.select([listener, stdin_fd], [], [])
        if stdin_fd in ready and not os.read(stdin_fd, 4096):
            open_stdin = False  # the harness cell has finished: take what is already queued
            listener.setblocking(False)
        if listener not in ready and open_stdin:
            continue
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            break
        conn.setblocking(True)
        conn.settimeout(_HELLO_TIMEOUT)
        try:
            hello = receive(conn)
        except OSError:
            hello = None
        valid = (
            isinstance(hello, tuple)
            and len(hello) >= 3
            and isinstance(hello[0], str)
            and isinstance(hello[1], str)
            and hmac.compare_digest(hello[0], token)
            and hello[1] in remaining
        )
        if not valid:
            conn.close()
            continue
        name = hello[1]
        try:
            results[name] = grade_connection(
                remaining.pop(name), conn, hello, time_limit, output_limit
            )
        finally:
            conn.close()
    for name, question in remaining.items():
        results[name] = not_served(question)
    return [results[name].to_dict() for name in names]


def main() -> None:
    """Read the job from stdin, judge, write ``nonce + JSON`` as the last line of stdout.

    The job is one JSON line: ``{"nonce", "listener_fd", "token", "names", "time_limit",
    "output_limit"}``.
    """
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(0, 1)
        if not chunk:
            raise SystemExit("no job on stdin")
        line += chunk
    job = json.loads(line)
    listener = socket.socket(fileno=int(job["listener_fd"]))
    results = judge(
        listener,
        str(job["token"]),
        list(job["names"]),
        float(job["time_limit"]),
        int(job["output_limit"]),
    )
    stdout = sys.__stdout__
    stdout.write(job["nonce"] + json.dumps(results) + "\n")
    stdout.flush()


if __name__ == "__main__":
    main()
