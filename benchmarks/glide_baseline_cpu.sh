#!/usr/bin/env bash
# Issue 16, item 5 without a GPU: the unCLIP decoder and the GLIDE-style text-only decoder, both
# trained FROM SCRATCH with the same network (the shipped decoder's: the small preset), the same
# data (shapes), steps and batch, into one model directory that keeps the shipped CLIP, priors
# and upsampler; then `unclip report` on that directory, whose guidance sweep compares the two.
# The shipped text-only baseline was fine-tuned from the unCLIP decoder for 300 steps, which
# confounds the comparison; here neither decoder sees the other's weights.
#
#   bash benchmarks/glide_baseline_cpu.sh                 # STEPS=3000 each, batch 32 (hours on 2 cores)
#   STEPS=20 QUICK=1 WORK=/tmp/glide bash benchmarks/glide_baseline_cpu.sh   # a smoke run
#   DEVICE=cuda STEPS=60000 bash benchmarks/glide_baseline_cpu.sh            # on a GPU
#
# Resumable: re-running continues an interrupted training from its last checkpoint (every
# CHECKPOINT_EVERY steps, and at SIGTERM / Ctrl-C) and skips a finished one. Results: $WORK/report/index.html and results.json; timings in $WORK/timings.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-runs/glide_baseline}
STEPS=${STEPS:-3000}
BATCH=${BATCH:-32}
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-100}
DEVICE=${DEVICE:-cpu}
PY=${PY:-python}
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
MODEL=$WORK/model
mkdir -p "$WORK"
LOG=$WORK/timings.txt
touch "$LOG"

if [ ! -f "$MODEL/model.json" ]; then
  # the shipped model without its two decoders' training history: both are trained again below
  cp -r src/unclip/models/shapes "$MODEL"
fi

train() {  # train NAME [--text-only]: one decoder from scratch, or resume it
  local name=$1; shift
  [ -f "$WORK/$name.done" ] && return 0
  local args=(--overwrite)
  [ -d "$MODEL/runs/$name" ] && args=(--resume)
  local t0; t0=$(date +%s)
  $PY -m unclip train decoder "$@" --preset small --steps "$STEPS" --batch-size "$BATCH" --out "$MODEL" \
    --checkpoint-every "$CHECKPOINT_EVERY" --device "$DEVICE" "${args[@]}" --no-progress
  echo "$name $(( $(date +%s) - t0 )) s (steps $STEPS, batch $BATCH)" | tee -a "$LOG"
  touch "$WORK/$name.done"
}

train decoder
train decoder_text_only --text-only
REPORT_ARGS=()
[ -n "${QUICK:-}" ] && REPORT_ARGS=(--quick)
$PY -m unclip report --model "$MODEL" --out "$WORK/report" --device "$DEVICE" "${REPORT_ARGS[@]}"
echo "== timings ($LOG):"; cat "$LOG"
