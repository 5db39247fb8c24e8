"""The model's default output side by issue 16's rule; prints one JSON object.

    PYTHONPATH=src python benchmarks/default_output_side.py --quality upsampler_quality.json \
        --eval eval_size32.json eval_size128.json eval_size512.json [--out FILE]

The rule: the largest side that (a) keeps the attribute accuracy of the decoder's own side
and (b) beats bicubic on PSNR at every upsampler stage on the way to it. (a) compares the
``unclip eval`` runs at each side, which score the same samples (same seeds, prompts and
decoder steps; only the upsampler stages differ): the colour, shape and both-right rates
must not fall below those at the decoder's side. (b) reads ``upsampler_quality.py``'s mean
PSNR of each stage against bicubic on rendered ground truth. The decoder's side always
qualifies; a side whose stage fails (b) also rules out every larger side, since the larger
stages start from its output.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RATES = ("color_accuracy", "shape_accuracy", "both_right_rate")


def choose_side(quality: dict, evals: list[dict]) -> dict:
    """The chosen side and, per side, whether it keeps the accuracy and beats bicubic."""
    by_side = {int(e["image_side"]): e for e in evals}
    base_side = min(by_side)
    base = by_side[base_side]
    stages = {int(s["high_res"]): s for s in quality["stages"]}
    chosen, open_path, rows = base_side, True, []
    for side in sorted(by_side):
        if side == base_side:
            rows.append({"side": side, "keeps_accuracy": True, "beats_bicubic": None, "qualifies": True})
            continue
        stage = stages.get(side)
        beats = stage is not None and stage["psnr_upsampler_db"] > stage["psnr_bicubic_db"]
        keeps = all(by_side[side][k] >= base[k] for k in RATES)
        open_path = open_path and beats
        ok = open_path and keeps
        row = {"side": side, "keeps_accuracy": keeps, "beats_bicubic": beats, "qualifies": ok}
        row.update({k: by_side[side][k] for k in RATES})
        if stage is not None:
            row.update(psnr_db=stage["psnr_upsampler_db"], psnr_bicubic_db=stage["psnr_bicubic_db"])
        rows.append(row)
        if ok:
            chosen = side
    return {"default_size": chosen, "decoder_side": base_side, "sides": rows, "base_rates": {k: base[k] for k in RATES}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quality", required=True, type=Path, help="upsampler_quality.py's JSON")
    parser.add_argument("--eval", required=True, nargs="+", type=Path, help="`unclip eval --json` at each side")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = choose_side(json.loads(args.quality.read_text()), [json.loads(p.read_text()) for p in args.eval])
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
