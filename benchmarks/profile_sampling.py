"""Per-op profile (torch.profiler) of a bench sampling figure in fp32 and bf16 autocast.

Runs the bench's decoder (or prior) at its bench size -- 4 images at 64 px, guidance off
(prior: 16 chains) -- for a few DDIM steps after one warm-up call, and writes the per-op
table sorted by self CPU time to ``OUT/profile_<figure>_<precision>.txt`` plus a JSON
summary (seconds per network call, top ops and their share) to ``OUT/profile_<figure>.json``.
Every step costs the same, so a few steps give the per-step picture of the 50-step figure.

    PYTHONPATH=src python benchmarks/profile_sampling.py --figure decoder --steps 4 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from unclip.apps.bench import DECODER_SIZE, PRIOR_SIZE
from unclip.decoder.model import Decoder, DecoderConfig
from unclip.diffusion import GaussianDiffusion, bind, sample
from unclip.nn.precision import autocast
from unclip.prior.diffusion_prior import DiffusionPrior, DiffusionPriorConfig


def _model_fn(figure: str):
    torch.manual_seed(0)
    if figure == "decoder":
        net = Decoder(DecoderConfig(**DECODER_SIZE)).eval()
        n = 4
        cond = dict(
            image_embed=torch.randn(n, 256),
            text_tokens=torch.randint(1, 1000, (n, 77)),
            image_keep=torch.ones(n, dtype=torch.bool),
            text_keep=torch.ones(n, dtype=torch.bool),
        )
        return bind(net, **cond), GaussianDiffusion.make("cosine", 1000), torch.randn(n, 3, 64, 64)
    net = DiffusionPrior(DiffusionPriorConfig(**PRIOR_SIZE, num_timesteps=1000)).eval()
    n = 16
    cond = dict(
        text_embed=torch.nn.functional.normalize(torch.randn(n, 256), dim=-1),
        text_tokens=torch.randn(n, 77, 256),
        text_mask=torch.ones(n, 77, dtype=torch.bool),
        text_keep=torch.ones(n, dtype=torch.bool),
    )
    return bind(net, **cond), net.make_diffusion(), torch.randn(n, 256)


def profile_figure(figure: str, precision: str, steps: int, out: Path, rows: int = 30) -> dict:
    fn, diffusion, x_T = _model_fn(figure)
    with torch.no_grad(), autocast(precision):
        sample("ddim", fn, diffusion, x_T, steps=2)  # warm-up (oneDNN primitive creation)
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
            sample("ddim", fn, diffusion, x_T, steps=steps, clip_x0=1.0 if figure == "decoder" else None)
        wall = time.perf_counter() - start
    averages = prof.key_averages()
    table = averages.table(sort_by="self_cpu_time_total", row_limit=rows)
    (out / f"profile_{figure}_{precision}.txt").write_text(
        f"{figure} sampling, {precision}, {steps} steps, threads {torch.get_num_threads()}, "
        f"wall {wall:.2f} s ({wall / steps:.3f} s per network call)\n\n{table}\n"
    )
    total = sum(e.self_cpu_time_total for e in averages)
    top = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    return {
        "s_per_network_call": round(wall / steps, 4),
        "top_ops_self_cpu_share": {e.key: round(e.self_cpu_time_total / total, 3) for e in top},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--figure", choices=["decoder", "prior"], default="decoder")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"figure": args.figure, "steps": args.steps, "threads": args.threads, "torch": torch.__version__}
    for precision in ("fp32", "bf16"):
        summary[precision] = profile_figure(args.figure, precision, args.steps, out)
    summary["bf16_speedup_per_call"] = round(
        summary["fp32"]["s_per_network_call"] / summary["bf16"]["s_per_network_call"], 2
    )
    (out / f"profile_{args.figure}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
