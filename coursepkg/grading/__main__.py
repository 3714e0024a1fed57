"""``python -m coursepkg.grading PATH ...`` (also ``python -m coursepkg.grade``): grade notebooks.

Exit status: 0 when every notebook was graded (whatever the score), 1 when the grader itself
failed on one (an unreadable notebook, an unknown exercise, tests that could not run), 2 for a
bad command line.

Chapter: book/exercises
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from coursepkg.grading.notebooks import CELL_TIMEOUT, grade_paths
from coursepkg.grading.report import format_table, write_json
from coursepkg.grading.results import DEFAULT_TIME_LIMIT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m coursepkg.grade",
        description="Execute exercise notebooks in a fresh kernel and grade every question.",
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="a notebook (.ipynb or MyST .md) or a folder of them",
    )
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIME_LIMIT,
        metavar="S",
        help=f"seconds for each question's tests (default {DEFAULT_TIME_LIMIT:g})",
    )
    parser.add_argument(
        "--cell-timeout",
        type=float,
        default=CELL_TIMEOUT,
        metavar="S",
        help=f"seconds for each notebook cell (default {CELL_TIMEOUT:g})",
    )
    parser.add_argument(
        "--exercise",
        help="grade as this exercise (e.g. 02_boxes_iou) instead of guessing from the file",
    )
    parser.add_argument(
        "--details", action="store_true", help="print each failure in full after the table"
    )
    args = parser.parse_args(argv)
    for option, value in (("--timeout", args.timeout), ("--cell-timeout", args.cell_timeout)):
        if not (math.isfinite(value) and value > 0):
            parser.error(f"{option} must be a positive finite number of seconds, got {value}")
    if args.json:
        folder = Path(args.json).resolve().parent
        if Path(args.json).is_dir():
            parser.error(f"--json {args.json}: that is a folder, give a file name")
        if not folder.is_dir():
            parser.error(f"--json {args.json}: no such folder: {folder}")
        if not os.access(folder, os.W_OK):
            parser.error(f"--json {args.json}: cannot write in the folder {folder}")
    try:
        results = grade_paths(
            args.paths,
            exercise=args.exercise,
            time_limit=args.timeout,
            cell_timeout=args.cell_timeout,
        )
    except FileNotFoundError as error:
        parser.error(str(error))
    except Exception as error:  # a bug of the grader: say so, exit 1
        print(f"the grader failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    if not results:
        print("no exercise notebooks found in " + ", ".join(args.paths), file=sys.stderr)
        return 1
    print(format_table(results, details=args.details))
    if args.json:
        write_json(results, args.json)
    return 1 if any(r.grader_failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
