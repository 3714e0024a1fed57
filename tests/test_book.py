"""The book's structure: MyST/ipynb pairs in sync, every chapter in the table of contents, the same
setup cell everywhere (pointing at the repository the Colab buttons use), and a Sphinx build with
warnings as errors (without execution: nbval executes every notebook separately)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import jupytext
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIRS = ("book", "exercises", "solutions")


def _config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections", []))
            walk(entry.get("chapters", []))

    for part in toc.get("parts", []):
        walk(part.get("chapters", []))
    walk(toc.get("chapters", []))
    return files


def _myst_notebooks() -> list[Path]:
    paths = []
    for folder in NOTEBOOK_DIRS:
        for md in sorted((ROOT / folder).glob("*.md")):
            if "jupytext:" in md.read_text().split("---", 2)[1 if md.read_text().startswith("---") else 0]:
                paths.append(md)
    return paths


MYST_NOTEBOOKS = _myst_notebooks()


def _setup_cell() -> str:
    url = _config()["repository"]["url"].rstrip("/")
    branch = _config()["repository"]["branch"]
    return (
        "# Setup: on Colab, install the course package (Colab's own torch is kept); elsewhere nothing happens.\n"
        "import sys\n"
        'if "google.colab" in sys.modules:\n'
        f'    %pip install --quiet "coursepkg @ git+{url}@{branch}"\n'
        "from coursepkg.engine.runtime import describe_runtime, get_profile\n"
        "PROFILE = get_profile()\n"
        "describe_runtime(PROFILE);"
    )


def test_there_are_notebooks():
    assert any(p.parent.name == "book" for p in MYST_NOTEBOOKS)


@pytest.mark.parametrize("md", MYST_NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_pair_in_sync(md: Path):
    """The committed .ipynb (what Colab opens) has exactly the cells of its MyST source."""
    ipynb = md.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.relative_to(ROOT)} is missing: run `bash scripts/sync_notebooks.sh`"
    text, paired = jupytext.read(md), jupytext.read(ipynb)
    cells = [(c.cell_type, c.source.strip()) for c in text.cells]
    paired_cells = [(c.cell_type, c.source.strip()) for c in paired.cells]
    assert cells == paired_cells, (
        f"{md.relative_to(ROOT)} and its .ipynb have drifted: run `bash scripts/sync_notebooks.sh`"
    )
    # Colab opens the .ipynb as committed: no stale outputs from someone's local run.
    for cell in paired.cells:
        if cell.cell_type == "code":
            assert not cell.get("outputs"), f"{ipynb.relative_to(ROOT)} carries outputs; strip them"


@pytest.mark.parametrize("md", MYST_NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_first_code_cell_is_the_setup_cell(md: Path):
    code = [c for c in jupytext.read(md).cells if c.cell_type == "code"]
    assert code, f"{md} has no code cell"
    assert code[0].source.strip() == _setup_cell(), (
        f"the first code cell of {md.relative_to(ROOT)} must be the course's setup cell, pointing at "
        "repository.url/branch of _config.yml"
    )


CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.md")) + [ROOT / "book" / "real_photographs.md"]


def _chapter_time_cell(page: str) -> str:
    return (
        "# The opener's running times: read from the last recorded build of the website (not this run).\n"
        "from coursepkg.engine.chapter_times import chapter_time_text\n"
        "from coursepkg.viz import glue\n\n"
        f'glue("chapter_time_cpu", chapter_time_text("{page}", "cpu"))\n'
        f'glue("chapter_time_gpu", chapter_time_text("{page}", "gpu"));'
    )


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_opens_with_what_you_learn_and_its_time_and_ends_with_summary_and_exercises(md: Path):
    """Issue 16 §6: an opener (what you will learn, measured time on CPU and GPU), a summary, and
    the exercises, in that order; the times come from the package's recorded build of this page."""
    text = md.read_text()
    opener = re.search(r"```\{admonition\} In this chapter\n(.*?)\n```", text, re.S)
    assert opener, f"{md.name}: no '{{admonition}} In this chapter' opener"
    assert "You will learn" in opener.group(1), f"{md.name}: the opener does not say what you will learn"
    for key in ("chapter_time_cpu", "chapter_time_gpu"):
        assert f"{{glue:text}}`{key}`" in opener.group(1), f"{md.name}: the opener does not show {key}"
    code = [c.source.strip() for c in jupytext.read(md).cells if c.cell_type == "code"]
    assert code[1] == _chapter_time_cell(md.stem), (
        f"{md.name}: the second code cell must glue this page's recorded times (see 10_retinanet.md)"
    )
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert "Summary" in headings, f"{md.name}: no '## Summary'"
    if (ROOT / "exercises" / md.name).exists():
        assert headings[-1] == "Exercises", f"{md.name}: the last section must be '## Exercises'"
        assert headings.index("Summary") < headings.index("Exercises")
        exercises = text[text.index("## Exercises"):]
        assert f"exercises/{md.stem}.ipynb" in exercises, f"{md.name}: the exercises section must link its notebook"


