"""Chapters 1-7: every numbered equation is linked to the function that implements it, and back.

The page names the function in its prose and cites the equation with ``{eq}``; the function's
docstring names the equation's label and the page. Every ``Chapter: book/NN_x (section "S")``
reference in the package to one of these pages names a heading the page has.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
PACKAGE = Path(__file__).resolve().parents[1] / "coursepkg"
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


def _headings(chapter: str) -> set[str]:
    text = (BOOK / f"{chapter}.md").read_text(encoding="utf-8")
    return {
        re.sub(r"^#+\s*", "", line).strip()
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


def test_package_references_to_chapters_1_to_7_name_existing_sections():
    headings = {chapter: _headings(chapter) for chapter in CHAPTERS}
    references = 0
    stale = []
    for source in sorted(PACKAGE.rglob("*.py")):
        text = source.read_text(encoding="utf-8")
        for ref in re.finditer(r"book/(0[1-7]_\w+)(\s*\(sections?\s+\"[^)]*\))?", text):
            references += 1
            chapter, sections = ref.group(1), ref.group(2)
            line = text[: ref.start()].count("\n") + 1
            if chapter not in headings:
                stale.append(f"{source.relative_to(PACKAGE.parent)}:{line}: no page {chapter}")
                continue
            for section in re.findall(r"\"([^\"]+)\"", sections or ""):
                if section not in headings[chapter]:
                    stale.append(
                        f'{source.relative_to(PACKAGE.parent)}:{line}: {chapter} has no "{section}"'
                    )
    assert references > 50  # the scan finds the references at all
    assert stale == []
