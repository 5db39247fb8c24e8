"""``unclip bench``: training and sampling speed at fixed, comparable sizes.

Sizes follow the text-to-image issue so the figures compare with other implementations:
prior width 256, depth 6, 8 heads, embedding 256, 77 text tokens, batch 64; decoder UNet
base 64 channels, multipliers (1, 2, 4), 64x64, batch 16; prior sampling 16 chains x 64
steps; decoder sampling 4 images x 50 DDIM steps. Random weights, guidance off; fp32, or
bf16 autocast with ``precision`` (fp32 weights and optimizer state, see ``unclip.nn.precision``).
FLOP counts, the matmul peak and the peer comparison live in ``apps/bench_efficiency.py``.
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Callable

import torch

from ..decoder.model import Decoder, DecoderConfig
from ..diffusion import GaussianDiffusion, bind, sample, sample_timesteps, training_loss
from ..nn.precision import autocast, resolve_precision
from ..prior.diffusion_prior import DiffusionPrior, DiffusionPriorConfig, TextPrefixCache

PRIOR_SIZE = dict(embed_dim=256, text_width=256, context_length=77, width=256, depth=6, heads=8)
DECODER_SIZE = dict(
    image_size=64,
    base_channels=64,
    channel_mults=(1, 2, 4),
    num_res_blocks=2,
    attention_resolutions=(16,),
    head_channels=64,
    clip_embed_dim=256,
    context_length=77,
    vocab_size=1000,
    text_width=256,
    text_depth=2,
    text_heads=4,
)


def _rate(fn: Callable[[], None], repeats: int, warmup: int = 1) -> float:
    """Calls per second of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return repeats / (time.perf_counter() - start)


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run_benchmarks(threads: int = 2, device: str = "cpu", quick: bool = False, precision: str = "fp32") -> dict:
    """Measure the four throughputs; returns the JSON-able report of ``unclip bench``."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = torch.device(device)
    reps = 2 if quick else 5
    precision = resolve_precision(precision, dev)
    report: dict = {
        "device": device,
        "threads": threads,
        "dtype": "float32",
        "precision": precision,
        "torch": torch.__version__,
    }

    prior = DiffusionPrior(DiffusionPriorConfig(**PRIOR_SIZE, num_timesteps=1000)).to(dev)
    pdiff = prior.make_diffusion()
    opt = torch.optim.AdamW(prior.parameters(), lr=1e-4)
    b = 64
    z0 = torch.randn(b, 256, device=dev)
    cond = dict(
        text_embed=torch.nn.functional.normalize(torch.randn(b, 256, device=dev), dim=-1),
        text_tokens=torch.randn(b, 77, 256, device=dev),
        text_mask=torch.ones(b, 77, dtype=torch.bool, device=dev),
        text_keep=torch.ones(b, dtype=torch.bool, device=dev),
    )

    def prior_step() -> None:
        t = sample_timesteps(b, pdiff.num_timesteps).to(dev)
        x_t = pdiff.q_sample(z0, t, torch.randn_like(z0))
        with autocast(precision, dev):
            loss = torch.nn.functional.mse_loss(prior(x_t, t, **cond).float(), z0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    report["prior_params"] = _params(prior)
    report["prior_train_steps_per_s"] = _rate(prior_step, reps)
    prior.eval()
    chains = 16
    scond = {k: v[:chains] for k, v in cond.items()}
    with torch.no_grad(), autocast(precision, dev):
        fn = bind(TextPrefixCache(prior), **scond)  # as sample_image_embeds runs it
        start = time.perf_counter()
        sample("ddim", fn, pdiff, torch.randn(chains, 256, device=dev), steps=64)
        report["prior_sample_embeddings_per_s"] = chains / (time.perf_counter() - start)
    prior = opt = fn = None  # free the prior before the decoder figures (peak memory)

    decoder = Decoder(DecoderConfig(**DECODER_SIZE)).to(dev)
    ddiff = GaussianDiffusion.make(schedule="cosine", num_timesteps=1000, prediction="eps")
    opt = torch.optim.AdamW(decoder.parameters(), lr=1e-4)
    b = 16
    x0 = torch.rand(b, 3, 64, 64, device=dev) * 2 - 1
    dcond = dict(
        image_embed=torch.randn(b, 256, device=dev),
        text_tokens=torch.randint(1, 1000, (b, 77), device=dev),
        image_keep=torch.ones(b, dtype=torch.bool, device=dev),
        text_keep=torch.ones(b, dtype=torch.bool, device=dev),
    )

    def decoder_step() -> None:
        t = sample_timesteps(b, ddiff.num_timesteps).to(dev)
        noise = torch.randn_like(x0)
        x_t = ddiff.q_sample(x0, t, noise)
        with autocast(precision, dev):
            loss = training_loss(ddiff, decoder(x_t, t, **dcond), x0, x_t, t, noise)["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    report["decoder_params"] = _params(decoder)
    report["decoder_train_steps_per_s"] = _rate(decoder_step, max(reps - 2, 1))
    decoder.eval()
    n = 4
    with torch.no_grad(), autocast(precision, dev):
        fn = bind(decoder, **{k: v[:n] for k, v in dcond.items()})
        start = time.perf_counter()
        sample("ddim", fn, ddiff, torch.randn(n, 3, 64, 64, device=dev), steps=50, clip_x0=1.0)
        report["decoder_sample_images_per_s"] = n / (time.perf_counter() - start)
    report["peak_rss_mb"] = _peak_rss_mb()
    if dev.type == "cuda":
        report["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    report["sizes"] = {
        "prior": PRIOR_SIZE,
        "prior_batch": 64,
        "decoder": {k: list(v) if isinstance(v, tuple) else v for k, v in DECODER_SIZE.items()},
        "decoder_batch": 16,
        "prior_sampling": "16 chains x 64 DDIM steps",
        "decoder_sampling": "4 images x 50 DDIM steps",
    }
    return report
