#!/usr/bin/env bash
# After editing a chapter's MyST source (book/, exercises/, solutions/), regenerate its paired
# .ipynb (what Colab opens). The MyST file is the source of truth; the .ipynb is written without
# outputs. tests/test_book.py fails when a pair has drifted.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh "test,book"
for md in book/*.md exercises/*.md solutions/*.md; do
  [ -f "$md" ] || continue
  head -n 20 "$md" | grep -q '^jupytext:' || continue
  # --update keeps the cell ids of the existing .ipynb, so diffs show only real changes.
  if [ -f "${md%.md}.ipynb" ]; then jupytext --quiet --update --to ipynb "$md"; else jupytext --quiet --to ipynb "$md"; fi
done
