#!/usr/bin/env bash
# The website tested in a real browser (tests/test_site.py): every page of the built site opened
# in headless Chromium, its buttons and search checked, screenshots saved in _build/screenshots.
# Builds the site first when _build/html does not exist (bash scripts/build_book.sh; set
# COURSE_PROFILE=smoke for a quick build). Chromium is Debian's `chromium` package: installed here
# with apt-get when missing and this runs as root, otherwise install it yourself (or point
# COURSE_CHROMIUM at a Chromium or Chrome binary). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${COURSE_CHROMIUM:-}" ] && ! command -v chromium > /dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null 2>&1; then
    echo "==> installing Debian's chromium (apt-get)"
    apt-get install -y --no-install-recommends chromium > /tmp/course-apt-chromium.log 2>&1 \
      || { apt-get update > /dev/null 2>&1 && apt-get install -y --no-install-recommends chromium > /tmp/course-apt-chromium.log 2>&1; } \
      || { tail -n 20 /tmp/course-apt-chromium.log; echo "could not install chromium" >&2; exit 1; }
  else
    echo "no chromium found: install Debian's chromium package, or set COURSE_CHROMIUM" >&2
    exit 1
  fi
fi
if [ ! -f _build/html/index.html ]; then
  bash scripts/build_book.sh
fi
source scripts/_env.sh "test,book"
echo "==> browser test of the website in _build/html"
COURSE_SITE_DIR="$PWD/_build/html" python -m pytest tests/test_site.py -p no:cacheprovider -q "$@"
echo "==> screenshots: $PWD/_build/screenshots"
