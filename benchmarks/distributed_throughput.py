"""Decoder training throughput at 32 px: 1 process x T threads against N processes x T/N threads.

The issue 13 benchmark (not a test). Each configuration trains the "small" preset's decoder
network (32 px, base 64 channels, multipliers 1-2-2) through the real loop (``train``: AdamW,
EMA, clipping, the loss log) on a synthetic training set (random images, embeddings and
tokens; the speed does not depend on the pixels), for the same *global* batch. Runs on N
processes are started the way torchrun starts them (RANK, WORLD_SIZE, MASTER_ADDR/PORT) and
use gloo on CPU, or NCCL with ``--device cuda``.

    python benchmarks/distributed_throughput.py                    # 1x2 threads vs 2x1 thread
    python benchmarks/distributed_throughput.py --steps 30 --batch 32 --json
    python benchmarks/distributed_throughput.py --device cuda --configs 1x8   # one GPU

Reports steps/s and samples/s (global batch x steps/s), timed after ``--warmup`` steps.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _stage(batch: int, device: str):
    import torch

    from unclip.data.embeddings import TextTable, TrainingSet
    from unclip.decoder.model import Decoder, DecoderConfig
    from unclip.diffusion import DiffusionSettings
    from unclip.train.presets import get_preset
    from unclip.train.stages import DecoderStage

    section = get_preset("decoder", "small")
    g = torch.Generator().manual_seed(0)
    n, captions, length, embed, width = 512, 16, 20, 128, 128
    text = TextTable(
        captions=[f"caption {i}" for i in range(captions)],
        token_ids=torch.randint(1, 100, (captions, length), generator=g),
        text_embeds=torch.nn.functional.normalize(torch.randn(captions, embed, generator=g), dim=-1),
        token_encodings=torch.randn(captions, length, width, generator=g).half(),
        token_mask=torch.ones(captions, length, dtype=torch.bool),
    )
    data = TrainingSet(
        images=torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
        caption_ids=torch.randint(0, captions, (n,), generator=g),
        captions=text.captions,
        image_embeds=torch.nn.functional.normalize(torch.randn(n, embed, generator=g), dim=-1),
        text=text,
    )
    settings = DiffusionSettings(**section.get("diffusion", {}))
    dims = {"clip_embed_dim": embed, "vocab_size": 100, "context_length": length}
    config = DecoderConfig(**{**section["model"], **dims, "learned_variance": settings.learned_variance})
    torch.manual_seed(0)
    return DecoderStage(Decoder(config), data, batch, settings)


def worker(args: argparse.Namespace) -> None:
    """One process of a configuration: train, then (rank 0) print the timing as JSON."""
    import torch

    from unclip.train import TrainConfig, distributed, train

    torch.set_num_threads(args.threads)
    distributed.init_from_env(args.device)
    stage = _stage(args.batch, args.device)
    times: list[float] = []

    def on_log(record: dict) -> None:
        times.append(time.perf_counter())

    steps = args.warmup + args.steps
    config = TrainConfig(steps=steps, lr=1e-4, warmup_steps=1, log_every=1, checkpoint_every=steps, device=args.device)
    with tempfile.TemporaryDirectory() as out:
        # One log record per step, each written before that step's checkpoint (only the last
        # step has one), so the timing covers training steps only.
        train(stage, config, out, progress=False, on_log=on_log)
    if distributed.context().is_main:
        elapsed = times[-1] - times[args.warmup - 1]
        print(json.dumps({"steps_per_s": args.steps / elapsed, "samples_per_s": args.steps * args.batch / elapsed}))
    distributed.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(procs: int, threads: int, args: argparse.Namespace) -> dict:
    """Run one configuration of ``procs`` processes with ``threads`` threads each."""
    port = _free_port()
    cmd = [sys.executable, __file__, "--worker", "--threads", str(threads), "--batch", str(args.batch)]
    cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device]
    running = []
    for rank in range(procs):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT / "src"))
        if procs > 1:
            env.update(
                RANK=str(rank),
                LOCAL_RANK=str(rank),
                WORLD_SIZE=str(procs),
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port),
            )
        running.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
    outputs = [p.communicate()[0] for p in running]
    if any(p.returncode for p in running):
        raise SystemExit(f"configuration {procs}x{threads} failed (exit codes {[p.returncode for p in running]})")
    result = json.loads(outputs[0].strip().splitlines()[-1])
    return {"processes": procs, "threads_per_process": threads, "global_batch": args.batch, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="1x2,2x1", help="PROCESSESxTHREADS list (default: 1x2,2x1)")
    parser.add_argument("--batch", type=int, default=16, help="global batch (default: 16)")
    parser.add_argument("--steps", type=int, default=12, help="timed steps (default: 12)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3)")
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per process)")
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    rows = [measure(*map(int, c.split("x")), args) for c in args.configs.split(",")]
    if args.json:
        print(json.dumps({"device": args.device, "results": rows}, indent=2))
        return
    print(f"decoder training at 32 px, global batch {args.batch}, {args.steps} timed steps on {args.device}")
    for r in rows:
        label = f"{r['processes']} process(es) x {r['threads_per_process']} thread(s)"
        print(f"  {label}: {r['steps_per_s']:.2f} steps/s, {r['samples_per_s']:.1f} samples/s")


if __name__ == "__main__":
    main()
