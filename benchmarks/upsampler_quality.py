"""Quality of each upsampler stage against bicubic upsampling (issue 6); prints one JSON object.

    PYTHONPATH=src python benchmarks/upsampler_quality.py --model DIR [--n 32] [--steps N] [--out FILE]

For every ``upsampler_*`` component of the model (in order of output size), the first
``--n`` shapes test images are rendered at the stage's output side, downsampled cleanly
(antialiased bicubic) to its input side, and brought back up by the diffusion upsampler
(DDIM, the stage's default step count unless ``--steps``) and by plain bicubic
interpolation. Reported per stage: mean PSNR (dB) of each against the originals, the
gain over bicubic, and the upsampler's seconds per image.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from unclip.data.shapes import render_batch
from unclip.upsampler.cascade import load_upsampler, upsample
from unclip.upsampler.degradations import resize


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2): (B,)."""
    mse = ((a - b) / 2).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return -10.0 * torch.log10(mse)


def stage_dirs(model_dir: Path) -> list[Path]:
    meta = json.loads((model_dir / "model.json").read_text())
    names = [v for k, v in meta.get("components", {}).items() if k.startswith("upsampler_")]
    return sorted((model_dir / n for n in names), key=lambda p: int(p.name.rsplit("_", 1)[-1]))


def evaluate_stage(directory: Path, n: int, steps: int | None, seed: int, batch: int) -> dict:
    stage = load_upsampler(directory)
    cfg = stage.model.config
    high, _, _ = render_batch("test", 0, n, cfg.high_res, seed)
    low = resize(high, cfg.low_res, "bicubic").clamp(-1, 1)
    bicubic = resize(low, cfg.high_res, "bicubic").clamp(-1, 1)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    ups = torch.cat([upsample(stage.model, stage.settings, low[i:i + batch], steps=steps or stage.steps, generator=generator) for i in range(0, n, batch)])
    seconds = time.perf_counter() - start
    p_model, p_bicubic = psnr(ups, high), psnr(bicubic, high)
    return {
        "component": directory.name,
        "low_res": cfg.low_res,
        "high_res": cfg.high_res,
        "degradation": stage.degradation,
        "steps": steps or stage.steps,
        "num_images": n,
        "psnr_upsampler_db": float(p_model.mean()),
        "psnr_bicubic_db": float(p_bicubic.mean()),
        "psnr_gain_db": float((p_model - p_bicubic).mean()),
        "fraction_better_than_bicubic": float((p_model > p_bicubic).float().mean()),
        "seconds_per_image": seconds / n,
        "params": sum(p.numel() for p in stage.model.parameters()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model directory with upsampler_* components in model.json")
    parser.add_argument("--n", type=int, default=32, help="test images per stage")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default: each stage's own)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    dirs = stage_dirs(Path(args.model))
    if not dirs:
        print(f"{args.model}/model.json lists no upsampler_* component; train one with train_upsampler", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    report = {"model": str(args.model), "stages": [evaluate_stage(d, args.n, args.steps, args.seed, args.batch) for d in dirs]}
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
