"""Decoder training from WebDataset shards vs from memory, and ``unclip embed`` throughput (issue 12).

Writes ``--images`` shapes images at 32 px as WebDataset shards (``unclip data shards``),
encodes them with the shipped ``shapes`` CLIP into an embedding folder (``unclip embed``;
reported as images/s), then trains the ``small`` preset's decoder (32 px) for ``--steps``
steps on each of:

- ``memory``: the in-memory path (images rendered once as uint8, z_i cached), as ``unclip
  train decoder --data shapes`` does;
- ``shards+embeddings``: streamed from the shards, z_i looked up by key in the folder
  (``--data SHARDS --embeddings DIR``), with 0 and with 1 DataLoader worker;
- ``shards``: streamed, z_i encoded on the fly by the frozen CLIP (``--data SHARDS``).

The rate is the median of the loop's logged steps/s over windows of 5 steps after the
first window (warm-up), so checkpointing and export are not counted. The claim: the
shards rate is within 15% of the in-memory rate on 2 cores.

    PYTHONPATH=src python benchmarks/data_throughput.py [--images 1024] [--steps 30] [--threads 2] [--json]

Writes ``benchmarks/results/data_throughput.json``. Figures on a shared machine are rough.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch

from unclip.apps.cli.main import main as cli
from unclip.clip.spec import clip_record, load_clip_spec
from unclip.data import get_dataset
from unclip.data.embed import embed_data
from unclip.data.embedding_folder import EmbeddingFolder
from unclip.data.embeddings import encode_training_set, render_training_set
from unclip.data.streaming import open_source
from unclip.decoder.model import Decoder, DecoderConfig
from unclip.diffusion import DiffusionSettings
from unclip.train.clip_choice import text_dims
from unclip.train.config import TrainConfig
from unclip.train.loop import train
from unclip.train.presets import get_preset
from unclip.train.stages import DecoderStage
from unclip.train.step_batches import StreamSteps
from unclip.train.stream_stages import StreamDecoderStage

SIZE = 32
LOG_EVERY = 5


def _decoder(clip, section: dict, seed: int) -> tuple[Decoder, DiffusionSettings]:
    settings = DiffusionSettings(**section.get("diffusion", {}))
    torch.manual_seed(seed)
    config = DecoderConfig(**{**section["model"], **text_dims(clip), "learned_variance": settings.learned_variance})
    return Decoder(config), settings


def _rate(stage, steps: int, run_dir: Path) -> float:
    """Median steps/s of the logged windows after the first."""
    rates: list[float] = []
    config = TrainConfig(steps=steps, warmup_steps=1, checkpoint_every=steps, log_every=LOG_EVERY, ema_decay=0.0)
    train(
        stage, config, run_dir, progress=False, on_log=lambda r: rates.append(r["steps_per_s"]) if "loss" in r else None
    )
    return statistics.median(rates[1:] or rates)


def run(images: int, steps: int, batch: int, threads: int, seed: int = 0) -> dict:
    torch.set_num_threads(threads)
    work = Path(tempfile.mkdtemp(prefix="unclip_throughput_"))
    shards, emb = work / "shards", work / "emb"
    t0 = time.perf_counter()
    assert cli(["data", "shards", "shapes", "--out", str(shards), "-n", str(images), "--shard-size", "256",
                "--size", str(SIZE), "--seed", str(seed)]) == 0  # fmt: skip
    shards_s = time.perf_counter() - t0
    clip = load_clip_spec("shapes", batch_size=256)
    t0 = time.perf_counter()
    embed_data(str(shards), clip, emb, batch_size=256, clip_record=clip_record("shapes"), progress=False)
    embed_s = time.perf_counter() - t0
    folder = EmbeddingFolder(emb)

    section = get_preset("decoder", "small")
    results: dict[str, float] = {}

    dataset = get_dataset("shapes", split="train", size=SIZE, seed=seed, length=images)
    memory_set = encode_training_set(
        render_training_set(dataset, images, workers=0, progress=False), clip, progress=False
    )
    model, settings = _decoder(clip, section, seed)
    results["memory"] = _rate(DecoderStage(model, memory_set, batch, settings), steps, work / "run_memory")

    def streamed(workers: int, with_folder: bool) -> StreamDecoderStage:
        size = SIZE if with_folder else max(SIZE, clip.image_size)
        source = open_source(str(shards), size, seed=seed, shuffle=True, repeat=False)
        model, settings = _decoder(clip, section, seed)
        steps_ = StreamSteps(source, batch, num_workers=workers)
        return StreamDecoderStage(model, steps_, clip, settings, folder=folder if with_folder else None)

    for name, workers, with_folder in (
        ("shards+embeddings", 0, True), ("shards+embeddings, 1 worker", 1, True), ("shards, z_i on the fly", 0, False),
    ):  # fmt: skip
        results[name] = _rate(streamed(workers, with_folder), steps, work / f"run_{len(results)}")
    base = results["memory"]
    return {
        "images": images, "size": SIZE, "decoder_preset": "small", "batch_size": batch, "steps": steps,
        "threads": threads, "cpus": os.cpu_count(), "load_average": os.getloadavg()[0],
        "shards_written_s": round(shards_s, 2),
        "embed_images_per_s": round(len(folder) / embed_s, 1), "embed_clip": "shapes (ours: ViT 32 px, width 128)",
        "decoder_steps_per_s": {k: round(v, 3) for k, v in results.items()},
        "relative_to_memory": {k: round(v / base, 3) for k, v in results.items()},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=30, help="training steps per configuration (first 5 are warm-up)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the small preset's (32)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    batch = args.batch_size or get_preset("decoder", "small")["batch_size"]
    report = run(args.images, args.steps, batch, args.threads)
    out = ROOT / "benchmarks" / "results" / "data_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in report.items()))


if __name__ == "__main__":
    main()
