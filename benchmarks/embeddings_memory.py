"""Peak memory of reading embedding folders of 100,000 and 1,000,000 rows (issue 12).

For each size, writes a synthetic folder in the clip-retrieval layout (unit-norm float16
z_i and z_t of dimension 768, parts of 100,000 rows, metadata with key and caption), then
in a fresh process reads one shuffled epoch in batches of 4,096, as prior training does,
and then looks up z_i for 40,960 random keys, as decoder training does. Reports the
process's peak resident set (``ru_maxrss``) after each phase, and the largest resident set
sampled after every batch minus the one before reading (``rss_growth_mb``: ``ru_maxrss`` alone
can be set by importing torch); the claim is that neither grows with the number of rows
(difference under 200 MB).

With ``--train-steps N`` each folder is also trained on: a fresh process runs ``unclip
train prior --embeddings FOLDER --clip CLIP --preset tiny --steps N`` (in-process, through
``train_component``) and reports its peak resident set. The folder then has the CLIP's
dimension, and its z_t are that CLIP's encodings of the captions (a few hundred distinct
``shapes`` captions, cycled), so the trainer's check of z_t against the CLIP passes;
z_i stay random unit vectors.

    PYTHONPATH=src python benchmarks/embeddings_memory.py [--rows 100000 1000000] [--json]
    PYTHONPATH=src python benchmarks/embeddings_memory.py --train-steps 300 --clip src/unclip/models/shapes

Writes ``benchmarks/results/embeddings_memory.json``. Needs about 3.4 GB of free disk
for the 1,000,000-row folder (removed afterwards unless ``--keep``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def write_synthetic(root: Path, rows: int, dim: int, part_rows: int, seed: int = 0, clip: str | None = None) -> None:
    """A synthetic embedding folder of ``rows`` rows (random unit vectors); with ``clip``,
    captions cycled from the ``shapes`` captions and z_t that CLIP's encodings of them."""
    from unclip.data.embedding_folder import write_part

    rng = np.random.default_rng(seed)
    # The values do not matter for memory; one random block (rolled per part) keeps writing fast.
    block = rng.standard_normal((part_rows, dim), dtype=np.float32)
    vocab = text_embeds = None
    if clip is not None:
        vocab, text_embeds = caption_vocabulary(clip)
    for part, start in enumerate(range(0, rows, part_rows)):
        n = min(part_rows, rows - start)
        keys = [f"{i:09d}" for i in range(start, start + n)]
        img = np.roll(block, part, axis=0)[:n]
        if vocab is None:
            captions = [f"synthetic caption number {i}" for i in range(start, start + n)]
            text = img[::-1]
        else:
            which = np.arange(start, start + n) % len(vocab)
            captions = [vocab[j] for j in which]
            text = text_embeds[which]
        write_part(root, part, img, text, keys, captions)


def caption_vocabulary(clip: str) -> tuple[list[str], np.ndarray]:
    """Distinct captions of the first 2,000 ``shapes`` training items and their unit text embeddings."""
    import torch

    from unclip.clip.spec import load_clip_spec
    from unclip.data.shapes import render_batch

    model = load_clip_spec(clip)
    _, captions, _ = render_batch("train", 0, 2000, 16, 0)
    vocab = sorted(set(captions))
    with torch.no_grad():
        embeds = model.encode_text_full(model.tokenize(vocab)).embed.float()
    return vocab, torch.nn.functional.normalize(embeds, dim=-1).numpy()


