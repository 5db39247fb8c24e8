"""``unclip embed SRC --clip CLIP --out DIR``: precompute CLIP embeddings (clip-retrieval layout)."""

from __future__ import annotations

import argparse

from . import args as A


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``embed`` command."""
    from ...clip.spec import CLIP_HELP  # noqa: PLC0415 - small module, no torch models loaded

    p = sub.add_parser(
        "embed",
        help="encode a dataset with a frozen CLIP into an embedding folder (clip-retrieval layout)",
        description=(
            "Encode the images and captions of SRC with a frozen CLIP and write DIR/img_emb/img_emb_{i}.npy, "
            "DIR/text_emb/text_emb_{i}.npy (float16, unit norm) and DIR/metadata/metadata_{i}.parquet (key, caption): "
            "one part per input shard, or per --part-size items of a folder or built-in set. The layout is the one "
            "clip-retrieval writes, so `unclip train prior --embeddings DIR` also reads released sets such as LAION's. "
            "Resumable: re-run the same command after an interruption; finished parts are never rewritten."
        ),
    )
    p.add_argument(
        "src",
        metavar="SRC",
        help="data: 'shapes', 'emoji', a caption folder, or WebDataset shards (.tar, folder of .tar, brace pattern)",
    )
    p.add_argument("--clip", required=True, help=CLIP_HELP)
    p.add_argument("--out", required=True, help="the embedding folder to write (or resume)")
    p.add_argument("--batch-size", type=A.BATCH_SIZE, default=256, help="images per CLIP forward pass (default: 256)")
    p.add_argument(
        "--part-size", type=A.SAMPLES, default=10_000, help="items per part for non-shard sources (default: 10000)"
    )
    p.add_argument(
        "--split",
        default="train",
        choices=["train", "val", "test"],
        help="split of a built-in set or caption folder (default: train)",
    )
    p.add_argument("--seed", type=A.seed, default=0, help="dataset seed of a built-in set (default: 0)")
    p.add_argument(
        "-n",
        type=A.SAMPLES,
        default=None,
        help="number of items of a built-in set or cap for a folder (default: all; shapes: 10000)",
    )
    p.add_argument("--device", default="cpu", type=A.device, help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_embed)


def run_embed(args: argparse.Namespace) -> int:
    """Load the CLIP, encode SRC into --out, print a one-line summary."""
    from ...clip.spec import clip_record, load_clip_spec, parse_clip_spec  # noqa: PLC0415
    from ...data.embed import embed_data  # noqa: PLC0415

    spec = parse_clip_spec(args.clip)
    clip = load_clip_spec(spec, device=args.device, batch_size=args.batch_size)
    summary = embed_data(
        args.src,
        clip,
        args.out,
        batch_size=args.batch_size,
        part_size=args.part_size,
        split=args.split,
        seed=args.seed,
        length=args.n,
        clip_record=clip_record(spec),
        progress=not args.no_progress,
    )
    skipped = summary["skipped"].get("total", 0)
    print(
        f"{args.out}: {summary['parts']} parts ({summary['parts_written_now']} written now), {skipped} samples skipped"
    )
    return 0
