#!/usr/bin/env bash
# Train the components added to the shipped `shapes` model after its first release, on one
# GPU, from the shipped CLIP (so that every component shares its embedding space):
#   prior_ar           `unclip train ar-prior --preset gpu` (4-minute budget)
#   decoder_text_only  `unclip train decoder --text-only --preset gpu --steps 3720`: the
#                      GLIDE-style baseline, with the unCLIP decoder's network, batch (128)
#                      and step count (3,720), so the two decoders had the same training compute
#   upsampler_128      `unclip train upsampler --low-res 32 --high-res 128 --preset gpu`
# The three run at once on the one GPU, each in its own model directory under OUT_DIR
# (ar/, glide/, up/); logs go to OUT_DIR/*.log. Merge them with benchmarks/ship_model.py.
# Usage: bash benchmarks/gpu_train_extras.sh OUT_DIR [UPSAMPLER_BUDGET_S]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: gpu_train_extras.sh OUT_DIR [UPSAMPLER_BUDGET_S]}
budget=${2:-480}
export PYTHONPATH=src PYTHONUNBUFFERED=1
mkdir -p "$out/ar" "$out/glide" "$out/up"
for d in ar glide; do rm -rf "$out/$d/clip"; cp -r src/unclip/models/shapes/clip "$out/$d/clip"; done
python3 -m unclip.cli -v train ar-prior --data shapes --preset gpu --device cuda --seed 0 --out "$out/ar" --no-progress >"$out/ar.log" 2>&1 &
python3 -m unclip.cli -v train decoder --text-only --data shapes --preset gpu --steps 3720 --device cuda --seed 0 --out "$out/glide" --no-progress >"$out/glide.log" 2>&1 &
python3 -m unclip.cli -v train upsampler --low-res 32 --high-res 128 --degradation blur --preset gpu --time-limit "$budget" --device cuda --seed 0 --out "$out/up" --no-progress >"$out/up.log" 2>&1 &
wait
