#!/usr/bin/env bash
# The README's first command: the main job on the built-in dataset, on a fresh machine.
# Sets up what is missing (first run only, idempotent), then trains a small ∞-Diff model on
# the built-in continuous shapes at 32x32 for a few minutes on the CPU and writes samples of the
# same seeds at 32x32, 64x64 and 128x128 next to ground-truth renders. Prints where they are.
#
#   bash scripts/demo.sh                    # defaults: ~10 min of training, under 15 min in all
#   bash scripts/demo.sh --minutes 3        # any option of examples/shapes_demo.py (see --help)
#   bash scripts/demo.sh --smoke            # a few steps: checks that everything runs
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PYTHON=${PYTHON:-python3}
exec "$PYTHON" examples/shapes_demo.py "$@"
