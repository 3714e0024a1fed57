"""``python -m coursepkg.grade PATH [--json OUT] [--timeout S]``: grade exercise notebooks.

A short name for :mod:`coursepkg.grading`'s command line; see ``--help`` and the book's page
"How the exercises work".

Chapter: book/exercises
"""

import sys

from coursepkg.grading.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
