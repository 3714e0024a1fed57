"""Grade exercise notebooks: run each in a fresh kernel, then every question's tests against it.

For each notebook (``.ipynb``, or MyST ``.md`` read with jupytext):

1. find its exercise, from the file name or else from its ``check("...")`` calls;
2. execute it top to bottom with nbclient in a fresh kernel, in the notebook's folder. Cells that
   raise do not stop the run; ``check`` calls do nothing (the kernel has ``COURSEPKG_GRADING``
   set); each cell's output is capped. A cell that runs past ``cell_timeout`` is interrupted; if
   it ignores the interrupt or kills the kernel, the notebook is run again without that cell;
3. start the grader's own test process (:mod:`coursepkg.grading.judge`), loaded from this
   package, and append a harness cell (:mod:`coursepkg.grading.harness`) that makes the kernel
   serve calls to each question's function from a forked child. The tests, the counting and the
   time limits are the judge's; the kernel only returns values.

So a function that raises, loops, prints megabytes or imports something missing costs only its
own question, and nothing the notebook does in its kernel can change the tests or the counting.

Chapter: book/exercises
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jupytext
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from nbclient.util import ensure_async

import coursepkg
from coursepkg.grading.harness import GRADING_ENV, harness_cell
from coursepkg.grading.questions import Question, exercise_for, exercise_questions
from coursepkg.grading.results import DEFAULT_TIME_LIMIT, KILL_GRACE, OUTPUT_LIMIT, QuestionResult

CELL_TIMEOUT = 120.0
"""Seconds a notebook cell may run before the grader interrupts it."""

CELL_OUTPUT_LIMIT = 200_000
"""Characters of output kept per cell while the notebook executes; the rest is dropped."""

_INTERRUPT_GRACE = 10.0  # seconds an interrupted cell gets to stop before the kernel is replaced
_MAX_RUNS = 4  # executions of one notebook (each retry skips one more hanging/crashing cell)
_KERNEL_STARTUP_TIMEOUT = 180  # seconds; a busy machine can take a while to start a kernel


class GraderError(RuntimeError):
    """The grader itself could not do its job for a notebook."""


class _KernelStuck(Exception):
    """A cell ran past its timeout and did not stop when interrupted."""


@dataclass
class NotebookResult:
    """The grade of one notebook.

    Attributes:
        path: the notebook file.
        exercise: its exercise (None if it could not be told).
        questions: one result per question, in the notebook's order.
        cell_errors: the cells that raised while the notebook ran ("code cell 7: NameError: ...").
        execution_seconds: time to execute the notebook; grading_seconds: time to run the tests.
        error: why the grader could not grade the notebook ("" if it could).
    """

    path: str
    exercise: str | None
    questions: list[QuestionResult] = field(default_factory=list)
    cell_errors: list[str] = field(default_factory=list)
    execution_seconds: float = 0.0
    grading_seconds: float = 0.0
    error: str = ""

    @property
    def score(self) -> int:
        return sum(q.points for q in self.questions)

    @property
    def max_score(self) -> int:
        return sum(q.max_points for q in self.questions)

    @property
    def grader_failed(self) -> bool:
        return bool(self.error) or any(q.status == "error" for q in self.questions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "exercise": self.exercise,
            "score": self.score,
            "max_score": self.max_score,
            "execution_seconds": self.execution_seconds,
            "grading_seconds": self.grading_seconds,
            "cell_errors": self.cell_errors,
            "error": self.error,
            "questions": [q.to_dict() for q in self.questions],
        }


class _GradingClient(NotebookClient):
    """nbclient with a cap on each cell's output and a way out of cells that ignore interrupts."""

    def __init__(self, nb: nbformat.NotebookNode, **kw: Any) -> None:
        super().__init__(nb, **kw)
        self._output_sizes: dict[int, int] = {}
        self._interrupted_at: dict[int, float] = {}

    def output(self, outs, msg, display_id, cell_index):  # type: ignore[override]
        content = msg.get("content", {})
        size = len(content.get("text", "")) + sum(
            len(str(v)) for v in content.get("data", {}).values()
        )
        used = self._output_sizes.get(cell_index, 0)
        self._output_sizes[cell_index] = used + size
        if used + size > CELL_OUTPUT_LIMIT:
            if used <= CELL_OUTPUT_LIMIT:
                note = f"[grader: output beyond {CELL_OUTPUT_LIMIT} characters dropped]\n"
                outs.append(nbformat.v4.new_output("stream", name="stderr", text=note))
            return None
        return super().output(outs, msg, display_id, cell_index)

    async def _async_handle_timeout(self, timeout: int, cell=None):  # type: ignore[override]
        # First timeout: interrupt (KeyboardInterrupt in the cell) and keep waiting for its reply.
        # Still no reply well after that: give up on this kernel.
        key = id(cell)
        now = time.monotonic()
        if key not in self._interrupted_at:
            self._interrupted_at[key] = now
            await ensure_async(self.km.interrupt_kernel())
            return None
        if now - self._interrupted_at[key] < min(
            _INTERRUPT_GRACE, self.timeout or _INTERRUPT_GRACE
        ):
            await asyncio.sleep(0.25)
            return None
        raise _KernelStuck()


