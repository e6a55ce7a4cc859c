#!/usr/bin/env bash
# The test command: sets up what is missing (first run only; outside any virtual environment it
# creates and uses the project's own .venv/), then runs the linter and the default test suite.
# Slow tests are opt-in: PYG_INFDIFF_FULL_TEST=1 bash scripts/test.sh
# Extra arguments go to pytest, e.g.  bash scripts/test.sh tests/graph -x
set -Eeuo pipefail
cd "$(dirname "$0")/.."
PYG_INFDIFF_EXTRAS=${PYG_INFDIFF_EXTRAS:-test,docs,bench} bash scripts/setup.sh
# shellcheck source=scripts/_python.sh
source scripts/_python.sh
pyg_infdiff_choose_python

echo "[test] ruff ($PYTHON)"
"$PYTHON" -m ruff check pyg_infdiff tests examples bench docs scripts

echo "[test] pytest"
# Two cores: one process. Hypothesis replays the same derandomized examples as CI for everyone
# (tests/conftest.py); PYG_INFDIFF_HYPOTHESIS=explore draws fresh random ones.
"$PYTHON" -m pytest "${@:-tests}" -q -p no:cacheprovider
