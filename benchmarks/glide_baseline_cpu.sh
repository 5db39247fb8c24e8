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
source benchmarks/resumable_run.sh
copy_shipped_model  # both of its decoders are trained again below, from scratch

common=(--preset small --steps "$STEPS" --batch-size "$BATCH" --checkpoint-every "$CHECKPOINT_EVERY")
train_once decoder "steps $STEPS, batch $BATCH" decoder "${common[@]}"
train_once decoder_text_only "steps $STEPS, batch $BATCH" decoder --text-only "${common[@]}"
REPORT_ARGS=()
[ -n "${QUICK:-}" ] && REPORT_ARGS=(--quick)
$PY -m unclip report --model "$MODEL" --out "$WORK/report" --device "$DEVICE" "${REPORT_ARGS[@]}"
echo "== timings ($LOG):"; cat "$LOG"