def _kernel_env() -> dict[str, str]:
    env = dict(os.environ)
    env[GRADING_ENV] = "1"
    env["MPLBACKEND"] = "Agg"
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # silences a debugger warning in every kernel
    return env


class NotebookFileError(ValueError):
    """A file that cannot be read as a notebook; the message names the file."""


def read_notebook(path: str | Path) -> nbformat.NotebookNode:
    """An ``.ipynb`` file, or a MyST/jupytext ``.md`` file, as a notebook.

    Raises:
        NotebookFileError: if the file is not valid JSON (``.ipynb``), has no ``cells`` list and
            ``nbformat`` version, or cannot be read for another reason; the message names it.
    """
    path = Path(path)
    try:
        if path.suffix == ".ipynb":
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
                raise NotebookFileError(f"{path.name} is not valid JSON ({error})") from None
            if not (
                isinstance(data, dict)
                and isinstance(data.get("cells"), list)
                and isinstance(data.get("nbformat"), int)
            ):
                raise NotebookFileError(
                    f"{path.name} is not a Jupyter notebook: expected a JSON object with a "
                    f"'cells' list and an 'nbformat' version, got {_json_outline(data)}"
                )
        return jupytext.read(str(path))
    except NotebookFileError:
        raise
    except Exception as error:
        raise NotebookFileError(
            f"{path.name} cannot be read as a notebook: {type(error).__name__}: {error}"
        ) from None


def _json_outline(data: Any) -> str:
    if isinstance(data, dict):
        keys = ", ".join(repr(k) for k in list(data)[:5])
        return f"an object with keys {keys}" if data else "an empty object {}"
    return f"a JSON {type(data).__name__}"


