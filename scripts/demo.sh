#!/usr/bin/env bash
# The README's first command: the main job on the built-in dataset, on a fresh machine.
# Sets up what is missing (first run only, idempotent; outside any virtual environment it
# creates and uses the project's own .venv/), then trains a small ∞-Diff model on the built-in
# continuous shapes for a few minutes on the CPU and writes samples of the same seeds at 32x32,
# 64x64 and 128x128 next to ground-truth renders. Prints where they are.
#
#   bash scripts/demo.sh                    # defaults: ~10 min of training, under 15 min in all
#   bash scripts/demo.sh --minutes 3        # any option of examples/shapes_demo.py (see --help)
#   bash scripts/demo.sh --smoke            # a few steps: checks that everything runs
set -Eeuo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck source=scripts/_python.sh
source scripts/_python.sh
pyg_infdiff_choose_python
echo "[demo] $PYTHON examples/shapes_demo.py $*"
exec "$PYTHON" examples/shapes_demo.py "$@"
