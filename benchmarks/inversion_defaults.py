"""Round-trip PSNR of DDIM inversion on outside images, per setting (issue 16, item 6); prints JSON.

    PYTHONPATH=src python benchmarks/inversion_defaults.py [--model shapes] [--images benchmarks/outside_images]
        [--configs 50:0:ddim,50:2:ddim,50:2:edict] [--size 128] [--out benchmarks/results/inversion_defaults.json]
        [--grid docs/inversion_outside_images.png]

Each config is ``STEPS:REFINE[:STAGES]`` (DDIM steps of the decoder's inversion and decoding,
fixed-point refinements per DDIM inversion step, and how the upsampler stages are inverted:
``edict`` (the default) or ``ddim``, which takes the same ``refine``; the stages keep their
own default steps). For every image of ``--images`` (the committed outside
set: a photo, clip art, emoji) it runs what ``unclip invert IMAGE --reconstruct`` runs:
``invert`` then ``reconstruct`` at eta 0, once at the decoder's side and once through the
upsampler stages to ``--size``, and reports the PSNR of each reconstruction against the
input at that side (mean and per image) and the wall time of each round trip. The first
config is taken as the reference for the time ratios (the defaults when issue 16 was
filed: 50 steps, no refinement, DDIM stages). ``--grid`` writes a picture: the inputs at
``--size`` in the first row, then one row per config of its reconstructions through the cascade.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from PIL import Image

from unclip.manipulate.invert import as_image_tensor, invert, reconstruct
from unclip.pipeline import UnCLIP
from unclip.storage.imageio import make_grid, tensor_to_pil
from upsampler_quality import psnr  # this folder is on sys.path when a benchmark runs as a script

HERE = Path(__file__).resolve().parent


def round_trip(pipe: UnCLIP, images: list[Image.Image], size: int | None, steps: int, refine: int, stages: str) -> dict:
    start = time.perf_counter()
    latent = invert(pipe, images, size=size, steps=steps, refine=refine, stage_inversion=stages)
    rec = reconstruct(pipe, latent).cpu()
    seconds = time.perf_counter() - start
    values = psnr(rec, as_image_tensor(images, rec.shape[-1]))
    return {"side": int(rec.shape[-1]), "seconds": round(seconds, 2), "psnr_db": values, "images": rec}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="shapes")
    ap.add_argument("--images", default=str(HERE / "outside_images"))
    ap.add_argument("--configs", default="50:0:ddim,50:2:ddim,50:2:edict")
    ap.add_argument("--size", type=int, default=128, help="top side of the cascade round trip")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--grid", default=None, help="PNG of the inputs and each config's cascade reconstructions")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    paths = sorted(Path(args.images).glob("*.png"))
    if not paths:
        ap.error(f"no .png images in {args.images}")
    images = [Image.open(p).convert("RGB") for p in paths]
    names = [p.stem for p in paths]
    pipe = UnCLIP.load(args.model)
    rows, grid_rows = {}, [as_image_tensor(images, args.size)]
    for config in args.configs.split(","):
        steps, refine, stages = (config.split(":") + ["edict"])[:3]
        steps, refine = int(steps), int(refine)
        row = {"steps": steps, "refine": refine, "stage_inversion": stages}
        for label, size in (("decoder", None), ("cascade", args.size)):
            r = round_trip(pipe, images, size, steps, refine, stages)
            if label == "cascade":
                grid_rows.append(r["images"])
            row[label] = {
                "side": r["side"],
                "seconds": r["seconds"],
                "mean_psnr_db": round(float(r["psnr_db"].mean()), 2),
                "min_psnr_db": round(float(r["psnr_db"].min()), 2),
                "per_image_psnr_db": {n: round(float(v), 2) for n, v in zip(names, r["psnr_db"])},
            }
        rows[config] = row
        print(json.dumps({config: {k: (v if not isinstance(v, dict) else v["mean_psnr_db"]) for k, v in row.items()}}))
        print(json.dumps({config: {k: v["seconds"] for k, v in row.items() if isinstance(v, dict)}}), flush=True)
    first = next(iter(rows.values()))
    for row in rows.values():
        for label in ("decoder", "cascade"):
            row[label]["time_vs_first"] = round(row[label]["seconds"] / first[label]["seconds"], 2)
    report = {"model": args.model, "images": names, "threads": args.threads, "rows": rows}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.grid:
        make_grid(tensor_to_pil(torch.cat(grid_rows)), ncols=len(images)).save(args.grid)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
