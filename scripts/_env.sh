# Sourced by the two top-level commands: create (or reuse) the virtual environment in .venv and
# install the course package with the extras the command needs. Re-installs only when
# pyproject.toml changed since the last install, so a second run starts at once.
# Usage: source scripts/_env.sh EXTRAS   (e.g. "book" or "test,book")
set -euo pipefail
extras="$1"
venv="${COURSE_VENV:-.venv}"
python="${PYTHON:-python3}"
"$python" - <<'PY'
import sys
if sys.version_info < (3, 10):
    sys.exit(f"The course needs Python >= 3.10, found {sys.version.split()[0]}.")
PY
if [ ! -x "$venv/bin/python" ]; then
  echo "==> creating virtual environment in $venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip > "$venv/pip-upgrade.log" 2>&1 || true
fi
stamp="$venv/.coursepkg-installed-$(echo "$extras" | tr ',' '-')"
want="$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> installing coursepkg[$extras] into $venv (first run takes a few minutes)"
  log="$venv/pip-install.log"
  if ! "$venv/bin/python" -m pip install -e ".[$extras]" > "$log" 2>&1; then
    tail -n 40 "$log"
    echo "pip install failed; the full log is in $log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
# The real photographs of book/real_photographs (coursepkg.data.tree_crowns) are data files of the
# deepforest package. Only its files are read, never `import deepforest`, so it is installed
# without its dependencies (PyTorch Lightning, GDAL's rasterio, transformers, ...); pyproject.toml
# cannot say --no-deps, hence this step. Skipped when it is already there.
deepforest_pin="deepforest==2.1.0"
if ! "$venv/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('deepforest') is None)" 2>/dev/null; then
  echo "==> installing $deepforest_pin --no-deps into $venv (its data files only are used)"
  log="$venv/pip-install-deepforest.log"
  if ! "$venv/bin/python" -m pip install --no-deps "$deepforest_pin" > "$log" 2>&1; then
    tail -n 20 "$log"
    echo "pip install --no-deps $deepforest_pin failed; the full log is in $log" >&2
    exit 1
  fi
fi
export PATH="$PWD/$venv/bin:$PATH"
# No MPLBACKEND here: Jupyter kernels pick the inline backend only when it is unset, and with a
# fixed "Agg" every figure of the website would silently disappear. Scripts without a display get
# Agg from matplotlib itself. (tests/test_book.py checks that a kernel started from this
# environment returns figures.)
