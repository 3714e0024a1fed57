#!/usr/bin/env bash
# Build the website into _build/html, from a clean clone: every chapter is executed (the "cpu"
# profile on a machine without a GPU) and Sphinx warnings are errors.
# Open _build/html/index.html afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh "book"
status=0
jupyter-book build . --warningiserror --keep-going "$@" || status=$?
# Per-page execution times as Jupyter Book measured them (each chapter's budget: 180 s on 2 cores).
python scripts/exec_times.py _build || true
[ "$status" -eq 0 ] || exit "$status"
echo "==> website: $PWD/_build/html/index.html"