def test_every_chapter_is_in_the_toc_and_every_toc_entry_exists():
    toc = _toc_files()
    for entry in toc:
        assert any((ROOT / f"{entry}{ext}").exists() for ext in (".md", ".ipynb")), f"{entry} in _toc.yml has no file"
    pages = {str(p.relative_to(ROOT).with_suffix("")) for p in (ROOT / "book").glob("*.md")}
    missing = sorted(pages - set(toc))
    assert not missing, f"chapters missing from _toc.yml: {missing}"


def test_config_points_colab_at_the_right_branch():
    config = _config()
    assert config["repository"]["branch"] == "main"
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", config["repository"]["url"])
    assert config["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    # The book is built from the MyST side; the .ipynb twins must be excluded or Sphinx sees duplicates.
    assert "book/*.ipynb" in config["exclude_patterns"]


@pytest.mark.slow
def test_book_builds_without_warnings(tmp_path: Path):
    """Sphinx with warnings as errors, execution off (toc, citations, cross-references, MyST)."""
    jb = Path(sys.executable).parent / "jupyter-book"
    assert jb.exists(), "jupyter-book is not installed next to this Python (pip install -e '.[book]')"
    config = _config()
    config["execute"]["execute_notebooks"] = "off"
    # Without execution the numbers that cells hand to the prose (glue) do not exist; the real
    # build (scripts/build_book.sh, and the fresh-clone test below) resolves every one of them.
    config["sphinx"]["config"]["suppress_warnings"] = [
        *config["sphinx"]["config"].get("suppress_warnings", []), "mystnb.glue"
    ]
    (tmp_path / "_config.yml").write_text(yaml.safe_dump(config))
    out = subprocess.run(
        [str(jb), "build", str(ROOT), "--config", str(tmp_path / "_config.yml"),
         "--path-output", str(tmp_path), "--warningiserror", "--keep-going"],
        capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    html = tmp_path / "_build" / "html"
    assert (html / "book" / "intro.html").exists()
    page = (html / "book" / "data_and_conventions.html").read_text()
    # The Colab launch button points at the committed .ipynb on the configured branch.
    url = config["repository"]["url"].removeprefix("https://github.com/")
    assert f"colab.research.google.com/github/{url}/blob/main/book/data_and_conventions.ipynb" in page


def test_kernels_started_by_the_build_return_figures_as_images():
    """A figure shown in a Jupyter kernel must come back as a PNG, or the website has no plots.

    An ``MPLBACKEND=Agg`` in the environment (say, exported by a set-up script) makes
    ``plt.show()`` a silent no-op in the kernels that execute the chapters.
    """
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3")
    try:
        outputs = []
        client.execute_interactive(
            "import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])\nplt.show()",
            timeout=120,
            output_hook=outputs.append,
        )
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    images = [
        msg for msg in outputs
        if msg["msg_type"] == "display_data" and "image/png" in msg["content"]["data"]
    ]
    assert images, "plt.show() in a kernel returned no image: is MPLBACKEND set in the environment?"


FRESH_BUILD_ENV = "COURSE_TEST_FRESH_BUILD"


@pytest.mark.slow
@pytest.mark.skipif(
    not (os.environ.get("CI") or os.environ.get(FRESH_BUILD_ENV)),
    reason=f"runs in CI (CI=true) or with {FRESH_BUILD_ENV}=1: it creates a virtual environment",
)
def test_readme_build_command_works_first_in_a_fresh_clone(tmp_path: Path):
    """The README's build command, run first in a fresh clone with a new virtual environment.

    This is what a reader does first: nothing is installed yet, the test command has never run.
    The smoke profile keeps it short; every page must execute (e.g. the performance page imports
    the benchmarks, which need torchvision: the ``book`` extra must bring it).
    """
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=300)
    venv_bin = str(Path(sys.prefix) / "bin")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "COURSE_VENV")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env["PYTHON"] = getattr(sys, "_base_executable", sys.executable)
    env["COURSE_PROFILE"] = "smoke"
    start = time.perf_counter()
    out = subprocess.run(
        ["bash", "scripts/build_book.sh"], cwd=clone, env=env, capture_output=True, text=True,
        timeout=3000,
    )
    seconds = time.perf_counter() - start
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-6000:]
    assert (clone / ".venv" / "bin" / "python").exists(), "the build command made no virtual environment"
    html = clone / "_build" / "html" / "book"
    for page in ("intro", "package", "performance", "07_faster_rcnn"):
        text = (html / f"{page}.html").read_text()
        assert "Traceback" not in text and "ModuleNotFoundError" not in text, f"{page} shows an error"
        # A number handed to the prose as a numpy/torch object reads "np.float64(0.44)" on the page.
        for leak in ("np.float64(", "np.float32(", "np.int64(", "np.bool_(", "tensor("):
            for match in re.finditer(re.escape(leak), text):
                context = text[max(0, match.start() - 80):match.end() + 40]
                assert 'class="pasted-text"' not in context, f"{page}: prose shows {context!r}"
    assert "execution time per page" in out.stdout, "build_book.sh printed no table of execution times"
    print(out.stdout[out.stdout.index("==> execution time per page"):])
    print(f"fresh clone + new environment + smoke build: {seconds:.0f} s")


