"""The package's layers import one way: ops <- data <- models <- engine; evaluation and viz on ops.

Every ``import`` and ``from ... import`` of every module of ``coursepkg`` (function-local imports
included) is parsed with ``ast``; an import that goes up a layer, or a cycle between modules,
fails with the offending file and line. See the "How the package is organised" page of the book.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import coursepkg

PACKAGE_DIR = Path(coursepkg.__file__).parent

# What each layer may import (besides itself). "grading" stands apart: it judges students' code
# against the references, so it may read every layer but the engine, and no layer imports it.
ALLOWED = {
    "ops": set(),
    "data": {"ops"},
    "models": {"ops", "data"},
    "evaluation": {"ops"},
    "viz": {"ops"},
    "engine": {"ops", "data", "models", "evaluation", "viz"},
    "grading": {"ops", "data", "models", "evaluation", "viz"},
    "grade": {"grading"},  # the `python -m coursepkg.grade` entry point
    "__init__": set(),
}
LAYERS = set(ALLOWED)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _layer(module: str) -> str:
    """``coursepkg.ops.boxes`` -> ``ops``; the package itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _course_imports(path: Path, package: str | None = None) -> list[tuple[int, str]]:
    """Every (line, imported module of coursepkg) in one file, relative imports resolved.

    ``package`` is the dotted package the file lives in (derived from its path by default).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    if package is None:
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from coursepkg.ops import nms` imports the module coursepkg.ops.nms.
            names = [module]
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                if _is_module(candidate):
                    names.append(candidate)
        else:
            continue
        found += [(node.lineno, name) for name in names if name.split(".")[0] == "coursepkg"]
    return found


def _is_module(dotted: str) -> bool:
    relative = Path(*dotted.split(".")[1:]) if "." in dotted else Path()
    return (PACKAGE_DIR / relative).with_suffix(".py").is_file() or (
        PACKAGE_DIR / relative / "__init__.py"
    ).is_file()


def _package_files() -> list[Path]:
    return sorted(p for p in PACKAGE_DIR.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_belongs_to_a_layer():
    strays = [str(p.relative_to(PACKAGE_DIR)) for p in _package_files() if _layer(_module_name(p)) not in LAYERS]
    assert not strays, f"modules outside the layers {sorted(LAYERS)}: {strays}"


def test_the_layers_exist_as_packages():
    for layer in ("ops", "data", "models", "engine", "evaluation", "grading"):
        assert (PACKAGE_DIR / layer / "__init__.py").is_file(), f"coursepkg/{layer}/ is missing"
    assert (PACKAGE_DIR / "viz.py").is_file()
    # No compatibility shims: the old flat modules are gone.
    old = ["boxes", "nms", "sliding_windows", "box_coding", "roi_pool", "anchors", "assignment",
           "rpn", "roi_heads", "rcnn", "fast_rcnn", "faster_rcnn", "detector", "selective_search",
           "training", "checkpoint", "runtime", "datasets"]
    left = [m for m in old if (PACKAGE_DIR / f"{m}.py").exists() or (PACKAGE_DIR / m).is_dir()]
    assert not left, f"old top-level modules still present: {left}"


def test_no_upward_imports():
    problems = []
    for path in _package_files():
        here = _layer(_module_name(path))
        for line, imported in _course_imports(path):
            there = _layer(imported)
            if there != here and there not in ALLOWED[here] and imported != "coursepkg":
                problems.append(f"{path.relative_to(PACKAGE_DIR.parent)}:{line}: {here} imports {imported} ({there})")
    assert not problems, "imports against the layer order:\n" + "\n".join(problems)


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in _package_files():
        name = _module_name(path)
        graph.setdefault(name, set())
        for _, imported in _course_imports(path):
            # a package's __init__ importing its own submodules is re-export, not a dependency loop
            if imported != name and not (path.name == "__init__.py" and imported.startswith(name + ".")):
                graph[name].add(imported)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if state.get(nxt) is None:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycles():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# The checks themselves must be able to fail.


def test_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize(
    ("source", "layer", "ok"),
    [
        ("from coursepkg.models.rpn import RPNHead\n", "ops", False),
        ("import coursepkg.engine.training\n", "models", False),
        ("from coursepkg.ops import nms\n", "evaluation", True),
        ("from coursepkg.data import ShapesDataset\n", "evaluation", False),
        ("def f():\n    from coursepkg.engine import runtime\n", "data", False),
        ("from ..models import rpn\n", "ops", False),
        ("from . import boxes\n", "ops", True),
    ],
)
def test_upward_import_detector(tmp_path, source, layer, ok):
    path = tmp_path / "probe.py"
    path.write_text(source)
    imports = _course_imports(path, package=f"coursepkg.{layer}")
    assert imports, "the probe's import was not seen"
    bad = [i for _, i in imports if _layer(i) != layer and _layer(i) not in ALLOWED[layer]]
    assert (not bad) == ok, bad
