"""Chapters 1-7: every numbered equation is linked to the function that implements it, and back.

The page names the function in its prose and cites the equation with ``{eq}``; the function's
docstring names the equation's label and the page. Every reference to the book in the package and
the benchmarks (``Chapter: book/NN_x (section "S")`` and the other forms of :data:`REFERENCE`),
to any page, names a page that exists and, where it names sections, headings the page has.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
PACKAGE = Path(__file__).resolve().parents[1] / "coursepkg"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
CHAPTERS = sorted(p.stem for p in BOOK.glob("0[1-7]_*.md"))

# label -> (chapter, the functions that implement it, as "module:function")
EQUATIONS = {
    "eq-window-positions": (
        "01_sliding_windows",
        [
            "coursepkg.ops.sliding_windows:window_positions",
            "coursepkg.ops.sliding_windows:sliding_windows",
        ],
    ),
    "eq-window-count": ("01_sliding_windows", ["coursepkg.ops.sliding_windows:count_windows"]),
    "eq-iou": (
        "02_boxes_iou",
        ["coursepkg.ops.boxes:box_iou", "coursepkg.ops.boxes:box_iou_reference"],
    ),
    "eq-nms-overlap": (
        "03_nms",
        ["coursepkg.ops.nms:malisiewicz_nms", "coursepkg.ops.nms:malisiewicz_nms_steps"],
    ),
    "eq-nms-rule": ("03_nms", ["coursepkg.ops.nms:nms", "coursepkg.ops.nms:nms_reference"]),
    "eq-soft-nms-linear": ("03_nms", ["coursepkg.ops.nms:soft_nms"]),
    "eq-soft-nms-gaussian": ("03_nms", ["coursepkg.ops.nms:soft_nms"]),
    "eq-precision-recall": ("04_evaluation", ["coursepkg.evaluation.ap:precision_recall"]),
    "eq-interp": ("04_evaluation", ["coursepkg.evaluation.ap:average_precision"]),
    "eq-ap-all-point": ("04_evaluation", ["coursepkg.evaluation.ap:average_precision"]),
    "eq-ap-11-point": ("04_evaluation", ["coursepkg.evaluation.ap:average_precision"]),
    "eq-ap-101-point": ("04_evaluation", ["coursepkg.evaluation.ap:average_precision"]),
    "rcnn-targets": ("05_rcnn", ["coursepkg.ops.box_coding:encode_boxes"]),
    "rcnn-decode": ("05_rcnn", ["coursepkg.ops.box_coding:decode_boxes"]),
    "roi-pool-bins": (
        "06_fast_rcnn",
        ["coursepkg.ops.roi_pool:roi_pool_reference", "coursepkg.ops.roi_pool:roi_pool"],
    ),
    "fast-rcnn-loss": ("06_fast_rcnn", ["coursepkg.models.fast_rcnn:multi_task_loss"]),
    "anchor-shape": ("07_faster_rcnn", ["coursepkg.models.anchors:generate_anchors"]),
    "anchor-labels": ("07_faster_rcnn", ["coursepkg.models.assignment:match_anchors"]),
    "balanced-sample": ("07_faster_rcnn", ["coursepkg.models.assignment:sample_balanced"]),
    "rpn-loss": ("07_faster_rcnn", ["coursepkg.models.rpn:rpn_loss"]),
}


def _prose(chapter: str) -> str:
    """The page's markdown outside its code cells."""
    text = (BOOK / f"{chapter}.md").read_text(encoding="utf-8")
    return re.sub(r"```\{code-cell\}.*?\n```", "", text, flags=re.S)


def _labels(chapter: str) -> list[str]:
    text = (BOOK / f"{chapter}.md").read_text(encoding="utf-8")
    return re.findall(r"```\{math\}\n:label: ([\w-]+)", text)


def _plain(text: str) -> str:
    """A heading or a section name as compared: no backticks, whitespace runs as one space."""
    return " ".join(text.replace("`", "").split())


def _headings(chapter: str) -> set[str]:
    """The page's ``#`` to ``####`` headings outside code cells (a code comment is no heading)."""
    text = (BOOK / f"{chapter}.md").read_text(encoding="utf-8")
    text = re.sub(r"^(`{3,}|~{3,}).*?^\1[ \t]*$", "", text, flags=re.S | re.M)
    return {
        _plain(re.sub(r"^#+\s*", "", line))
        for line in text.splitlines()
        if re.match(r"#{1,4} ", line)
    }


def _function(path: str) -> object:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def test_the_table_lists_every_numbered_equation_of_chapters_1_to_7():
    on_pages = {label: chapter for chapter in CHAPTERS for label in _labels(chapter)}
    assert len(CHAPTERS) == 7
    assert on_pages == {label: chapter for label, (chapter, _) in EQUATIONS.items()}


@pytest.mark.parametrize("label", sorted(EQUATIONS))
def test_the_page_cites_the_equation_and_names_its_functions(label: str):
    chapter, functions = EQUATIONS[label]
    prose = _prose(chapter)
    assert f"{{eq}}`{label}`" in prose, f"{chapter} never cites Eq. {label} in its text"
    for path in functions:
        name = path.split(":")[1]
        assert re.search(rf"`(?:[\w.]+\.)?{name}`", prose), f"{chapter}'s text does not name {name}"