def test_exec_times_prints_each_executed_page_and_marks_the_slow_ones(tmp_path, capsys):
    """scripts/exec_times.py reads myst-nb's timings from the Sphinx environment of a build."""
    import importlib.util
    import pickle
    import types

    spec = importlib.util.spec_from_file_location("exec_times", ROOT / "scripts" / "exec_times.py")
    exec_times = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exec_times)
    env = types.SimpleNamespace(nb_metadata={
        "book/03_nms": {"exec_data": {"runtime": 5.9}},
        "book/07_faster_rcnn": {"exec_data": {"runtime": 190.0}},
        "book/intro": {},  # not a notebook: no timing
    })
    (tmp_path / ".doctrees").mkdir()
    (tmp_path / ".doctrees" / "environment.pickle").write_bytes(pickle.dumps(env))
    assert exec_times.main([str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "==> execution time per page (budget 180 s)"
    assert "book/03_nms" in lines[1] and "5.9 s" in lines[1] and "OVER" not in lines[1]
    assert "book/07_faster_rcnn" in lines[2] and lines[2].endswith("OVER BUDGET")
    assert "total" in lines[3] and "195.9 s" in lines[3] and len(lines) == 4
    assert exec_times.main([str(tmp_path / "missing")]) == 0  # no build yet: says so, no traceback
    assert "no build found" in capsys.readouterr().err
    # --record stores the book's pages (without the folder) for the chapters' openers.
    from coursepkg.engine.chapter_times import chapter_time_text

    times = tmp_path / "times.json"
    args = [str(tmp_path), "--record", "cpu", "--machine", "2 CPU cores", "--times-file", str(times)]
    assert exec_times.main(args) == 0
    assert "recorded as the cpu build" in capsys.readouterr().out
    assert chapter_time_text("07_faster_rcnn", "cpu", times).startswith("3 min 10 s (2 CPU cores, build of ")
    assert chapter_time_text("07_faster_rcnn", "gpu", times) == "not measured yet"
    assert chapter_time_text("intro", "cpu", times) == "not measured yet"