def train_prior(root: Path, clip: str, steps: int) -> dict:
    """Run in a fresh process: train the tiny prior ``steps`` steps on the folder; peak RSS."""
    import torch

    from unclip.train.components import train_component

    torch.set_num_threads(1)
    start_peak = peak_mb()
    with tempfile.TemporaryDirectory(prefix="emb-mem-train-") as out:
        t0 = time.perf_counter()
        summary = train_component(
            "prior", "shapes", "tiny", out, embeddings=str(root), clip=clip, steps=steps, progress=False
        )
        seconds = time.perf_counter() - t0
    return {
        "train_steps": steps,
        "train_batch_size": summary.get("batch_size"),
        "train_s": round(seconds, 1),
        "peak_rss_mb_before_training": round(start_peak, 1),
        "peak_rss_mb_prior_training": round(peak_mb(), 1),
    }


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_mb() -> float:
    """Resident set now (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(root: Path, batch_size: int, lookups: int) -> dict:
    """Run in a fresh process: read one epoch, then look up keys; peak RSS after each."""
    import torch

    from unclip.data.embedding_folder import EmbeddingFolder

    torch.set_num_threads(1)
    start_peak, start_rss = peak_mb(), current_mb()
    t0 = time.perf_counter()
    folder = EmbeddingFolder(root)
    rows, max_rss = 0, start_rss
    for batch in folder.batches(batch_size, seed=0):
        rows += len(batch.keys)
        max_rss = max(max_rss, current_mb())
    epoch_s = time.perf_counter() - t0
    epoch_peak = peak_mb()
    rng = np.random.default_rng(1)
    t1 = time.perf_counter()
    found = 0
    for _ in range(lookups // batch_size):
        keys = [f"{i:09d}" for i in rng.integers(0, len(folder), batch_size)]
        found += int(folder.lookup_image_embeds(keys)[1].sum())
        max_rss = max(max_rss, current_mb())
    lookup_s = time.perf_counter() - t1
    return {
        "rows": rows,
        "rss_mb_before_reading": round(start_rss, 1),
        "max_rss_mb_while_reading": round(max_rss, 1),
        "rss_growth_mb": round(max_rss - start_rss, 1),
        "peak_rss_mb_after_import": round(start_peak, 1),
        "peak_rss_mb_after_epoch": round(epoch_peak, 1),
        "peak_rss_mb_after_lookups": round(peak_mb(), 1),
        "epoch_s": round(epoch_s, 2),
        "rows_per_s": round(rows / epoch_s),
        "lookups": found,
        "lookup_s": round(lookup_s, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--part-rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--lookups", type=int, default=40_960)
    parser.add_argument("--workdir", default=None, help="where to write the folders (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic folders")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--train-steps", type=int, default=0, help="also train the tiny prior this many steps")
    parser.add_argument("--clip", default="src/unclip/models/shapes", help="the CLIP for --train-steps")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--write", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--train", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure), args.batch_size, args.lookups)))
        return 0
    if args.train:
        print(json.dumps(train_prior(Path(args.train), args.clip, args.train_steps)))
        return 0
    if args.write:
        clip = args.clip if args.train_steps else None
        write_synthetic(Path(args.write), args.rows[0], args.dim, args.part_rows, clip=clip)
        return 0
    if args.train_steps:
        from unclip.clip.spec import load_clip_spec

        args.dim = load_clip_spec(args.clip).embed_dim
    work = Path(args.workdir or tempfile.mkdtemp(prefix="emb-mem-"))
    results = {"dim": args.dim, "part_rows": args.part_rows, "batch_size": args.batch_size, "runs": []}
    try:
        for rows in args.rows:
            root = work / f"rows_{rows}"
            env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
            # Both phases run in child processes: Linux carries ru_maxrss across fork and exec,
            # so a child of a process that had just written 3 GB would inherit its peak.
            t0 = time.perf_counter()
            write = [
                sys.executable,
                __file__,
                "--write",
                str(root),
                "--rows",
                str(rows),
                "--dim",
                str(args.dim),
                "--part-rows",
                str(args.part_rows),
                "--train-steps",
                str(args.train_steps),
                "--clip",
                args.clip,
            ]
            subprocess.run(write, check=True, env=env)
            write_s = time.perf_counter() - t0
            cmd = [
                sys.executable,
                __file__,
                "--measure",
                str(root),
                "--batch-size",
                str(args.batch_size),
                "--lookups",
                str(args.lookups),
            ]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            run = {**json.loads(out.strip().splitlines()[-1]), "write_s": round(write_s, 1)}
            if args.train_steps:
                train = [sys.executable, __file__, "--train", str(root), "--train-steps", str(args.train_steps)]
                train += ["--clip", args.clip]
                out = subprocess.run(train, check=True, capture_output=True, text=True, env=env).stdout
                run.update(json.loads(out.strip().splitlines()[-1]))
            results["runs"].append(run)
            if not args.json:
                print(json.dumps(run))
            if not args.keep:
                shutil.rmtree(root)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    peaks = [r["peak_rss_mb_after_lookups"] for r in results["runs"]]
    results["peak_difference_mb"] = round(max(peaks) - min(peaks), 1)
    growth = [r["rss_growth_mb"] for r in results["runs"]]
    results["rss_growth_difference_mb"] = round(max(growth) - min(growth), 1)
    if args.train_steps:
        train_peaks = [r["peak_rss_mb_prior_training"] for r in results["runs"]]
        results["prior_training_peak_difference_mb"] = round(max(train_peaks) - min(train_peaks), 1)
    results["command"] = "PYTHONPATH=src python benchmarks/embeddings_memory.py " + " ".join(sys.argv[1:])
    name = "embeddings_memory_prior_training.json" if args.train_steps else "embeddings_memory.json"
    out_file = ROOT / "benchmarks" / "results" / name
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
