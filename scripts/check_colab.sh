#!/usr/bin/env bash
# What a Colab learner gets, checked on this machine: a fresh virtual environment with the newest
# torch and torchvision the package registry offers (Colab preinstalls recent ones, and pycocotools),
# then the course installed the way every chapter's setup cell installs it, then every chapter,
# exercise and solution notebook executed in the smoke profile.
#
#   bash scripts/check_colab.sh             # writes book/colab_check.json (read by book/performance)
#
# Fails if installing the course replaces the torch that was there (Colab's own torch must stay),
# or if any notebook fails. Needs the package registry (pip), nothing else; takes 15-30 min.
# Extra arguments go to pytest (e.g. `bash scripts/check_colab.sh book/03_nms.ipynb`).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
venv="${COLAB_CHECK_VENV:-${TMPDIR:-/tmp}/coursepkg-colab-check}"
python="${PYTHON:-python3}"
log="$venv.log"
rm -rf "$venv"
echo "==> fresh virtual environment in $venv (pip output in $log)"
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet --upgrade pip > "$log" 2>&1 || true

echo "==> the newest torch and torchvision the registry offers (what Colab preinstalls)"
"${pip[@]}" install --upgrade torch torchvision pycocotools >> "$log" 2>&1
versions() {
  "$venv/bin/python" -c 'import torch, torchvision; print(f"torch {torch.__version__}, torchvision {torchvision.__version__}")'
}
before="$(versions)"
echo "    $before"

# The requirement of the setup cell, with the repository's address replaced by this checkout.
requirement="$("$venv/bin/python" - "$root" <<'PY'
import re, sys
from pathlib import Path
text = Path(sys.argv[1], "book", "03_nms.md").read_text()
found = re.search(r'%pip install (--quiet )?"coursepkg @ git\+[^"]+"', text)
if not found:
    sys.exit("the setup cell's `%pip install \"coursepkg @ git+...\"` line was not found in book/03_nms.md")
print(f"coursepkg @ file://{sys.argv[1]}")
PY
)"
echo "==> pip install --quiet \"$requirement\" (the setup cell's command)"
"${pip[@]}" install --quiet "$requirement" >> "$log" 2>&1
after="$(versions)"
if [ "$before" != "$after" ]; then
  echo "FAILED: installing the course replaced Colab's torch: $before -> $after" >&2
  exit 1
fi
echo "    kept: $after"
# book/real_photographs installs its data package in a Colab-only cell of its own (with --no-deps);
# the notebooks here run outside Colab, so that cell is skipped: install the same thing here.
deepforest_line="$(grep -o 'pip install --quiet --no-deps "deepforest==[0-9.]*"' book/real_photographs.md | head -n 1)"
[ -n "$deepforest_line" ] || { echo "FAILED: the deepforest install line of book/real_photographs.md was not found" >&2; exit 1; }
echo "==> ${deepforest_line} (book/real_photographs' Colab cell)"
eval "\"\${pip[@]}\" ${deepforest_line#pip } >> \"\$log\" 2>&1"

echo "==> every notebook, smoke profile, in the fresh environment (runners: nbval, not on Colab)"
"${pip[@]}" install --quiet nbval >> "$log" 2>&1
status=0
(
  cd "$root"
  # The installed package, not the checkout, is what the notebooks import: run from a copy of
  # the notebooks outside the source tree.
  work="$(mktemp -d)"
  cp -r book exercises solutions "$work/"
  cd "$work"
  # book/performance runs the repository's benchmarks/, which are not in the package: it needs a
  # clone (its first cell says so), and is left out here.
  if [ $# -eq 0 ]; then set -- book exercises solutions --ignore=book/performance.ipynb; fi
  COURSE_PROFILE=smoke OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" "$venv/bin/python" -m pytest \
    --nbval-lax --nbval-current-env --nbval-cell-timeout=600 -p no:cacheprovider -q \
    "$@" --junitxml="$venv.junit.xml"
) || status=$?

"$venv/bin/python" - "$root" "$venv.junit.xml" "$status" <<'PY'
import datetime, json, platform, sys
import xml.etree.ElementTree as ET
from pathlib import Path
import torch, torchvision
root, junit, status = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
suite = ET.parse(junit).getroot()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
result = {
    "date": datetime.date.today().isoformat(),
    "python": platform.python_version(),
    "torch": torch.__version__,
    "torchvision": torchvision.__version__,
    "cells": int(suite.get("tests")),
    "failures": int(suite.get("failures")) + int(suite.get("errors")),
    "passed": status == 0,
}
(root / "book" / "colab_check.json").write_text(json.dumps(result, indent=2) + "\n")
print("==> book/colab_check.json:", json.dumps(result))
PY
exit "$status"
