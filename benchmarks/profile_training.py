"""Per-op profile (torch.profiler) of a bench training figure in fp32 and bf16 autocast.

Runs the bench's prior (batch 64) or decoder (batch 16, 64 px) training step -- forward,
loss, backward, AdamW -- for a few steps after one warm-up step, and writes the per-op
table sorted by self CPU time to ``OUT/profile_train_<figure>_<precision><tag>.txt`` plus a
JSON summary to ``OUT/profile_train_<figure><tag>.json``: seconds per step, the top ops and
their share, and the megabytes of activations the forward saves for backward (counted
once per storage with ``saved_tensors_hooks``), which set the step's peak memory.

    PYTHONPATH=src python benchmarks/profile_training.py --figure prior --steps 2 --out benchmarks/results --tag _after

Run it on two commits (``--tag _before`` / ``--tag _after``) to see what a change moved.
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
from unclip.diffusion import GaussianDiffusion, sample_timesteps, training_loss
from unclip.nn.precision import autocast
from unclip.prior.diffusion_prior import DiffusionPrior, DiffusionPriorConfig


def _step_fn(figure: str, precision: str):
    """A closure running one bench training step of ``figure``; returns (step, forward_only)."""
    torch.manual_seed(0)
    if figure == "prior":
        net = DiffusionPrior(DiffusionPriorConfig(**PRIOR_SIZE, num_timesteps=1000))
        diffusion = net.make_diffusion()
        b = 64
        x0 = torch.randn(b, 256)
        cond = dict(
            text_embed=torch.nn.functional.normalize(torch.randn(b, 256), dim=-1),
            text_tokens=torch.randn(b, 77, 256),
            text_mask=torch.ones(b, 77, dtype=torch.bool),
            text_keep=torch.ones(b, dtype=torch.bool),
        )

        def loss_fn() -> torch.Tensor:
            t = sample_timesteps(b, diffusion.num_timesteps)
            x_t = diffusion.q_sample(x0, t, torch.randn_like(x0))
            with autocast(precision):
                return torch.nn.functional.mse_loss(net(x_t, t, **cond).float(), x0)

    else:
        net = Decoder(DecoderConfig(**DECODER_SIZE))
        diffusion = GaussianDiffusion.make(schedule="cosine", num_timesteps=1000, prediction="eps")
        b = 16
        x0 = torch.rand(b, 3, 64, 64) * 2 - 1
        cond = dict(
            image_embed=torch.randn(b, 256),
            text_tokens=torch.randint(1, 1000, (b, 77)),
            image_keep=torch.ones(b, dtype=torch.bool),
            text_keep=torch.ones(b, dtype=torch.bool),
        )

        def loss_fn() -> torch.Tensor:
            t = sample_timesteps(b, diffusion.num_timesteps)
            noise = torch.randn_like(x0)
            x_t = diffusion.q_sample(x0, t, noise)
            with autocast(precision):
                return training_loss(diffusion, net(x_t, t, **cond), x0, x_t, t, noise)["loss"].mean()

    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def step() -> None:
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, loss_fn


def saved_activation_mb(loss_fn) -> float:
    """Megabytes the forward keeps for backward (each storage counted once)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen.setdefault(storage.data_ptr(), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss_fn()
    return sum(seen.values()) / 2**20


def profile_one(figure: str, precision: str, steps: int, out: Path, tag: str) -> dict:
    step, loss_fn = _step_fn(figure, precision)
    step()  # warm-up
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    seconds = (time.perf_counter() - start) / steps
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
    (out / f"profile_train_{figure}_{precision}{tag}.txt").write_text(table + "\n")
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return {
        "seconds_per_step_profiled": round(seconds, 3),
        "saved_activations_mb": round(saved_activation_mb(loss_fn), 1),
        "top_ops": [
            {"op": e.key, "self_cpu_share": round(e.self_cpu_time_total / total, 3), "calls": e.count}
            for e in events[:8]
        ],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--figure", choices=["decoder", "prior"], default="decoder")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--tag", default="", help="suffix of the output names, e.g. _before / _after")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "figure": args.figure,
        "threads": args.threads,
        "torch": torch.__version__,
        "by_precision": {p: profile_one(args.figure, p, args.steps, out, args.tag) for p in args.precisions.split(",")},
    }
    (out / f"profile_train_{args.figure}{args.tag}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
