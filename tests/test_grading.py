"""Tests of coursepkg.grading: grading means something, ``check`` explains, the grader survives.

* Every solution notebook scores full marks and every untouched exercise notebook zero, through
  the grader's command line (``python -m coursepkg.grade solutions exercises --json OUT``), run
  once for the module.
* Every seeded mistake (``tests/grading_mistakes``, at least three per question) loses the points
  of the question it breaks; these run in this process, without executing notebooks.
* Two notebooks seeded with misbehaving code (a function that loops, one that swallows the
  timeout, one that kills its process, a missing import, megabytes of output, a cell that raises,
  cells that loop, one that ignores interrupts, code that tampers with the grader) lose only the
  affected questions, and the grader exits 0. Stub notebooks that patch ``json``, ``open``,
  ``pathlib`` and pytest, exit, print fake results, answer with a malicious pickle and sit next
  to a fake ``coursepkg`` package still score 0.
* The command line refuses bad options before grading and names unreadable notebooks.
* Exercise and solution notebooks are identical except for the answer cells; ``check``'s report
  on a pass and on a failure.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import pytest
import torch

from coursepkg.grading import check, get_question
from coursepkg.grading.__main__ import main
from coursepkg.grading.expect import Case, expect_int_list, show
from coursepkg.grading.feedback import draw_picture
from coursepkg.grading.questions import all_questions, exercise_for, exercise_questions, exercises
from coursepkg.grading.runner import run_question

sys.path.insert(0, str(Path(__file__).parent))  # tests/grading_mistakes, whatever the import mode
from grading_mistakes import all_mistakes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = all_questions()
EXERCISES = exercises()
MISTAKES = all_mistakes()


def _read(folder: str, exercise: str):
    return jupytext.read(ROOT / folder / f"{exercise}.md")


def _defines(source: str) -> list[str]:
    """The functions a cell defines (none for a cell with IPython syntax, like the setup cell)."""
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return []
    return [n.name for n in body if isinstance(n, ast.FunctionDef)]


def _answer(question: str) -> str:
    """The model answer's cell (tagged "answer") that defines ``question``."""
    nb = _read("solutions", get_question(question).exercise)
    for cell in nb.cells:
        if "answer" in cell.metadata.get("tags", []) and question in _defines(cell.source):
            return cell.source
    raise LookupError(f"no answer cell defines {question}")


def _define(source: str, name: str):
    namespace = {"__name__": "student_answer"}
    exec(compile(source, f"<answer {name}>", "exec"), namespace)
    return namespace[name]


# --------------------------------------------------------------------------- solutions and stubs


