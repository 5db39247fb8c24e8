#!/usr/bin/env bash
# Issue 16 on one lent GPU (one call of a few minutes), two trainings side by side:
#   1. item 1: the shipped decoder's recipe ("gpu" preset: 100,000 renders, batch 128,
#      3,720 steps, its 480 s budget's step count) again, with a learned variance, into a copy
#      of the shipped model (the same run as learned_variance_decoder_cpu.sh's training);
#   2. item 4: the BSR 128 -> 512 stage, resumed from its CPU checkpoint (bsr_stage_cpu.sh's
#      training: "cpu" preset, batch 16, 3,000 steps) and stopped by SIGTERM at the deadline,
#      which writes a checkpoint; the CPU run continues from it.
# Both measurements (eval, FID, PSNR) run afterwards on CPU, by those scripts.
#
# What the 2026-11-30 lease (one H200, 15 device minutes) gave: the decoder ran at 4.5 steps/s
# (the fixed-variance shipped run logged 9.2 on its GPU), so its 440 s budget reached 1,600 of
# the 3,720 steps; the BSR run went from step 150 to 2,492. A second call continued the decoder
# from its exported EMA weights (carried as float16) with the warm-start settings
# (`--init-from`: lr 1e-4, EMA 0.995) for 530 more steps (130 s budget):
#   unclip train decoder --data shapes --preset gpu --init-from .devcarry/lv1600/decoder \
#     --steps 3720 --time-limit 130 --out /tmp/lv/model --device cuda --overwrite
# Logs and loss curves: benchmarks/results/lv_decoder_gpu/.
#
#   mkdir -p .devcarry/bsr/runs; cp runs/bsr_stage/model/model.json .devcarry/bsr/
#   cp -r runs/bsr_stage/model/runs/upsampler_512 .devcarry/bsr/runs/
#   # device: carry .devcarry, run `bash benchmarks/gpu_lease_issue16.sh` (OUT set by the tool)
#   # back here: cat OUT/lv_decoder.tgz.* | tar xz -C runs/lv_decoder/model, and
#   #            tar xzf OUT/bsr_state.tgz -C runs/bsr_stage/model
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
PY=${PY:-python3}
LV_BUDGET_S=${LV_BUDGET_S:-440}   # the decoder's training loop (capped at 3,720 steps)
BSR_DEADLINE_S=${BSR_DEADLINE_S:-470}
export PYTHONPATH=src PYTHONUNBUFFERED=1
mkdir -p "$OUT"
{ nvidia-smi -L; $PY -c "import torch, numpy, PIL, safetensors, tqdm; print('torch', torch.__version__, torch.cuda.get_device_name())"; nproc; } > "$OUT/env.txt" 2>&1 || { cat "$OUT/env.txt"; exit 3; }
cat "$OUT/env.txt"

LV=/tmp/lv/model
mkdir -p /tmp/lv && cp -r src/unclip/models/shapes "$LV"
start=$(date +%s)
$PY -m unclip train decoder --data shapes --preset gpu --learned-variance --steps 3720 --time-limit "$LV_BUDGET_S" \
  --checkpoint-every 2000 --out "$LV" --device cuda --overwrite --no-progress > "$OUT/lv.log" 2>&1 &
lv_pid=$!
OMP_NUM_THREADS=8 timeout -s TERM -k 40 "$BSR_DEADLINE_S" $PY -m unclip train upsampler --data shapes --preset cpu \
  --low-res 128 --high-res 512 --degradation bsr --steps 3000 --batch-size 16 --checkpoint-every 50 \
  --out .devcarry/bsr --device cuda --resume --no-progress > "$OUT/bsr.log" 2>&1 &
bsr_pid=$!

# a decoder run that fails early ends the call early too (the BSR run checkpoints at SIGTERM)
while kill -0 "$lv_pid" 2>/dev/null; do sleep 5; done
wait "$lv_pid"; lv_rc=$?
[ "$lv_rc" != 0 ] && pkill -TERM -f "unclip train upsampler"
echo "lv rc=$lv_rc after $(( $(date +%s) - start )) s" | tee -a "$OUT/lv.log"
wait "$bsr_pid"; bsr_rc=$?
echo "bsr rc=$bsr_rc after $(( $(date +%s) - start )) s" | tee -a "$OUT/bsr.log"

# what comes back (no training state for the decoder: 136 MB, and its run is complete)
# (the fp32 export is about 32 MB: sent in 15 MB parts; `cat lv_decoder.tgz.* | tar xz` joins them)
[ -d "$LV/decoder" ] && tar cz -C "$LV" decoder model.json runs/decoder/loss_log.jsonl runs/decoder/fingerprint.json \
  $(cd "$LV" && ls runs/decoder/summary.json 2>/dev/null) | split -b 15M - "$OUT/lv_decoder.tgz."
tar czf "$OUT/bsr_state.tgz" -C .devcarry/bsr runs/upsampler_512 model.json $(cd .devcarry/bsr && ls -d upsampler_512 2>/dev/null)
tail -n 5 "$OUT/lv.log" "$OUT/bsr.log"
ls -la "$OUT"
