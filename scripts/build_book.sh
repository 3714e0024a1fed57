#!/usr/bin/env bash
# Build the website into _build/html, from a clean clone: every chapter is executed (the "cpu"
# profile on a machine without a GPU) and Sphinx warnings are errors.
# Open _build/html/index.html afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh "book"
jupyter-book build . --warningiserror --keep-going "$@"
echo "==> website: $PWD/_build/html/index.html"
