#!/usr/bin/env bash
# Train the shipped `shapes` model on one GPU (how src/unclip/models/shapes was made).
# Usage: bash benchmarks/gpu_train_shipped.sh OUT_DIR [extra `unclip train all` args]
# Uses the checkout's sources (PYTHONPATH=src) and whatever python3 has torch with CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: gpu_train_shipped.sh OUT_DIR}; shift || true
export PYTHONPATH=src PYTHONUNBUFFERED=1
python3 -m unclip.cli -v train all --data shapes --preset gpu --device cuda --seed 0 --out "$out" --no-progress "$@"
