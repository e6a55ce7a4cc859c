# Sourced by setup.sh, demo.sh and test.sh (not run on its own): chooses the Python that all
# three use, so that the README's two commands install into and run from the same environment.
#
#   PYTHON=/path/to/python     used as given (tests and CI pass the interpreter they run under)
#   an active environment      its python (a venv: VIRTUAL_ENV or sys.prefix != base prefix;
#                              conda: CONDA_PREFIX)
#   otherwise                  the project's own venv, PYG_INFDIFF_VENV (default .venv/ in the
#                              checkout, ignored by git), created by setup.sh on first use: the
#                              system python3 of Debian/Ubuntu is "externally managed" (PEP 668)
#                              and refuses pip install.
#
# Sets PYTHON, and PYG_INFDIFF_PROJECT_VENV to the venv's folder when the project's own venv is
# used (empty otherwise). Needs the working directory to be the checkout.

pyg_infdiff_choose_python() {
  PYG_INFDIFF_PROJECT_VENV=""
  if [ -n "${PYTHON:-}" ]; then
    return 0
  fi
  local base=${PYG_INFDIFF_BASE_PYTHON:-python3}
  if ! command -v "$base" >/dev/null 2>&1; then
    echo "[setup] FAILED: no '$base' on PATH. Install Python >= 3.10 with its venv module" >&2
    echo "[setup]   (Debian/Ubuntu: apt-get install python3 python3-venv python3-dev g++)" >&2
    return 1
  fi
  if [ -n "${CONDA_PREFIX:-}" ] \
      || "$base" -c 'import sys; sys.exit(0 if sys.prefix != sys.base_prefix else 1)' 2>/dev/null
  then
    PYTHON=$base
    return 0
  fi
  PYG_INFDIFF_PROJECT_VENV=${PYG_INFDIFF_VENV:-$(pwd -P)/.venv}
  PYTHON=$PYG_INFDIFF_PROJECT_VENV/bin/python
}
