"""Where an upsampler stage's sampler should start, and how far to back-project: PSNR per setting.

    PYTHONPATH=src python benchmarks/upsampler_start_calibration.py --component MODEL/upsampler_512 \
        [--starts 50 100 150 200 300] [--steps 1 2] [--back-projection 0 1 2] [--n 32] [--out FILE.json] \
        [--plot FILE.png] [--write]

A stage can sample from pure noise (the paper) or from its input's bicubic upsample diffused
forward to a timestep t (``unclip.upsampler.cascade``, CCDF), and its output may be back-projected
onto the input. For every (t, steps, rounds) and for the from-noise sampler at the paper's step
count (with each number of rounds), the mean PSNR against the originals of
``--n`` shapes images of the *validation* split (the quality benchmark scores the test split),
rendered at the stage's two sides. The best setting by mean PSNR is reported; ``--write`` stores
it as the component's ``default_start`` / ``default_steps`` / ``default_back_projection`` (its
``config.json``, written atomically; the weights are untouched), and only if it beats both
bicubic and from-noise sampling. ``--plot`` draws PSNR against t with bicubic and from-noise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unclip.data.shapes import render_batch  # noqa: E402
from unclip.diffusion import UPSAMPLER_DEFAULT_STEPS  # noqa: E402
from unclip.model_dir import load_upsampler  # noqa: E402
from unclip.storage.checkpoint import CONFIG_NAME, atomic_write_json, read_component_config  # noqa: E402
from unclip.upsampler.cascade import NOISE_START, back_project, upsample  # noqa: E402
from unclip.upsampler.degradations import resize  # noqa: E402
from upsampler_quality import psnr  # noqa: E402


def sample_all(stage, low: torch.Tensor, steps: int, start: int | None, batch: int) -> tuple[torch.Tensor, float]:
    """Upsample ``low`` in batches (seed 0 noise), no back-projection; returns images and seconds per image."""
    generator = torch.Generator().manual_seed(0)
    begin = time.perf_counter()
    out = torch.cat(
        [
            upsample(stage.model, stage.settings, low[i : i + batch], steps=steps, start=start, generator=generator)
            for i in range(0, low.shape[0], batch)
        ]
    )
    return out, (time.perf_counter() - begin) / len(low)


def score_rounds(out: torch.Tensor, low: torch.Tensor, high: torch.Tensor, bicubic: torch.Tensor, rounds: list[int]):
    """One row per number of back-projection rounds applied to the same samples."""
    rows = []
    for r in rounds:
        scores = psnr(back_project(out, low, r), high)
        rows.append(
            {
                "back_projection": r,
                "psnr_db": float(scores.mean()),
                "fraction_better_than_bicubic": float((scores > bicubic).float().mean()),
            }
        )
    return rows


def calibrate(
    directory: Path, starts: list[int], step_counts: list[int], rounds: list[int], n: int, batch: int
) -> dict:
    stage = load_upsampler(directory)
    cfg = stage.model.config
    high, _, _ = render_batch("val", 0, n, cfg.high_res, 0)
    low, _, _ = render_batch("val", 0, n, cfg.low_res, 0)
    bicubic = psnr(resize(low, cfg.high_res, "bicubic").clamp(-1, 1), high)
    noise_steps = UPSAMPLER_DEFAULT_STEPS.get(stage.degradation, 27)  # the paper's count, whatever is stored
    out, seconds = sample_all(stage, low, noise_steps, None, batch)
    noise = [
        {"start": NOISE_START, "steps": noise_steps, **row, "seconds_per_image": seconds}
        for row in score_rounds(out, low, high, bicubic, rounds)
    ]
    rows = []
    for steps in step_counts:
        for start in starts:
            if steps > start + 1:
                continue
            out, seconds = sample_all(stage, low, steps, start, batch)
            for row in score_rounds(out, low, high, bicubic, rounds):
                rows.append({"start": start, "steps": steps, **row, "seconds_per_image": seconds})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    best = max(rows, key=lambda r: r["psnr_db"])
    return {
        "component": str(directory),
        "split": "val",
        "num_images": n,
        "psnr_bicubic_db": float(bicubic.mean()),
        "from_noise": noise,
        "rows": rows,
        "best": best,
        "best_beats_bicubic_and_noise": best["psnr_db"] > max([float(bicubic.mean())] + [r["psnr_db"] for r in noise]),
    }


def write_default(directory: Path, best: dict) -> None:
    """Store the chosen start and steps in the component's config.json (atomically)."""
    payload = read_component_config(directory, "upsampler")
    payload.setdefault("extra", {}).update(
        default_start=int(best["start"]),
        default_steps=int(best["steps"]),
        default_back_projection=int(best["back_projection"]),
    )
    atomic_write_json(directory / CONFIG_NAME, payload)


def plot(report: dict, path: Path) -> None:
    """PSNR against the start timestep, one line per (steps, back-projection rounds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for steps, rounds in sorted({(r["steps"], r["back_projection"]) for r in report["rows"]}):
        rows = [r for r in report["rows"] if (r["steps"], r["back_projection"]) == (steps, rounds)]
        label = f"from bicubic, {steps} step(s), {rounds} back-projection(s)"
        ax.plot([r["start"] for r in rows], [r["psnr_db"] for r in rows], "o-", label=label)
    ax.axhline(report["psnr_bicubic_db"], color="k", ls="--", label="bicubic")
    for row, style in zip(report["from_noise"], (":", "-.", "--")):
        label = f"from noise, {row['steps']} steps, {row['back_projection']} back-projection(s)"
        ax.axhline(row["psnr_db"], color="r", ls=style, label=label)
    ax.set_xlabel("start timestep t")
    ax.set_ylabel(f"mean PSNR (dB), {report['num_images']} val images")
    ax.set_title(Path(report["component"]).name)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--component", required=True, type=Path, help="an upsampler component directory")
    parser.add_argument("--starts", type=int, nargs="+", default=[50, 100, 150, 200, 300, 500])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--back-projection", type=int, nargs="+", default=[0, 1, 2], help="rounds to try")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--write", action="store_true", help="store the best start/steps in the component")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    report = calibrate(args.component, args.starts, args.steps, args.back_projection, args.n, args.batch)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if args.plot:
        plot(report, args.plot)
    if args.write:
        if not report["best_beats_bicubic_and_noise"]:
            print("not written: the best start does not beat bicubic and from-noise sampling", file=sys.stderr)
            return 1
        write_default(args.component, report["best"])
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
