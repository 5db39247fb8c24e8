"""``unclip bench``'s efficiency figures and its peer comparison.

For each of the four bench figures we count the FLOPs of one unit of work with
``torch.utils.flop_counter.FlopCounterMode`` (on the meta device: the count depends only on
shapes, so it costs no compute), measure the machine's matmul peak in the same run
(square matmuls, best of several, per precision), and report the achieved GFLOP/s and
its fraction of that peak. The peak is a dense-matmul ceiling: convolutions, attention
and elementwise ops cannot all reach it, so a fraction near 1 means "at the machine's
limit", not "perfect".

``--compare-peers`` runs the shared peer harness (``run_peers.sh``: dalle2-pytorch and
diffusers at the same sizes, fp32) after our own figures and reports our figure over the
better peer's. The harness lives outside the project (``../shared/bench`` beside the
repository, or ``$UNCLIP_PEER_BENCH``) and needs its two virtualenvs under ``$PEER_ROOT``
(default ``/tmp/peer``), built once by its ``setup_peers.sh``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..decoder.model import Decoder, DecoderConfig
from ..errors import ConfigError
from ..nn.precision import resolve_precision
from ..prior.diffusion_prior import DiffusionPrior, DiffusionPriorConfig
from .bench import DECODER_SIZE, PRIOR_SIZE, run_benchmarks

#: bench figure -> the unit of work its rate counts, whose FLOPs :func:`count_flops` returns
FIGURES = {
    "prior_train_steps_per_s": "prior_train_step",
    "decoder_train_steps_per_s": "decoder_train_step",
    "prior_sample_embeddings_per_s": "prior_sample_per_embedding",
    "decoder_sample_images_per_s": "decoder_sample_per_image",
}
PRIOR_BATCH, DECODER_BATCH, PRIOR_CHAINS, PRIOR_STEPS, DECODER_IMAGES, DECODER_STEPS = 64, 16, 16, 64, 4, 50


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def count_flops() -> dict[str, int]:
    """FLOPs of one unit of each bench figure (forward, and backward for training; the
    optimizer step's elementwise work is not counted), at the bench's sizes."""
    meta = torch.device("meta")
    with meta:
        prior = DiffusionPrior(DiffusionPriorConfig(**PRIOR_SIZE, num_timesteps=1000))
        decoder = Decoder(DecoderConfig(**DECODER_SIZE))

        def prior_inputs(b: int) -> tuple:
            cond = dict(
                text_embed=torch.randn(b, 256),
                text_tokens=torch.randn(b, 77, 256),
                text_mask=torch.ones(b, 77, dtype=torch.bool),
                text_keep=torch.ones(b, dtype=torch.bool),
            )
            return torch.randn(b, 256), torch.zeros(b, dtype=torch.long), cond

        def decoder_inputs(b: int) -> tuple:
            cond = dict(
                image_embed=torch.randn(b, 256),
                text_tokens=torch.ones(b, 77, dtype=torch.long),
                image_keep=torch.ones(b, dtype=torch.bool),
                text_keep=torch.ones(b, dtype=torch.bool),
            )
            return torch.randn(b, 3, 64, 64), torch.zeros(b, dtype=torch.long), cond

        def prior_train() -> None:
            x, t, cond = prior_inputs(PRIOR_BATCH)
            torch.nn.functional.mse_loss(prior(x, t, **cond), x).backward()

        def decoder_train() -> None:
            x, t, cond = decoder_inputs(DECODER_BATCH)  # the eps-MSE loss adds no matmul FLOPs
            torch.nn.functional.mse_loss(decoder(x, t, **cond), x).backward()

        with torch.no_grad():
            x, t, cond = prior_inputs(PRIOR_CHAINS)
            # sampling runs the text prefix once and three tokens per step (TextPrefixCache)
            prefix_flops = _flops(lambda: prior.encode_prefix(**cond))
            prefix = prior.encode_prefix(**cond)
            prior_step = _flops(lambda: prior.forward_from_prefix(x, t, prefix))
            x, t, cond = decoder_inputs(DECODER_IMAGES)
            decoder_fwd = _flops(lambda: decoder(x, t, **cond))
        return {
            "prior_train_step": _flops(prior_train),
            "decoder_train_step": _flops(decoder_train),
            "prior_sample_per_embedding": (prefix_flops + prior_step * PRIOR_STEPS) // PRIOR_CHAINS,
            "decoder_sample_per_image": decoder_fwd * DECODER_STEPS // DECODER_IMAGES,
        }


def matmul_peak_gflops(precision: str, device: str = "cpu", n: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of an n x n x n matmul in ``precision`` ("fp32" or "bf16", the latter as
    autocast runs it: bf16 inputs, fp32 accumulation) on ``device``, after one warm-up."""
    dev = torch.device(device)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    best = float("inf")
    for i in range(repeats + 1):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first call warms up
            best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def efficiency(rates: dict, flops: dict[str, int], peak_gflops: float) -> dict[str, dict[str, float]]:
    """Per figure: its rate, the GFLOP/s it achieves and that as a fraction of ``peak_gflops``."""
    out = {}
    for figure, unit in FIGURES.items():
        gflops = rates[figure] * flops[unit] / 1e9
        out[figure] = {
            "rate": rates[figure],
            "gflops": round(gflops, 2),
            "fraction_of_peak": round(gflops / peak_gflops, 3),
        }
    return out


def _precisions(choice: str, device: str) -> list[str]:
    """The precisions to time, the device's default (``auto``) first: the report's headline
    figures and peak memory are those of the first run (peak RSS only ever grows in a process)."""
    if choice == "both":
        first = resolve_precision("auto", device)
        return [first, "fp32" if first == "bf16" else "bf16"]
    return [resolve_precision(choice, device)]


def run_bench(threads: int = 2, device: str = "cpu", quick: bool = False, precision: str = "both") -> dict:
    """The ``unclip bench`` report: the figures at the first precision (the device's default)
    under their usual keys,
    plus ``flops``, ``matmul_peak_gflops``, ``by_precision``, ``efficiency`` and, with both
    precisions, ``bf16_speedup`` (bf16 figure over fp32 figure)."""
    torch.set_num_threads(threads)
    precisions = _precisions(precision, device)
    flops = count_flops()  # shapes only (meta tensors): first, so a failure costs no timing run
    peaks = {p: round(matmul_peak_gflops(p, device), 1) for p in precisions}
    runs = {p: run_benchmarks(threads=threads, device=device, quick=quick, precision=p) for p in precisions}
    report = dict(runs[precisions[0]])  # its peak_rss_mb was read before any later run
    report["peak_rss_mb_by_precision"] = {
        p: r["peak_rss_mb"] for p, r in runs.items()
    }  # process peak after each run: a later run's figure includes the earlier ones
    report["flops"] = flops
    report["matmul_peak_gflops"] = peaks
    report["matmul_peak_probe"] = (
        "2048^3 torch.mm, best of 5 after a warm-up, same threads, measured before the figures"
    )
    report["by_precision"] = {p: {fig: r[fig] for fig in FIGURES} for p, r in runs.items()}
    report["efficiency"] = {p: efficiency(r, flops, peaks[p]) for p, r in runs.items()}
    if len(precisions) == 2:
        report["bf16_speedup"] = {fig: round(runs["bf16"][fig] / runs["fp32"][fig], 3) for fig in FIGURES}
    return report


# --------------------------------------------------------------------------- peers


def find_peer_harness() -> Path:
    """The shared harness folder (holding run_peers.sh): $UNCLIP_PEER_BENCH, else ../shared/bench
    beside the working directory or beside the repository this file is in."""
    candidates = [
        os.environ.get("UNCLIP_PEER_BENCH"),
        Path.cwd().parent / "shared" / "bench",
        Path(__file__).resolve().parents[3].parent / "shared" / "bench",
    ]
    for c in candidates:
        if c and (Path(c) / "run_peers.sh").is_file():
            return Path(c)
    raise ConfigError(
        "--compare-peers: the peer harness (run_peers.sh) was not found; "
        "set UNCLIP_PEER_BENCH to its folder (e.g. ../shared/bench)"
    )


def check_peer_venvs(harness: Path) -> None:
    """ConfigError saying how to build the peer virtualenvs when they are missing."""
    root = Path(os.environ.get("PEER_ROOT", "/tmp/peer"))
    missing = [str(root / v) for v in ("venv", "venv-diffusers") if not (root / v / "bin" / "python").is_file()]
    if missing:
        raise ConfigError(
            f"--compare-peers needs the peer virtualenvs {', '.join(missing)}; build them once with "
            f"`bash {harness / 'setup_peers.sh'}` (about 2.5 min, from PyPI; PEER_ROOT={root}), then rerun"
        )


def _peer_figures(result: dict, name: str) -> dict[str, float]:
    r = result["results"]
    sample = r["prior_sample_raw"] if name == "dalle2" else r["prior_sample"]
    return {
        "prior_train_steps_per_s": r["prior_train"]["steps_per_s"],
        "decoder_train_steps_per_s": r["decoder_train"]["steps_per_s"],
        "prior_sample_embeddings_per_s": sample["embeddings_per_s"],
        "decoder_sample_images_per_s": r["decoder_sample"]["images_per_s"],
        "peak_rss_mb": result["rss_mb"]["peak_mb"],
    }


def compare_peers(report: dict, threads: int, out=None) -> dict:
    """Run the peer harness (about 7 min on 2 cores), print its table to ``out`` and return
    ``{"dalle2": {...}, "diffusers": {...}, "ratio_to_best_peer": {precision: {figure: ours/best}}}``;
    for peak RSS the ratio is ours over the smaller peer's (lower is better)."""
    harness = find_peer_harness()
    check_peer_venvs(harness)
    with tempfile.TemporaryDirectory(prefix="unclip-peers-") as tmp:
        env = {**os.environ, "OUT_DIR": tmp, "TQDM_DISABLE": "1"}
        done = subprocess.run(
            ["bash", str(harness / "run_peers.sh"), "--threads", str(threads)], env=env, capture_output=True, text=True
        )
        if done.returncode:
            raise ConfigError(
                f"the peer harness {harness / 'run_peers.sh'} failed (exit {done.returncode}): "
                f"{done.stderr.strip()[-800:]}"
            )
        print(done.stdout, file=out or sys.stdout)
        peers = {
            name: _peer_figures(json.loads((Path(tmp) / f"{name}.json").read_text()), name)
            for name in ("dalle2", "diffusers")
        }
    ratios = {}
    for precision, figures in report["by_precision"].items():
        ratios[precision] = {fig: round(figures[fig] / max(p[fig] for p in peers.values()), 3) for fig in FIGURES}
    ratios["peak_rss"] = round(report["peak_rss_mb"] / min(p["peak_rss_mb"] for p in peers.values()), 3)
    return {
        **peers,
        "ratio_to_best_peer": ratios,
        "note": "peers run fp32 (the harness has no bf16 mode); ours per precision",
    }


def run_bench_command(args: argparse.Namespace) -> int:
    """``unclip bench``: print the report (``--json``: one JSON object), with ``--compare-peers`` the peers too."""
    if args.compare_peers:  # fail before the long run, not after it
        check_peer_venvs(find_peer_harness())
    report = run_bench(threads=args.threads, device=args.device, quick=args.quick, precision=args.precision)
    if args.compare_peers:
        report["peers"] = compare_peers(report, args.threads, out=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(f"{k}: {v}" for k, v in report.items()))
    return 0