def _grader(*args: str, cwd: Path = ROOT) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "coursepkg.grade", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every notebook run of this module: two grader commands at once (two cores).

    ``repository``: the grader's command line on the repository's ``solutions`` and
    ``exercises`` folders. ``misbehaving``: the model answers of 04 and 02 with misbehaving code
    added, graded with shorter limits (much of that run is waiting out timeouts, so it overlaps
    well with the first). Each value is (exit status, stdout + stderr, JSON report, seconds).
    """
    tmp = tmp_path_factory.mktemp("grades")
    jupytext.write(_misbehaving_evaluation(), tmp / "04_evaluation_misbehaving.ipynb")
    jupytext.write(_misbehaving_boxes(), tmp / "02_boxes_iou_misbehaving.ipynb")
    tampering = tmp / "tampering"
    _write_fake_package(tampering, marker=tmp / "pwned")
    jupytext.write(_tampering_nms(marker=tmp / "pwned"), tampering / "03_nms_tampering.ipynb")
    jupytext.write(_tampering_windows(), tampering / "01_sliding_windows_tampering.ipynb")
    jupytext.write(_patched_json_only(), tampering / "03_nms_patched_json.ipynb")
    commands = {
        "repository": ("solutions", "exercises"),
        "misbehaving": (str(tmp), str(tampering), "--timeout", "10", "--cell-timeout", "10"),
    }
    start = time.perf_counter()
    started = {
        name: _grader(*args, "--json", str(tmp / f"{name}.json")) for name, args in commands.items()
    }
    results = {}
    for name, proc in started.items():
        out, err = proc.communicate(timeout=900)
        report = json.loads((tmp / f"{name}.json").read_text())
        results[name] = (proc.returncode, out + err, report, time.perf_counter() - start)
    return results


def _notebooks(runs, name: str = "repository") -> dict[str, dict]:
    """The notebooks of one run by path without suffix ("solutions/02_boxes_iou") or by stem."""
    notebooks = runs[name][2]["notebooks"]
    if name == "repository":
        return {str(Path(nb["path"]).with_suffix("")): nb for nb in notebooks}
    return {Path(nb["path"]).stem: nb for nb in notebooks}


def test_grader_command_exits_0_with_a_table_and_json(runs):
    status, output, report, seconds = runs["repository"]
    assert status == 0, output[-4000:]
    paths = [nb["path"] for nb in report["notebooks"]]
    assert paths == [f"{d}/{e}.ipynb" for d in ("solutions", "exercises") for e in EXERCISES]
    for path, exercise in zip(paths, 2 * list(EXERCISES), strict=True):
        assert f"{path}  (exercise {exercise})" in output
    assert "question" in output and "first failure" in output
    total = sum(q.points for q in QUESTIONS)
    summary = output[output.index("\nsummary\n"):]  # the folder's summary table, one line per notebook
    for path in paths:
        assert re.search(rf"{re.escape(path)}\s+\d+ / \d+\s+\d+ %", summary), path
    assert re.search(rf"all notebooks\s+{total} / {2 * total}\s+50 %", summary)
    assert report["score"] == total and report["max_score"] == 2 * total
    print(f"graded {len(paths)} notebooks in {seconds:.1f} s")


@pytest.mark.parametrize("exercise", EXERCISES)
def test_solution_scores_full_marks(runs, exercise):
    nb = _notebooks(runs)[f"solutions/{exercise}"]
    assert not nb["cell_errors"] and not nb["error"]
    assert [q["question"] for q in nb["questions"]] == [
        q.name for q in exercise_questions(exercise)
    ]
    for q in nb["questions"]:
        assert q["status"] == "passed", q["details"]
        assert q["points"] == q["max_points"] == get_question(q["question"]).points
        assert q["tests_passed"] == q["tests_total"] >= 10
    assert nb["score"] == nb["max_score"] > 0
    print(
        f"{exercise}: notebook {nb['execution_seconds']:.1f} s, tests {nb['grading_seconds']:.1f} s"
    )


@pytest.mark.parametrize("exercise", EXERCISES)
def test_untouched_exercise_scores_zero(runs, exercise):
    nb = _notebooks(runs)[f"exercises/{exercise}"]
    assert not nb["cell_errors"] and not nb["error"]
    for q in nb["questions"]:
        assert q["status"] == "not implemented", q["details"]
        assert q["points"] == 0 and q["tests_passed"] == 0 and q["tests_total"] >= 10
    assert nb["score"] == 0


# --------------------------------------------------------------------------- the notebooks' shape


@pytest.mark.parametrize("exercise", EXERCISES)
def test_exercise_and_solution_differ_only_in_answer_cells(exercise):
    ex, sol = _read("exercises", exercise), _read("solutions", exercise)
    assert len(ex.cells) == len(sol.cells)
    answers = 0
    for a, b in zip(ex.cells, sol.cells, strict=True):
        assert (a.cell_type, a.metadata) == (b.cell_type, b.metadata)
        if "answer" not in a.metadata.get("tags", []):
            assert a.source == b.source
            continue
        answers += 1
        (fa,) = [n for n in ast.parse(a.source).body if isinstance(n, ast.FunctionDef)]
        (fb,) = [n for n in ast.parse(b.source).body if isinstance(n, ast.FunctionDef)]
        assert (fa.name, ast.dump(fa.args), ast.get_docstring(fa)) == (
            fb.name,
            ast.dump(fb.args),
            ast.get_docstring(fb),
        )
        assert "raise NotImplementedError" in ast.unparse(fa.body[-1]) and len(fa.body) == 2
        assert "NotImplementedError" not in b.source
    assert answers == len(exercise_questions(exercise))


@pytest.mark.parametrize("exercise", EXERCISES)
def test_every_stub_is_followed_by_its_check(exercise):
    """Question order, titles with the bank's points, one stub and one check per question."""
    cells = _read("exercises", exercise).cells
    asked = []
    for i, cell in enumerate(cells):
        if "answer" in cell.metadata.get("tags", []):
            (name,) = _defines(cell.source)
            following = next(c for c in cells[i + 1 :] if c.cell_type == "code")
            assert following.source.strip() == f'check("{name}")'
            asked.append(name)
    assert asked == [q.name for q in exercise_questions(exercise)]
    text = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    for q in exercise_questions(exercise):
        assert f"`{q.name}` ({q.points} points)" in text
    assert "from coursepkg.grading import check" in cells[2].source


