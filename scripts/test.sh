#!/usr/bin/env bash
# The whole test suite, from a clean clone: unit tests, agreement with torchvision/pycocotools,
# the exercise grader, and every notebook (book, exercises, solutions) executed under nbval in the
# fast "smoke" profile. Extra arguments go to pytest (e.g. `bash scripts/test.sh -x -k iou`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh "test,book"
export COURSE_PROFILE="${COURSE_PROFILE:-smoke}"
# Small tensors dominate the tests; one thread per process avoids oversubscribing the cores when
# pytest, notebook kernels and grader subprocesses run side by side.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
echo "==> pytest (profile: $COURSE_PROFILE)"
python -m pytest tests book exercises solutions \
  --nbval-lax --nbval-current-env --nbval-cell-timeout=600 -p no:cacheprovider "$@"
# CI also runs every chapter in the "cpu" profile, whose mAP floors the smoke run cannot reach.
if [ $# -eq 0 ] && { [ -n "${CI:-}" ] || [ -n "${COURSE_TEST_CPU_PROFILE:-}" ]; }; then
  bash scripts/test_cpu_profile.sh
fi
# CI also builds the website (smoke profile: quick) and tests it in headless Chromium.
if [ $# -eq 0 ] && { [ -n "${CI:-}" ] || [ -n "${COURSE_TEST_SITE:-}" ]; }; then
  bash scripts/test_site.sh
fi
