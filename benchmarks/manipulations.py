"""Quality figures of the bipartite-latent manipulations (issue 4); prints one JSON object.

    PYTHONPATH=src python benchmarks/manipulations.py [--model shapes] [--steps 50] [--n 20]

* reconstruction: mean PSNR of DDIM inversion + eta-0 decoding over the first ``--n``
  shapes test images at the decoder's resolution;
* variations: for single-object test images, the fraction of variations whose scored
  colour / shape match the input's, and the mean shift of centre and extent, per eta;
* text diff: "a red circle" -> "a blue circle" on red-circle test images, the fraction of
  frames scored blue (and still a circle) per theta.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from unclip.data.shapes import render_batch
from unclip.eval.shapes_scorer import score_images
from unclip.manipulate import invert, reconstruct, text_diff, theta_schedule, vary
from unclip.pipeline import UnCLIP


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2): (B,)."""
    mse = ((a.float().cpu() - b.float().cpu()) / 2).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10 * torch.log10(1 / mse)


def single_objects(size: int, count: int, want=None, limit: int = 4000) -> tuple[torch.Tensor, list[dict]]:
    images, attrs = [], []
    for start in range(0, limit, 200):
        x, _, at = render_batch("test", start, 200, size=size)
        for i, a in enumerate(at):
            objs = a["objects"]
            if len(objs) == 1 and (want is None or (objs[0]["color"], objs[0]["shape"]) == want):
                images.append(x[i]); attrs.append(objs[0])
                if len(images) == count:
                    return torch.stack(images), attrs
    return torch.stack(images), attrs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="shapes")
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps for inversion and decoding")
    ap.add_argument("--refine", type=int, default=0)
    ap.add_argument("--n", type=int, default=20, help="images for the reconstruction PSNR")
    ap.add_argument("--vary-images", type=int, default=6)
    ap.add_argument("--vary-n", type=int, default=4)
    ap.add_argument("--textdiff-images", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: recon,vary,textdiff")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    pipe = UnCLIP.load(args.model, device=args.device)
    size = pipe.decoder.config.image_size
    out: dict = {"model": args.model, "decoder_size_px": size, "steps": args.steps, "refine": args.refine, "guidance": 1.0}
    if "recon" not in skip:
        t = time.perf_counter()
        x, _, _ = render_batch("test", 0, args.n, size=size)
        lat = invert(pipe, x, steps=args.steps, refine=args.refine)
        p = psnr(reconstruct(pipe, lat), x)
        out["reconstruction"] = {"images": args.n, "mean_psnr_db": round(float(p.mean()), 2), "min_psnr_db": round(float(p.min()), 2), "seconds": round(time.perf_counter() - t, 1)}
        print(json.dumps(out["reconstruction"]), file=sys.stderr, flush=True)
    if "vary" not in skip:
        x, truth = single_objects(size, args.vary_images)
        lat = invert(pipe, x, steps=args.steps, refine=args.refine)
        rows = {}
        for eta in (0.0, 0.25, 0.5, 0.75, 1.0):
            imgs = vary(pipe, lat, eta=eta, n=args.vary_n, seed=0)
            scores = score_images(imgs)
            col = shp = 0
            dc, de = [], []
            for k, s in enumerate(scores):
                o, m = truth[k // args.vary_n], s.main
                if m is None:
                    continue
                col += m.color == o["color"]; shp += m.shape == o["shape"]
                dc.append(((m.center[0] - o["center"][0]) ** 2 + (m.center[1] - o["center"][1]) ** 2) ** 0.5)
                de.append(abs(m.extent - o["extent"]))
            total = len(scores)
            rows[str(eta)] = {"colour_kept": round(col / total, 3), "shape_kept": round(shp / total, 3), "mean_centre_shift": round(sum(dc) / max(len(dc), 1), 4), "mean_extent_change": round(sum(de) / max(len(de), 1), 4), "images": total}
            print(eta, json.dumps(rows[str(eta)]), file=sys.stderr, flush=True)
        out["variations"] = rows
    if "textdiff" not in skip:
        x, _ = single_objects(size, args.textdiff_images, want=("red", "circle"))
        thetas = theta_schedule(5, 0.5).tolist()
        blue = [0] * len(thetas); circle = [0] * len(thetas)
        for i in range(x.shape[0]):
            frames = text_diff(pipe, x[i], "a red circle", "a blue circle", max_theta=0.5, frames=5, steps=args.steps, refine=args.refine)
            for j, s in enumerate(score_images(frames)):
                blue[j] += bool(s.main and s.main.color == "blue")
                circle[j] += bool(s.main and s.main.shape == "circle")
        out["text_diff"] = {"from": "a red circle", "to": "a blue circle", "images": int(x.shape[0]), "per_theta": {f"{t:.3f}": {"fraction_blue": round(b / x.shape[0], 3), "fraction_circle": round(c / x.shape[0], 3)} for t, b, c in zip(thetas, blue, circle)}}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