@pytest.mark.parametrize("question", QUESTIONS, ids=lambda q: q.name)
def test_tests_use_seeded_random_inputs(question):
    ids = _collect(question)
    seeds = {i for i in ids if "seed" in i}
    assert len(ids) >= 10 and len(seeds) >= 3, ids


def _collect(question) -> list[str]:
    class Names:
        ids: list[str] = []

        @pytest.fixture
        def student(self):
            return None

        def pytest_collection_modifyitems(self, items):
            self.ids.extend(item.name for item in items)

    plugin = Names()
    with contextlib.redirect_stdout(io.StringIO()):
        pytest.main(
            [
                str(question.tests),
                "--collect-only",
                "-q",
                "-p",
                "no:cacheprovider",
                "--import-mode=importlib",
            ],
            plugins=[plugin],
        )
    return plugin.ids


# --------------------------------------------------------------------------- seeded mistakes


def test_at_least_three_mistakes_per_question():
    counts = {q.name: 0 for q in QUESTIONS}
    for m in MISTAKES:
        counts[m.question] += 1
    assert min(counts.values()) >= 3, counts


@pytest.mark.parametrize("question", QUESTIONS, ids=lambda q: q.name)
def test_model_answer_passes_in_process(question):
    """The baseline of the mistakes below: the unedited answer cell earns the points."""
    result = run_question(question, _define(_answer(question.name), question.name), time_limit=60)
    assert result.status == "passed", result.details


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: f"{m.question}: {m.description}")
def test_seeded_mistake_loses_its_points(mistake):
    code = mistake.apply(_answer(mistake.question))
    result = run_question(
        get_question(mistake.question), _define(code, mistake.question), time_limit=60
    )
    assert result.status == "failed" and result.points == 0, (mistake, result.status)
    assert result.message and result.details


# --------------------------------------------------------------------------- misbehaving notebooks


