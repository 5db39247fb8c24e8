#!/usr/bin/env bash
# The peers' bench figures under the same bf16 autocast as our default (issue 17: "report,
# for honesty, each peer's figure under the same bf16 autocast").
#
#   bash benchmarks/peers_bf16.sh [OUT_DIR]     # about 7 min; needs the harness's venvs (setup_peers.sh)
#
# Runs the shared harness's own scripts unchanged (../shared/bench, or $UNCLIP_PEER_BENCH),
# each in its virtualenv with torch.autocast("cpu", dtype=torch.bfloat16) entered before the
# script starts, so every forward (training and sampling) runs under autocast exactly as ours
# does; weights, gradients and optimizer state stay fp32. Then prints the harness's table.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HARNESS="${UNCLIP_PEER_BENCH:-$ROOT/../shared/bench}"
PEER_ROOT="${PEER_ROOT:-/tmp/peer}"
OUT_DIR="${1:-$ROOT/benchmarks/results/side_by_side/peers_bf16}"
mkdir -p "$OUT_DIR"
cd "$HARNESS"
run_under_autocast() {  # run_under_autocast PYTHON SCRIPT OUT
  TQDM_DISABLE=1 "$1" - "$2" "$3" <<'PY' >/dev/null
import runpy, sys
import torch
script, out = sys.argv[1], sys.argv[2]
sys.argv = [script, "--out", out]
torch.autocast("cpu", dtype=torch.bfloat16).__enter__()  # stays entered for the whole script
runpy.run_path(script, run_name="__main__")
PY
}
run_under_autocast "$PEER_ROOT/venv/bin/python" peer_dalle2.py "$OUT_DIR/dalle2.json"
run_under_autocast "$PEER_ROOT/venv-diffusers/bin/python" peer_diffusers.py "$OUT_DIR/diffusers.json"
python3 compare.py "$OUT_DIR/dalle2.json" "$OUT_DIR/diffusers.json" | tee "$OUT_DIR/table.txt"
