#!/usr/bin/env bash
# Issue 16, item 4: the cascade's second stage. Trains a 128 -> 512 upsampler with BSR
# degradations on 128 px crops (a quarter of 512, as the paper) into a copy of the shipped model,
# then measures what the issue asks for:
#   - the stage's sampling defaults (upsampler_start_calibration.py: from-noise or bicubic-started,
#     steps, back-projection rounds; best PSNR on validation images);
#   - PSNR and FID of each stage against bicubic, on rendered ground truth (upsampler_quality.py;
#     the 512 px stage starts from the 128 px render);
#   - the shapes attribute accuracy after the whole cascade at 32, 128 and 512 px (unclip eval,
#     the same samples at each side).
# The network is the shipped first stage's ("cpu" preset); steps and batch are set for 2 CPU cores.
#
#   bash benchmarks/bsr_stage_cpu.sh                              # STEPS=3000, BATCH=16 (hours on 2 cores)
#   STEPS=4 BATCH=2 N=2 SEEDS=1 QUICK=1 WORK=/tmp/bsr bash benchmarks/bsr_stage_cpu.sh   # a smoke run
#   DEVICE=cuda PRESET=gpu STEPS=20000 BATCH=64 WORKERS=12 bash benchmarks/bsr_stage_cpu.sh   # on a GPU
#   DEGRADATION=bsr-light STEPS=1800 PRECISION=bf16 INIT_FROM=runs/bsr_stage/model/upsampler_512 \
#     WORK=runs/bsr_light_stage bash benchmarks/bsr_stage_cpu.sh   # LDM's light BSR, from the full-BSR stage
#
# Resumable: re-running continues the training from its last checkpoint (every CHECKPOINT_EVERY
# steps, and at SIGTERM / Ctrl-C) and redoes only the measurements. Results in $WORK: timings.txt,
# start_calibration.{json,png}, upsampler_quality.json, quality_grid.png, eval_size{32,128,512}.json,
# default_output_side.json.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-runs/bsr_stage}
STEPS=${STEPS:-3000}
BATCH=${BATCH:-16}
PRESET=${PRESET:-cpu}
DEGRADATION=${DEGRADATION:-bsr}  # or bsr-light (latent diffusion's light variant of BSR)
PRECISION=${PRECISION:-fp32}     # bf16: autocast, 1.75x the steps/s on this AVX512-BF16 CPU
INIT_FROM=${INIT_FROM:-}         # an upsampler_512 component to start from (default: from scratch)
WORKERS=${WORKERS:-0}            # processes that build the degraded batches ahead (for GPU runs)
WARM=(); [ -n "$INIT_FROM" ] && WARM=(--init-from "$INIT_FROM")
DEVICE=${DEVICE:-cpu}
N=${N:-32}              # test images per stage in the quality measurement
SEEDS=${SEEDS:-2}       # samples per prompt in the accuracy measurement (32 prompts)
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-50}
source benchmarks/resumable_run.sh
copy_shipped_model

train_once upsampler_512 "steps $STEPS, batch $BATCH, preset $PRESET, $DEGRADATION, $PRECISION${INIT_FROM:+, from $INIT_FROM}" upsampler --data shapes \
  --preset "$PRESET" --low-res 128 --high-res 512 --degradation "$DEGRADATION" --steps "$STEPS" --batch-size "$BATCH" \
  --checkpoint-every "$CHECKPOINT_EVERY" --precision "$PRECISION" --workers "$WORKERS" "${WARM[@]}"

# the stage's sampling defaults (start timestep, steps, back-projection rounds) on validation images,
# stored in its config.json only when they beat bicubic and from-noise sampling
timed "start calibration (n $N)" $PY benchmarks/upsampler_start_calibration.py --component "$MODEL/upsampler_512" \
  --n "$N" --out "$WORK/start_calibration.json" --plot "$WORK/start_calibration.png" --write > /dev/null \
  || echo "the calibrated start does not beat bicubic and from-noise sampling: the stage samples from noise"
timed "quality (n $N)" $PY benchmarks/upsampler_quality.py --model "$MODEL" --n "$N" --batch 4 \
  --out "$WORK/upsampler_quality.json" --grid "$WORK/quality_grid.png"

STEPS_ARGS=(--steps 25)
[ -n "${QUICK:-}" ] && STEPS_ARGS=(--steps 2)
for size in 32 128 512; do
  timed "eval size $size" $PY -m unclip eval --model "$MODEL" --seeds "$SEEDS" "${STEPS_ARGS[@]}" --json \
    --size "$size" --device "$DEVICE" > "$WORK/eval_size$size.json"
done
# the default output side by the issue's rule (ship with: benchmarks/ship_model.py ... --add
# $MODEL/upsampler_512 --defaults '{"size": SIDE}')
$PY benchmarks/default_output_side.py --quality "$WORK/upsampler_quality.json" \
  --eval "$WORK"/eval_size{32,128,512}.json --out "$WORK/default_output_side.json"
echo "== timings ($LOG):"; cat "$LOG"