def _edit(nb, question: str, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` in the code cell that defines ``question``."""
    for cell in nb.cells:
        if cell.cell_type == "code" and question in _defines(cell.source):
            assert old in cell.source
            cell.source = cell.source.replace(old, new, 1)
            return
    raise LookupError(question)


def _insert(nb, before_question: str, source: str) -> None:
    """A new code cell just before the one that defines ``before_question``."""
    cells = nb.cells
    index = next(
        i
        for i, c in enumerate(cells)
        if c.cell_type == "code" and before_question in _defines(c.source)
    )
    cells.insert(index, nbformat.v4.new_code_cell(source))


def _misbehaving_evaluation():
    """04_evaluation's model answers, with trouble added around them."""
    nb = _read("solutions", "04_evaluation")
    # match_detections: right, but prints 100 kB per call; its cell prints 5 MB when it runs.
    _edit(
        nb,
        "match_detections",
        "    order = torch.sort(",
        '    print("x" * 100_000)\n    order = torch.sort(',
    )
    _edit(
        nb,
        "match_detections",
        "claimed.add(gt)\n    return tp",
        'claimed.add(gt)\n    return tp\n\n\nprint("y" * 5_000_000)',
    )
    # ap_all_point: loops forever.
    _edit(
        nb,
        "ap_all_point",
        "    r = torch.cat(",
        "    while True:\n        pass\n    r = torch.cat(",
    )
    # ap_11_point: its cell imports a package that does not exist, so the function is never defined.
    _edit(
        nb, "ap_11_point", "import torch\n", "import torch\nimport not_a_package_of_this_course\n"
    )
    _insert(nb, "ap_all_point", 'raise ValueError("a cell that raises")')
    _insert(
        nb,
        "ap_all_point",
        "import time\nwhile True:  # stopped by the cell timeout\n    time.sleep(0.01)",
    )
    # Code that tries to change the grading; it runs in the kernel before the tests do.
    _insert(
        nb,
        "mean_average_precision",
        "import coursepkg.grading.runner as runner\n"
        "runner.run_question = lambda question, function, **kw: runner.QuestionResult(question.name, question.points, 'passed', 1, 1)\n"
        "check = lambda *args, **kwargs: print('all good')\n"
        "_grader_run = None",
    )
    return nb


def _misbehaving_boxes():
    """02_boxes_iou's model answers, with code that kills processes or ignores interrupts."""
    nb = _read("solutions", "02_boxes_iou")
    _edit(
        nb,
        "box_convert",
        '    formats = ("xyxy"',
        '    import os\n\n    os._exit(3)\n    formats = ("xyxy"',
    )
    _edit(
        nb,
        "iou_pairwise",
        "    area1 = (",
        "    while True:  # swallows the timeout\n        try:\n            time.sleep(0.01)\n"
        "        except BaseException:\n            pass\n    area1 = (",
    )
    _edit(nb, "iou_pairwise", "import torch\n", "import time\n\nimport torch\n")
    _insert(
        nb,
        "iou",
        "import time\nwhile True:  # ignores the interrupt\n    try:\n        time.sleep(0.01)\n"
        "    except KeyboardInterrupt:\n        pass",
    )
    return nb


def test_misbehaving_code_costs_only_its_question(runs):
    status, output, report, seconds = runs["misbehaving"]
    assert status == 0, output[-4000:]
    nb = _notebooks(runs, "misbehaving")["04_evaluation_misbehaving"]
    got = {q["question"]: (q["status"], q["points"]) for q in nb["questions"]}
    assert got == {
        "match_detections": ("passed", 3),
        "ap_all_point": ("timeout", 0),
        "ap_11_point": ("missing", 0),
        "mean_average_precision": ("passed", 3),
    }
    errors = "\n".join(nb["cell_errors"])
    assert "ValueError: a cell that raises" in errors
    assert "ModuleNotFoundError" in errors and "KeyboardInterrupt" in errors
    matched = next(q for q in nb["questions"] if q["question"] == "match_detections")
    assert len(matched["output"]) < 5_000 and "more characters not shown" in matched["output"]
    assert "timeout" in output and "missing" in output
    print(
        f"misbehaving 04_evaluation graded in {nb['execution_seconds'] + nb['grading_seconds']:.1f} s"
    )


def test_crashes_and_stuck_code_cost_only_their_question(runs):
    status, output, report, seconds = runs["misbehaving"]
    assert status == 0, output[-4000:]
    nb = _notebooks(runs, "misbehaving")["02_boxes_iou_misbehaving"]
    got = {q["question"]: (q["status"], q["points"]) for q in nb["questions"]}
    assert got == {
        "box_convert": ("crashed", 0),
        "iou": ("passed", 2),
        "iou_pairwise": ("timeout", 0),
    }
    assert any("ignored the interrupt" in e and "skipped" in e for e in nb["cell_errors"])
    print(
        f"misbehaving 02_boxes_iou graded in {nb['execution_seconds'] + nb['grading_seconds']:.1f} s (one kernel restart)"
    )


# --------------------------------------------------------------------------- tampering stubs

_FAKE_RESULTS = (
    "[{'question': q, 'max_points': 3, 'status': 'passed', 'tests_passed': 10, 'tests_total': 10,"
    " 'points': 3, 'message': '', 'details': ''} for q in ('nms', 'batched_nms', 'window_positions',"
    " 'window_boxes')]"
)


def _write_fake_package(folder: Path, marker: Path) -> None:
    """A ``coursepkg`` package next to the notebooks, which the kernel imports first: its
    ``check``, harness and judge all report full marks."""
    fake_harness = (
        "import json\n"
        f"FAKE = {_FAKE_RESULTS}\n"
        "GRADING_ENV = 'COURSEPKG_GRADING'\n"
        "def grade_in_kernel(result_path, names, **kw):\n"
        "    open(result_path, 'w').write(json.dumps(FAKE))\n"
        "def harness_cell(*args, **kwargs):\n"
        "    return 'print(' + repr(json.dumps(FAKE)) + ')'\n"
        "def serve(*args, **kwargs):\n"
        "    print(json.dumps(FAKE))\n"
        "def main():\n"
        "    print(json.dumps(FAKE))\n"
    )
    files = {
        "__init__.py": "",
        "engine/__init__.py": "",
        "engine/runtime.py": (
            "def get_profile():\n    return 'fake'\n"
            "def describe_runtime(profile=None):\n    return 'fake'\n"
        ),
        "ops/__init__.py": "nms = None\n",
        "ops/boxes.py": "box_iou = None\n",
        "grading/__init__.py": "def check(*args, **kwargs):\n    print('✓ all tests passed')\n",
        "grading/harness.py": fake_harness,
        "grading/judge.py": fake_harness,
        "grading/runner.py": fake_harness,
        "grade.py": fake_harness,
    }
    for name, text in files.items():
        path = folder / "coursepkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


_TAMPER_CELL = f"""\
import builtins, io, json, pathlib, sys

FAKE = {_FAKE_RESULTS}
TEXT = json.JSONEncoder().encode(FAKE)
_real_dumps, _real_open, _real_read_text = json.dumps, builtins.open, pathlib.Path.read_text


def _dumps(obj, *args, **kwargs):  # only the grader's results: the kernel keeps working
    if isinstance(obj, list) and obj and isinstance(obj[0], dict) and "question" in obj[0]:
        return TEXT
    if isinstance(obj, dict) and "question" in obj and "status" in obj:
        obj = {{**obj, "status": "passed", "tests_passed": 10, "tests_total": 10}}
    return _real_dumps(obj, *args, **kwargs)


json.dumps = _dumps
json.dump = lambda obj, f, *args, **kwargs: f.write(_dumps(obj, *args, **kwargs))


def _open(file, mode="r", *args, **kwargs):
    if "r" in mode and str(file).endswith(".json"):
        return io.StringIO(TEXT)  # reading any results gives full marks
    return _real_open(file, mode, *args, **kwargs)


builtins.open = _open
pathlib.Path.write_text = lambda self, text, *args, **kwargs: _real_open(self, "w").write(
    TEXT if str(self).endswith(".json") and text.startswith("[") else text
)
pathlib.Path.read_text = lambda self, *args, **kwargs: (
    TEXT if str(self).endswith(".json") else _real_read_text(self, *args, **kwargs)
)
import _pytest.reports

_pytest.reports.BaseReport.passed = property(lambda self: True)
_pytest.reports.BaseReport.failed = property(lambda self: False)
print(TEXT)
sys.stdout.write(TEXT + "\\n")
"""


def _indent(source: str) -> str:
    return "".join("    " + line if line.strip() else line for line in source.splitlines(True))


def _tampering_nms(marker: Path):
    """03_nms's untouched stubs, with a kernel patched every way that used to fool the grader,
    next to a fake coursepkg; ``batched_nms`` answers with a pickle that runs a command."""
    nb = _read("exercises", "03_nms")
    _insert(nb, "nms", _TAMPER_CELL)
    _edit(
        nb,
        "nms",
        "    raise NotImplementedError",
        _indent(_TAMPER_CELL) + "    raise NotImplementedError",
    )
    _insert(nb, "nms", "import sys\nsys.exit(0)")
    _insert(nb, "nms", "import os\nos._exit(0)  # kills the kernel: the cell is skipped in a rerun")
    _edit(
        nb,
        "batched_nms",
        "    raise NotImplementedError",
        "    import os, pickle\n\n"
        "    class Evil:\n"
        "        def __reduce__(self):\n"
        f"            return (os.system, ('touch {marker}',))\n\n"
        "    torch.save = lambda obj, f, *args, **kwargs: pickle.dump(('returned', Evil(), [], '', 0), f)\n"
        "    raise NotImplementedError",
    )
    return nb


def _patched_json_only():
    """03_nms's stubs after a cell that only swaps the grader's results in ``json.dumps`` (this
    alone earned full marks when the kernel wrote the results)."""
    nb = _read("exercises", "03_nms")
    _insert(nb, "nms", _TAMPER_CELL.split("builtins.open = _open")[0])
    return nb


def _tampering_windows():
    """01_sliding_windows's stubs made to print fake results and exit, or kill their process."""
    nb = _read("exercises", "01_sliding_windows")
    _edit(
        nb,
        "window_positions",
        "    raise NotImplementedError",
        _indent(_TAMPER_CELL) + "    sys.exit(0)\n    raise NotImplementedError",
    )
    _edit(
        nb,
        "window_boxes",
        "    raise NotImplementedError",
        "    import os\n    os._exit(0)\n    raise NotImplementedError",
    )
    return nb


def test_tampering_stubs_earn_nothing(runs, tmp_path_factory):
    """Patched json/open/pathlib/pytest, exits, fake printed results, a fake coursepkg package in
    the notebook's folder and a malicious pickle: the stubs still score 0."""
    status, output, report, seconds = runs["misbehaving"]
    assert status == 0, output[-4000:]
    notebooks = _notebooks(runs, "misbehaving")
    got = {
        q["question"]: (q["status"], q["points"])
        for stem in ("03_nms_tampering", "01_sliding_windows_tampering")
        for q in notebooks[stem]["questions"]
    }
    assert got == {
        "nms": ("not implemented", 0),
        "batched_nms": ("crashed", 0),
        "window_positions": ("failed", 0),
        "window_boxes": ("crashed", 0),
    }
    assert (
        notebooks["03_nms_tampering"]["score"]
        == notebooks["01_sliding_windows_tampering"]["score"]
        == 0
    )
    patched = notebooks["03_nms_patched_json"]
    assert not patched["cell_errors"] and patched["score"] == 0
    assert [q["status"] for q in patched["questions"]] == ["not implemented"] * 2
    errors = "\n".join(notebooks["03_nms_tampering"]["cell_errors"])
    assert "killed the kernel" in errors
    positions = next(
        q
        for q in notebooks["01_sliding_windows_tampering"]["questions"]
        if q["question"] == "window_positions"
    )
    assert "SystemExit" in positions["message"]
    assert not any(
        Path(nb["path"]).parent.joinpath("..", "pwned").exists() for nb in report["notebooks"]
    )


def test_grader_command_line_errors(tmp_path):
    with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stderr(io.StringIO()):
        main([str(tmp_path / "nothing-here.ipynb")])
    assert exit_info.value.code == 2
    notes = tmp_path / "my_notes.ipynb"
    jupytext.write(jupytext.reads("print(1)\n", fmt="py:percent"), notes)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main([str(notes)]) == 1  # not an exercise: the grader could not grade it
    assert "NOT GRADED" in buffer.getvalue()


def test_exercise_is_told_from_the_name_or_the_checks():
    assert exercise_for("Copy of 02_boxes_iou.ipynb") == "02_boxes_iou"
    assert exercise_for("/content/drive/03_nms (1).ipynb") == "03_nms"
    assert exercise_for("homework.ipynb", 'check("batched_nms")') == "03_nms"
    assert exercise_for("homework.ipynb", 'check("rpn_loss")') == "07_faster_rcnn"
    assert exercise_for("homework.ipynb", "print(1)") is None


# --------------------------------------------------------------------------- check()


def _check_output(*args, **kwargs) -> str:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert check(*args, **kwargs) is None
    return buffer.getvalue()


def test_check_on_a_pass():
    out = _check_output("iou", _define(_answer("iou"), "iou"))
    assert out.startswith("✓ iou: all ") and "tests passed (2/2 points)" in out


def test_check_on_a_failure_shows_input_expected_got_and_hint():
    (no_clamp,) = [m for m in MISTAKES if m.question == "iou" and "no clamping" in m.description]
    out = _check_output("iou", _define(no_clamp.apply(_answer("iou")), "iou"), show_picture=False)
    assert out.startswith("✗ iou: ") and "(0/2 points)" in out
    assert "boxes far apart (both gaps negative): expected 0.0, got 0.666667" in out
    assert "box_a = (0.0, 0.0, 10.0, 10.0)" in out and "box_b = (20.0, 30.0, 40.0, 50.0)" in out
    assert "hint:" in out and "clamp" in out


def test_check_shows_tensors_and_the_first_difference():
    (plus_one,) = [m for m in MISTAKES if m.question == "iou_pairwise" and "+1" in m.description]
    out = _check_output(
        "iou_pairwise",
        _define(plus_one.apply(_answer("iou_pairwise")), "iou_pairwise"),
        show_picture=False,
    )
    assert "wrong value at [0, 0]: expected 0.111111, got 0.112593" in out
    assert "expected: tensor([[0.111111]])  (shape [1, 1], float32)" in out
    assert "'+1' IoU" in out


def test_check_explains_counts_of_a_random_sample():
    (product,) = [
        m for m in MISTAKES if m.question == "sample_anchors" and "n_sample" in m.description
    ]
    out = _check_output(
        "sample_anchors", _define(product.apply(_answer("sample_anchors")), "sample_anchors")
    )
    assert "kept 20 positives and 1500 negatives, expected 20 and 236" in out
    assert "hint:" in out and "n_sample * np.sum(label == 1)" in out


def test_check_finds_the_function_in_the_callers_namespace():
    namespace = {"check": check}
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        exec("check('window_positions')", namespace)
        exec(
            "def window_positions(length, window, step):\n    return list(range(0, length - window + 1, step))\ncheck('window_positions')",
            namespace,
        )
    missing, passed = buffer.getvalue().split("\n", 2)[:2]
    assert "missing" in missing or "no function named window_positions" in buffer.getvalue()
    assert "✓ window_positions" in buffer.getvalue()


def test_check_never_raises():
    assert "no question named 'iuo'" in _check_output("iuo")

    def raises(box_a, box_b):
        return 1 / 0

    out = _check_output("iou", raises)
    assert "your function raised ZeroDivisionError: division by zero" in out and "raises()" in out

    def loops(box_a, box_b):
        while True:
            pass

    start = time.perf_counter()
    assert "time limit of 0.5 s exceeded" in _check_output("iou", loops, time_limit=0.5)
    assert time.perf_counter() - start < 5

    def prints(box_a, box_b):
        print("z" * 1_000_000)
        return 0.5

    out = _check_output("iou", prints)
    assert "what your function printed" in out and len(out) < 20_000

    assert "coursepkg's own" in _check_output(
        "window_positions",
        __import__("coursepkg.ops.sliding_windows").ops.sliding_windows.window_positions,
    )


def test_check_does_nothing_inside_the_grader(monkeypatch):
    monkeypatch.setenv("COURSEPKG_GRADING", "1")
    assert "skipped" in _check_output("iou")


def test_failure_picture_draws_every_box():
    import matplotlib

    matplotlib.use("Agg")
    (no_sort,) = [m for m in MISTAKES if m.question == "nms" and "sort" in m.description]
    result = run_question(get_question("nms"), _define(no_sort.apply(_answer("nms")), "nms"))
    layers = result.picture["layers"]
    assert [layer["label"] for layer in layers] == ["boxes", "expected", "yours"]
    fig = draw_picture(result.picture)
    assert len(fig.axes[0].patches) == sum(len(layer["boxes"]) for layer in layers)


# --------------------------------------------------------------------------- the helpers


def test_show_cuts_long_tensors():
    text = show(torch.arange(40.0).reshape(20, 2))
    assert "... (20 rows)" in text and "(shape [20, 2], float32)" in text
    assert show(torch.zeros(0, 4)) == "tensor([])  (shape [0, 4], float32)"


def test_expect_int_list_accepts_sequences_of_ints_only():
    case = Case("c", {"x": 1})
    for good in ([0, 8], (0, 8), range(0, 9, 8), torch.tensor([0, 8])):
        expect_int_list(good, [0, 8], case)
    for bad in ([0.0, 8.0], torch.tensor([0.0, 8.0]), "08", None):
        with pytest.raises(AssertionError, match="expected a list of ints"):
            expect_int_list(bad, [0, 8], case)
    with pytest.raises(AssertionError, match=r"missing \[16\]"):
        expect_int_list([0, 8], [0, 8, 16], case)


def test_question_bank_is_consistent():
    names = [q.name for q in QUESTIONS]
    assert len(names) == len(set(names)) >= 10
    assert all(q.points > 0 and q.tests.is_file() for q in QUESTIONS)
    for exercise in EXERCISES:
        for folder in ("exercises", "solutions"):
            assert (ROOT / folder / f"{exercise}.md").is_file() and (
                ROOT / folder / f"{exercise}.ipynb"
            ).is_file()
    assert os.path.basename(get_question("iou").tests) == "test_iou.py"


@pytest.mark.parametrize(
    "args, option",
    [
        (["--timeout", "nan"], "--timeout"),
        (["--timeout", "inf"], "--timeout"),
        (["--timeout", "0"], "--timeout"),
        (["--cell-timeout=-inf"], "--cell-timeout"),
        (["--cell-timeout", "nan"], "--cell-timeout"),
        (["--json", "/no/such/folder/grades.json"], "--json"),
        (["--json", "."], "--json"),
    ],
)
def test_bad_options_are_refused_before_grading(tmp_path, args, option):
    notebook = tmp_path / "02_boxes_iou.ipynb"
    notebook.write_text("{}")
    err = io.StringIO()
    with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stderr(err):
        main([str(notebook), *args])
    assert exit_info.value.code == 2 and option in err.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    "text, says",
    [
        ("not json {", "is not valid JSON"),
        ("{}", "is not a Jupyter notebook"),
        ("[1, 2]", "is not a Jupyter notebook"),
        ('{"cells": 3, "nbformat": 4}', "is not a Jupyter notebook"),
    ],
)
def test_unreadable_notebook_is_named_without_a_traceback(tmp_path, text, says):
    notebook = tmp_path / "02_boxes_iou_broken.ipynb"
    notebook.write_text(text)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main([str(notebook)]) == 1
    assert f"NOT GRADED: cannot read the notebook: {notebook.name} {says}" in out.getvalue()
    assert "Traceback" not in out.getvalue() + err.getvalue()
