"""Seconds per 128 px image at equal quality (issue 17); prints one JSON object.

    PYTHONPATH=src python benchmarks/quality_matched_speed.py [--model shapes] [--seeds 4]
        [--configs today,ddim50-bf16,dpmpp2m20-fp32,dpmpp2m20-bf16] [--out FILE]

For each sampling configuration the shipped model generates the 32 prompts "a {color}
{shape}" of ``unclip eval`` with ``--seeds`` seeds each, through the prior, the decoder and
the upsampler to 128 px, in one batch per configuration; the generation wall time (model
loading excluded) divided by the number of images is the figure. The images are then
scored as ``unclip eval`` scores them (colour, shape, single object, both right) and their
Frechet Inception distance to as many held-out test renders at 128 px is computed (same
real set for every configuration; with ~128 images FID is biased upwards, so compare rows
with each other). ``today`` is the defaults before issue 17: DDIM, 50 decoder steps, fp32.
The same configuration run with a second seed (``today-seed1``) shows how much FID and the
rates move by chance alone, which is the yardstick for "at least as good".

To time today's defaults on today's code, run ``--configs today`` from a checkout of the
commit before the speed work (``PYTHONPATH=that/src``) and pass its JSON as ``--baseline``
to the run of the new settings.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from unclip.data.shapes import render_batch, single_object_prompts
from unclip.eval.inception import inception_features, load_inception
from unclip.eval.metrics import frechet_distance
from unclip.eval.shapes_scorer import score_images
from unclip.eval.shapes_summary import summarise
from unclip.eval.text_to_image import _prompt_attrs
from unclip.pipeline import UnCLIP

#: name -> (sampler, decoder steps, upsampler steps (None: the stage's default), precision, seed,
#: decoder eta (None: the model's, 1.0 for the shipped model))
CONFIGS = {
    "today": ("ddim", 50, None, "fp32", 0, None),
    "today-seed1": ("ddim", 50, None, "fp32", 1, None),
    "ddim50-bf16": ("ddim", 50, None, "bf16", 0, None),
    "dpmpp2m20-fp32": ("dpmpp2m", 20, None, "fp32", 0, None),
    "ddim50-bf16-seed1": ("ddim", 50, None, "bf16", 1, None),
    "dpmpp2m20-bf16": ("dpmpp2m", 20, None, "bf16", 0, None),
    "dpmpp2m20-bf16-seed1": ("dpmpp2m", 20, None, "bf16", 1, None),
    "dpmpp2m30-bf16": ("dpmpp2m", 30, None, "bf16", 0, None),
    "dpmpp2m20-eta0-bf16": ("dpmpp2m", 20, None, "bf16", 0, 0.0),
    "dpmpp2m20-up15-bf16": ("dpmpp2m", 20, 15, "bf16", 0, None),
    "dpmpp2m15-up10-bf16": ("dpmpp2m", 15, 10, "bf16", 0, None),
}


def run_config(model: str, name: str, seeds: int, size: int) -> tuple[dict, torch.Tensor]:
    sampler, steps, up_steps, precision, seed, eta = CONFIGS[name]
    pipe = UnCLIP.load(model)
    pipe.precision = precision
    prompts = single_object_prompts()
    start = time.perf_counter()
    images, expanded = pipe.generate_tensors(
        prompts,
        num_images=seeds,
        seed=seed,
        steps=steps,
        size=size,
        upsampler_steps=up_steps,
        sampler=sampler,
        eta=eta,
        progress=False,
    )
    seconds = time.perf_counter() - start
    scores = score_images(images)
    summary = summarise(scores, [_prompt_attrs(p) for p in expanded])
    row = {
        "sampler": sampler,
        "decoder_steps": steps,
        "upsampler_steps": up_steps or "stage default",
        "precision": precision,
        "seed": seed,
        "decoder_eta": pipe.defaults.eta if eta is None else eta,
        "images": len(expanded),
        "side": int(images.shape[-1]),
        "seconds_per_image": seconds / len(expanded),
        **{k: summary[k] for k in ("color_accuracy", "shape_accuracy", "single_object_rate", "both_right_rate")},
    }
    return row, images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--seeds", type=int, default=4, help="images per prompt (32 prompts)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, from {', '.join(CONFIGS)}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument(
        "--baseline",
        default=None,
        help="a JSON written by an earlier run (e.g. of the code before issue 17) whose 'today' row sets the speedups",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown configs {unknown}; choose from {', '.join(CONFIGS)}")
    inception = load_inception()
    n = 32 * args.seeds
    real, _, _ = render_batch("test", 0, n, args.size, 0)
    real_features = inception_features(inception, real)
    rows = {}
    for name in names:
        row, images = run_config(args.model, name, args.seeds, args.size)
        row["fid"] = frechet_distance(inception_features(inception, images), real_features)
        rows[name] = row
        print(json.dumps({name: row}), flush=True)
    base = json.loads(Path(args.baseline).read_text())["rows"]["today"] if args.baseline else rows.get("today")
    if base:
        for row in rows.values():
            row["speedup_vs_today"] = round(base["seconds_per_image"] / row["seconds_per_image"], 3)
    report = {
        "model": args.model,
        "threads": args.threads,
        "torch": torch.__version__,
        "fid_real_set": f"{n} held-out test renders at {args.size} px (Inception-v3 pool features)",
        "rows": rows,
    }
    text = json.dumps(report, indent=2, default=lambda o: float(o) if isinstance(o, np.floating) else str(o))
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