@pytest.mark.parametrize("label", sorted(EQUATIONS))
def test_the_docstring_names_the_equation_and_the_page(label: str):
    chapter, functions = EQUATIONS[label]
    for path in functions:
        doc = inspect.getdoc(_function(path)) or ""
        assert label in doc, f"{path}'s docstring does not name Eq. ({label})"
        assert f"book/{chapter}" in doc, f"{path}'s docstring does not name book/{chapter}"


# A reference to the book: ``book/NAME`` (a page, book/NAME.md), ``book/NAME.EXT`` (a file, such
# as book/capstone_cpu.json) or ``book/NAME_<field>.EXT`` (a pattern of files; ``<field>`` matches
# any text). A page's sections are named in one of three forms:
#   book/10_retinanet (section "The heads and the prior")    also (sections "A", "B" and "C")
#   book/12_iou_losses, section "With a detector"
#   section "True and false positives" of book/04_evaluation
# Whitespace, line breaks included, may separate the words, so a reference broken across two lines
# of a docstring is read whole. Not read: a section named without a page (it belongs to the page
# named earlier in the text) and a page written in any other way (``chapter 10``, ``{doc}``).
_NAMES = r'"[^"]*"(?:\s*(?:,|\band\b)\s*"[^"]*")*'
REFERENCE = re.compile(
    rf"(?:\bsections?\s+(?P<before>{_NAMES})\s+of\s+)?"
    r"\bbook/(?P<name>[\w<>]+)(?P<ext>\.\w+)?"
    rf"(?:\s*\(sections?\s+(?P<paren>{_NAMES})|,\s*sections?\s+(?P<comma>{_NAMES}))?"
)


def _references(text: str) -> list[tuple[int, str, list[str]]]:
    """``(line, target, sections)`` of every reference in ``text``; target: a page or a file."""
    found = []
    for ref in REFERENCE.finditer(text):
        names = ref.group("before") or ref.group("paren") or ref.group("comma") or ""
        target = ref.group("name") + (ref.group("ext") or "")
        line = text[: ref.start("name")].count("\n") + 1
        found.append((line, target, [_plain(s) for s in re.findall(r'"([^"]*)"', names)]))
    return found


def _stale(target: str, sections: list[str]) -> str | None:
    """Why the reference is stale, or None."""
    stem, dot, ext = target.partition(".")
    if dot and ext not in ("md", "ipynb"):  # a file, or a pattern of files
        pattern = re.sub(r"<\w+>", "*", target)
        return None if any(BOOK.glob(pattern)) else f"no file book/{target}"
    if not (BOOK / f"{stem}.md").is_file():
        return f"no page book/{stem}"
    missing = [s for s in sections if s not in _headings(stem)]
    if missing:
        return f"book/{stem} has no section " + ", ".join(f'"{s}"' for s in missing)
    return None


def test_the_reference_reader_reads_every_form():
    text = (
        'Chapter: book/10_retinanet (section "The heads and the prior").\n'
        '    Chapter: book/13_fcos (sections "Targets of one point",\n'
        '    "Which level" and "Centre sampling"); book/07_faster_rcnn\n'
        '    (section "Anchors\n    and the RPN"). See book/12_iou_losses, section "With a detector",\n'
        '(section "True and false positives" of book/04_evaluation); book/03_nms.\n'
        "writes book/capstone_cpu.json, default book/capstone_<profile>.json; book/01.\n"
    )
    assert _references(text) == [
        (1, "10_retinanet", ["The heads and the prior"]),
        (2, "13_fcos", ["Targets of one point", "Which level", "Centre sampling"]),
        (3, "07_faster_rcnn", ["Anchors and the RPN"]),
        (5, "12_iou_losses", ["With a detector"]),
        (6, "04_evaluation", ["True and false positives"]),
        (6, "03_nms", []),
        (7, "capstone_cpu.json", []),
        (7, "capstone_<profile>.json", []),
        (7, "01", []),
    ]
    assert _stale("10_retinanet", ["The heads and the prior"]) is None
    assert _stale("10_retinanet", ["The heads"]) == 'book/10_retinanet has no section "The heads"'
    assert _stale("training", ["Scaling out: several processes with torchrun"]) is None
    assert _stale("01", []) == "no page book/01"
    assert _stale("capstone_<profile>.json", []) is None
    assert _stale("capstone_gpu_seed9.json", []) == "no file book/capstone_gpu_seed9.json"
    assert "Setup" not in " ".join(_headings("01_sliding_windows"))  # a code comment is no heading


def test_package_references_to_the_book_name_existing_pages_and_sections():
    references = 0
    pages = set()
    stale = []
    for source in sorted([*PACKAGE.rglob("*.py"), *BENCHMARKS.rglob("*.py")]):
        text = source.read_text(encoding="utf-8")
        for line, target, sections in _references(text):
            references += 1
            pages.add(target)
            why = _stale(target, sections)
            if why:
                stale.append(f"{source.relative_to(PACKAGE.parent)}:{line}: {why}")
    # the scan finds the references at all: many, to the numbered chapters and the other pages
    assert references > 300
    assert set(CHAPTERS) <= pages
    assert {"10_retinanet", "13_fcos", "training", "data_and_conventions", "exercises"} <= pages
    assert not stale, f"{len(stale)} stale references to the book:\n" + "\n".join(stale)
