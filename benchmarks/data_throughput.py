"""Decoder training from WebDataset shards vs from memory, and ``unclip embed`` throughput (issue 12).

Writes ``--images`` shapes images at 32 px as WebDataset shards (as ``unclip data shards``),
encodes them with the shipped ``shapes`` CLIP into an embedding folder (``unclip embed``;
reported as images/s), then times training steps of the ``small`` preset's decoder (32 px)
on each of:

- ``memory``: the in-memory path (images rendered once as uint8, z_i cached), as ``unclip
  train decoder --data shapes`` does;
- ``shards+embeddings``: streamed from the shards, z_i looked up by key in the folder
  (``--data SHARDS --embeddings DIR``);
- ``shards, z_i on the fly``: streamed, z_i encoded per batch by the frozen CLIP (``--data SHARDS``).

A training step here is what the loop does minus EMA and logging: ``get_batch``, the loss,
backward and an AdamW step. The machine these figures come from is shared, and its load
drifts by several times within minutes, so the configurations are timed in interleaved
rounds (``--rounds`` rounds of ``--steps`` steps each, in an order rotated every round; the
first round is a warm-up), and each
streamed rate is compared with the in-memory rate of the same round (median over rounds).
``get_batch`` is also timed alone (the data path: reading, decoding, z_i lookup or
encoding, tokenizing; median over ``--batches`` batches). The claim: the shards rate is
within 15% of the in-memory rate on 2 cores. DataLoader workers (``--workers``) are left out:
interleaving would let a worker prefetch during the other configurations' time.

    PYTHONPATH=src python benchmarks/data_throughput.py [--images 256] [--batch-size 32] [--rounds 4] [--steps 3]

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

from unclip.clip.spec import clip_record, load_clip_spec
from unclip.data import get_dataset
from unclip.data.embed import embed_data
from unclip.data.embedding_folder import EmbeddingFolder
from unclip.data.embeddings import encode_training_set, render_training_set
from unclip.data.shard_writer import write_shards
from unclip.data.streaming import open_source
from unclip.decoder.model import Decoder, DecoderConfig
from unclip.diffusion import DiffusionSettings
from unclip.train.clip_choice import text_dims
from unclip.train.presets import get_preset
from unclip.train.stages import DecoderStage
from unclip.train.step_batches import StreamSteps
from unclip.train.stream_stages import StreamDecoderStage

SIZE = 32


def _decoder(clip, section: dict, seed: int) -> tuple[Decoder, DiffusionSettings]:
    settings = DiffusionSettings(**section.get("diffusion", {}))
    torch.manual_seed(seed)
    config = DecoderConfig(**{**section["model"], **text_dims(clip), "learned_variance": settings.learned_variance})
    return Decoder(config), settings


def _train_step(stage, optimizer: torch.optim.Optimizer, step: int) -> None:
    generator = torch.Generator().manual_seed(step)
    loss, _ = stage.loss(stage.get_batch(step, generator), generator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _interleaved_rates(stages: dict, rounds: int, steps: int) -> tuple[dict[str, float], dict[str, float]]:
    """Steps/s of each stage (median over rounds after the first) and its median ratio to the
    first stage's rate in the same round."""
    optimizers = {k: torch.optim.AdamW(s.model.parameters(), lr=1e-4) for k, s in stages.items()}
    per_round: list[dict[str, float]] = []
    step = 0
    names = list(stages)
    for r in range(rounds):
        rates = {}
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotated: no configuration always first
            stage = stages[name]
            t0 = time.perf_counter()
            for k in range(steps):
                _train_step(stage, optimizers[name], step + k)
            rates[name] = steps / (time.perf_counter() - t0)
        per_round.append(rates)
        step += steps
    timed = per_round[1:] or per_round
    base = next(iter(stages))
    rate = {k: statistics.median(r[k] for r in timed) for k in stages}
    ratio = {k: statistics.median(r[k] / r[base] for r in timed) for k in stages}
    return rate, ratio


def _batch_seconds(stage, batches: int) -> float:
    """Median seconds of ``stage.get_batch`` (the data path alone), after one warm-up batch."""
    times = []
    for step in range(batches + 1):
        t0 = time.perf_counter()
        stage.get_batch(step, torch.Generator().manual_seed(step))
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def run(images: int, batch: int, threads: int, batches: int, rounds: int, steps: int, seed: int = 0) -> dict:
    torch.set_num_threads(threads)
    work = Path(tempfile.mkdtemp(prefix="unclip_throughput_"))
    shards, emb = work / "shards", work / "emb"
    t0 = time.perf_counter()
    write_shards("shapes", shards, shard_size=256, size=SIZE, seed=seed, length=images, progress=False)
    shards_s = time.perf_counter() - t0
    clip = load_clip_spec("shapes", batch_size=256)
    t0 = time.perf_counter()
    embed_data(str(shards), clip, emb, batch_size=256, clip_record=clip_record("shapes"), progress=False)
    embed_s = time.perf_counter() - t0
    folder = EmbeddingFolder(emb)

    section = get_preset("decoder", "small")
    dataset = get_dataset("shapes", split="train", size=SIZE, seed=seed, length=images)
    memory_set = encode_training_set(
        render_training_set(dataset, images, workers=0, progress=False), clip, progress=False
    )

    def streamed(with_folder: bool) -> StreamDecoderStage:
        size = SIZE if with_folder else max(SIZE, clip.image_size)
        source = open_source(str(shards), size, seed=seed, shuffle=True, repeat=False)
        model, settings = _decoder(clip, section, seed)
        return StreamDecoderStage(
            model, StreamSteps(source, batch), clip, settings, folder=folder if with_folder else None
        )

    def stages() -> dict:
        model, settings = _decoder(clip, section, seed)
        memory = DecoderStage(model, memory_set, batch, settings)
        return {"memory": memory, "shards+embeddings": streamed(True), "shards, z_i on the fly": streamed(False)}

    batch_s = {name: _batch_seconds(stage, batches) for name, stage in stages().items()}
    rate, ratio = _interleaved_rates(stages(), rounds, steps)
    return {
        "images": images, "size": SIZE, "decoder_preset": "small", "batch_size": batch,
        "rounds": rounds, "steps_per_round": steps, "threads": threads, "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "shards_written_s": round(shards_s, 2),
        "embed_images_per_s": round(len(folder) / embed_s, 1), "embed_clip": "shapes (ours: ViT 32 px, width 128)",
        "decoder_steps_per_s": {k: round(v, 3) for k, v in rate.items()},
        "relative_to_memory": {k: round(v, 3) for k, v in ratio.items()},
        "get_batch_ms": {k: round(1000 * v, 1) for k, v in batch_s.items()},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the small preset's (32)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved timing rounds (the first is a warm-up)")
    parser.add_argument("--steps", type=int, default=3, help="training steps per configuration and round")
    parser.add_argument("--batches", type=int, default=20, help="batches timed per configuration for get_batch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    batch = args.batch_size or get_preset("decoder", "small")["batch_size"]
    report = run(args.images, batch, args.threads, args.batches, args.rounds, args.steps)
    out = ROOT / "benchmarks" / "results" / "data_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in report.items()))


if __name__ == "__main__":
    main()