def find_notebooks(path: str | Path) -> list[Path]:
    """The notebook ``path``, or the notebooks in the folder ``path`` (sorted).

    In a folder, every ``.ipynb`` counts, and every jupytext ``.md`` without an ``.ipynb`` twin.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if path.is_file():
        return [path]
    found = sorted(path.glob("*.ipynb"))
    for md in sorted(path.glob("*.md")):
        if (
            not md.with_suffix(".ipynb").exists()
            and "jupytext:" in md.read_text(errors="replace")[:2000]
        ):
            found.append(md)
    return sorted(found)


def grade_notebook(
    path: str | Path,
    *,
    exercise: str | None = None,
    time_limit: float = DEFAULT_TIME_LIMIT,
    cell_timeout: float = CELL_TIMEOUT,
    output_limit: int = OUTPUT_LIMIT,
) -> NotebookResult:
    """Execute one notebook in a fresh kernel and grade every question of its exercise.

    Args:
        path: the notebook (``.ipynb`` or jupytext ``.md``).
        exercise: its exercise name; by default told from the file name or its ``check`` calls.
        time_limit: seconds for each question's tests.
        cell_timeout: seconds for each cell of the notebook.
        output_limit: characters of each function's printed output kept in the results.

    Returns:
        The notebook's result. Never raises: a failure of the grader itself is in ``error`` (or
        in questions with status ``error``).
    """
    result = NotebookResult(str(path), exercise)
    try:
        nb = read_notebook(path)
    except NotebookFileError as error:
        result.error = f"cannot read the notebook: {error}"
        return result
    if result.exercise is None:
        source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        result.exercise = exercise_for(path, source)
    if result.exercise is None:
        result.error = (
            "cannot tell which exercise this is (name the file after it or pass --exercise)"
        )
        return result
    try:
        questions = exercise_questions(result.exercise)
    except KeyError as error:
        result.error = error.args[0]
        return result
    try:
        _execute_and_grade(
            nb,
            Path(path).resolve().parent,
            questions,
            result,
            time_limit,
            cell_timeout,
            output_limit,
        )
    except Exception as error:  # the grader's own failure: reported, never raised
        message = f"the grader failed: {type(error).__name__}: {error}"
        result.questions = [
            QuestionResult(q.name, q.points, "error", message=message, details=message)
            for q in questions
        ]
    return result


def _execute_and_grade(
    nb: nbformat.NotebookNode,
    cwd: Path,
    questions: tuple[Question, ...],
    result: NotebookResult,
    time_limit: float,
    cell_timeout: float,
    output_limit: int,
) -> None:
    names = [q.name for q in questions]
    grading_timeout = len(questions) * (time_limit + KILL_GRACE + 10) + 60
    with tempfile.TemporaryDirectory(prefix="coursepkg-grade-") as private:
        os.chmod(private, 0o700)
        address = os.path.join(private, "judge.sock")
        token, nonce = secrets.token_hex(16), secrets.token_hex(16)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(address)
            listener.listen(len(names) + 4)
            judge = _start_judge(listener, private)
            try:
                job = {
                    "nonce": nonce,
                    "listener_fd": listener.fileno(),
                    "token": token,
                    "names": names,
                    "time_limit": float(time_limit),
                    "output_limit": int(output_limit),
                }
                judge.stdin.write((json.dumps(job) + "\n").encode())
                judge.stdin.flush()
                harness = harness_cell(address, token, names, output_limit)
                executed, skipped, seconds = _run(nb, cwd, harness, cell_timeout, grading_timeout)
                # Closing the judge's stdin tells it the kernel has served what it will serve.
                out, err = judge.communicate(timeout=grading_timeout)
            finally:
                if judge.poll() is None:
                    judge.kill()
                    judge.wait()
    result.execution_seconds, result.grading_seconds = seconds
    result.cell_errors = _cell_errors(executed, skipped, len(nb.cells))
    found = _judge_results(out, nonce)
    if found is None:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise GraderError(f"the grader's test process failed ({tail[0][:300]})")
    by_name = {r["question"]: r for r in found}
    for q in questions:
        got = QuestionResult.from_dict(by_name[q.name])
        got.max_points = q.points  # the bank says what a question is worth
        result.questions.append(got)


def _start_judge(listener: socket.socket, cwd: str) -> subprocess.Popen:
    """The grader's test process (:mod:`coursepkg.grading.judge`), loaded from this package.

    It imports ``coursepkg`` from the folder this very module was loaded from (first on its
    ``sys.path``), runs in an empty private folder, and inherits only the listening socket.
    """
    root = str(Path(coursepkg.__file__).resolve().parent.parent)
    boot = (
        f"import sys; sys.path.insert(0, {root!r}); "
        "from coursepkg.grading.judge import main; main()"
    )
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []  # no working directory on sys.path
    env = dict(os.environ)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return subprocess.Popen(
        [sys.executable, *safe_path, "-c", boot],
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=(listener.fileno(),),
    )


def _judge_results(out: bytes, nonce: str) -> list[dict[str, Any]] | None:
    """The results the judge wrote on its stdout (the last line that starts with the nonce)."""
    for line in reversed(out.decode(errors="replace").splitlines()):
        if line.startswith(nonce):
            try:
                found = json.loads(line[len(nonce) :])
            except ValueError:
                return None
            return found if isinstance(found, list) else None
    return None


def _run(
    nb: nbformat.NotebookNode, cwd: Path, harness: str, cell_timeout: float, grading_timeout: float
) -> tuple[nbformat.NotebookNode, dict[int, str], tuple[float, float]]:
    """Execute the notebook, then the harness cell, in one kernel; retry without cells that hang."""
    skipped: dict[int, str] = {}
    for _ in range(_MAX_RUNS):
        client = _GradingClient(
            copy.deepcopy(nb),
            timeout=int(max(1, round(cell_timeout))),
            allow_errors=True,
            interrupt_on_timeout=True,
            kernel_name="python3",
            shutdown_kernel="immediate",
            startup_timeout=_KERNEL_STARTUP_TIMEOUT,
            resources={"metadata": {"path": str(cwd)}},
        )
        current: int | None = None
        start = time.perf_counter()
        try:
            # The kernel's own log lines (not the notebook's output) would only be noise.
            with client.setup_kernel(
                env=_kernel_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            ):
                for index, cell in enumerate(client.nb.cells):
                    if cell.cell_type == "code" and index not in skipped:
                        current = index
                        client.execute_cell(cell, index)
                current = None
                executed_at = time.perf_counter()
                client.timeout = int(grading_timeout)
                cell = nbformat.v4.new_code_cell(harness)
                client.nb.cells.append(cell)
                # The scores come from the judge, not from this cell: if the notebook broke its
                # kernel so that the cell cannot finish or reply, the questions it did not serve
                # are reported as such.
                with contextlib.suppress(Exception):
                    client.execute_cell(cell, len(client.nb.cells) - 1)
                graded_at = time.perf_counter()
            return (
                client.nb,
                skipped,
                (round(executed_at - start, 2), round(graded_at - executed_at, 2)),
            )
        except Exception as error:
            if current is None:  # starting the kernel failed
                raise GraderError(f"the kernel could not run the notebook ({error!r})") from None
            if isinstance(error, _KernelStuck):
                why = "ignored the interrupt after its time limit"
            elif isinstance(error, DeadKernelError):
                why = "killed the kernel"
            else:  # e.g. a cell that patched json.dumps garbles the kernel's messages
                why = f"broke the kernel's messages ({type(error).__name__})"
            skipped[current] = why
    raise GraderError(f"gave up after {_MAX_RUNS} runs: too many cells hang or kill the kernel")


def _cell_errors(nb: nbformat.NotebookNode, skipped: dict[int, str], count: int) -> list[str]:
    """One line per code cell (among the first ``count`` cells) that raised or was skipped."""
    lines, number = [], 0
    for index, cell in enumerate(nb.cells[:count]):
        if cell.cell_type != "code":
            continue
        number += 1
        first = next((line for line in cell.source.splitlines() if line.strip()), "")[:60]
        if index in skipped:
            lines.append(f"code cell {number} ({first!r}) {skipped[index]}: it was skipped")
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                value = str(out.get("evalue", ""))[:200]
                lines.append(f"code cell {number} ({first!r}): {out.get('ename')}: {value}")
    return lines


def grade_paths(paths: list[str | Path], **kwargs: Any) -> list[NotebookResult]:
    """Grade every notebook named by ``paths`` (files or folders), in order.

    Keyword arguments go to :func:`grade_notebook`. In a folder, notebooks that belong to no
    exercise (by name or by their ``check`` calls) are left out; a file named explicitly is always
    graded (and reported with an error if it belongs to no exercise).

    Raises:
        FileNotFoundError: if a path does not exist.
    """
    results = []
    for path in paths:
        explicit = Path(path).is_file()
        for notebook in find_notebooks(path):
            if explicit or kwargs.get("exercise") or _belongs_to_an_exercise(notebook):
                results.append(grade_notebook(notebook, **kwargs))
    return results


def _belongs_to_an_exercise(path: Path) -> bool:
    if exercise_for(path) is not None:
        return True
    try:
        source = "\n".join(c.source for c in read_notebook(path).cells if c.cell_type == "code")
    except Exception:
        return False
    return exercise_for(path, source) is not None
