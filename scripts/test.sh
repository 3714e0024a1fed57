#!/usr/bin/env bash
# The whole test suite, from a clean clone: unit tests, agreement with torchvision/pycocotools,
# the exercise grader, and every notebook (book, exercises, solutions) executed under nbval in the
# fast "smoke" profile. Extra arguments go to pytest (e.g. `bash scripts/test.sh -x -k iou`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh "test,book"
export COURSE_PROFILE="${COURSE_PROFILE:-smoke}"
echo "==> pytest (profile: $COURSE_PROFILE)"
python -m pytest tests book exercises solutions \
  --nbval-lax --nbval-current-env --nbval-cell-timeout=600 -p no:cacheprovider "$@"
