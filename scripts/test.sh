#!/usr/bin/env bash
# The test command: sets up what is missing (first run only), then runs the default test suite
# and the linter. Slow tests are opt-in: PYG_INFDIFF_FULL_TEST=1 bash scripts/test.sh
# Extra arguments go to pytest, e.g.  bash scripts/test.sh tests/graph -x
set -euo pipefail
cd "$(dirname "$0")/.."
PYG_INFDIFF_EXTRAS=${PYG_INFDIFF_EXTRAS:-test,docs,bench} bash scripts/setup.sh
PYTHON=${PYTHON:-python3}

echo "[test] ruff"
"$PYTHON" -m ruff check pyg_infdiff tests examples bench docs scripts

echo "[test] pytest"
# Two cores: one process; Hypothesis runs its CI profile (derandomized) when CI=true.
"$PYTHON" -m pytest "${@:-tests}" -q -p no:cacheprovider
