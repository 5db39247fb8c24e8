"""Crops per second of an upsampler stage's data pipeline, built in the loop's process or by workers.

    PYTHONPATH=src python benchmarks/upsampler_batch_throughput.py [--degradation bsr] [--workers 0 2]
        [--steps 12] [--batch 16] [--out FILE]

The BSR second stage degrades every 128 px crop with its own random plan; on the lent H200 that
pipeline, run in the training process, held training to about 110 crops/s. This measures the
pipeline alone (``UpsamplerStage.get_batch`` for consecutive steps, no network), once per worker
count, on the same renders and steps, and checks that every worker count gives the same batches.
Prints one JSON object. The first ``--warmup`` steps (workers starting) are not timed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from unclip.diffusion import DiffusionSettings  # noqa: E402
from unclip.train.config import step_generator  # noqa: E402
from unclip.train.upsampler_stage import UpsamplerStage, render_training_images  # noqa: E402
from unclip.upsampler.degradations import DEGRADATIONS  # noqa: E402
from unclip.upsampler.model import Upsampler, UpsamplerConfig  # noqa: E402


def measure(images: torch.Tensor, degradation: str, workers: int, steps: int, warmup: int, batch: int) -> dict:
    model = Upsampler(UpsamplerConfig(low_res=128, high_res=512, base_channels=8, channel_mults=(1, 2, 4)))
    stage = UpsamplerStage(model, images, batch, DiffusionSettings(), degradation, workers=workers, seed=0)
    sums = []
    try:
        for step in range(warmup):
            stage.get_batch(step, step_generator(0, step))
        t0 = time.perf_counter()
        for step in range(warmup, warmup + steps):
            high, cond = stage.get_batch(step, step_generator(0, step))
            sums.append(float(high.double().sum() + cond.double().sum()))
        seconds = time.perf_counter() - t0
    finally:
        if stage.prefetcher is not None:
            stage.prefetcher.close()
    return {"workers": workers, "seconds": seconds, "crops_per_s": steps * batch / seconds, "checksums": sums}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--degradation", default="bsr", choices=DEGRADATIONS)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--images", type=int, default=64, help="renders at 512 px to crop from")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    images = render_training_images(a.images, 512)
    rows = [measure(images, a.degradation, w, a.steps, a.warmup, a.batch) for w in a.workers]
    same = all(r["checksums"] == rows[0]["checksums"] for r in rows)
    result = {
        "degradation": a.degradation,
        "batch": a.batch,
        "steps": a.steps,
        "cpu_threads": torch.get_num_threads(),
        "same_batches": same,
        "rows": [{k: v for k, v in r.items() if k != "checksums"} for r in rows],
    }
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
