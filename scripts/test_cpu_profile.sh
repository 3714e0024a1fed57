#!/usr/bin/env bash
# Every chapter of book/ executed under nbval in the "cpu" profile: the profile the website shows,
# with its full training runs and the mAP floors the chapters assert for it. Each chapter has a
# budget of 3 minutes on 2 cores (--durations prints what each cell took). CI runs it after the smoke suite (scripts/test.sh calls it when CI is set or
# COURSE_TEST_CPU_PROFILE=1). Extra arguments go to pytest (e.g. a single notebook path).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh "test,book"
export COURSE_PROFILE=cpu
unset OMP_NUM_THREADS  # the chapters' budget is measured with torch's default threads (2 cores)
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(book)
echo "==> pytest (profile: cpu) ${targets[*]}"
python -m pytest "${targets[@]}" --nbval-lax --nbval-current-env --nbval-cell-timeout=1200 \
  -p no:cacheprovider --durations=0 -q
