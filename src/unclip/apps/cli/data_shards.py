"""``unclip data shards SRC --out DIR [--shard-size N]``: write WebDataset shards.

``unclip data D --out DIR`` already dumps samples of a dataset. Rather than a second
top-level command, ``shards`` is an action word of that same command, recognised by a
second positional: ``unclip data shards SRC`` (two positionals) writes shards of ``SRC``,
while ``unclip data D`` (one positional) dumps samples as before, so even a folder that
happens to be called ``shards`` still dumps. :func:`register` extends the existing
``data`` parser (it must be registered after it) and installs one handler for both.
"""

from __future__ import annotations

import argparse

from ...errors import InputError
from . import args as A

DUMP_DEFAULT_N = 16
DUMP_DEFAULT_SIZE = 64


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``SRC`` and ``--shard-size`` to the ``data`` parser and handle both of its forms."""
    parser = sub.choices.get("data")
    if parser is None:
        raise AssertionError("unclip.apps.cli.data_shards must be registered after the `data` command")
    parser.add_argument(
        "src",
        nargs="?",
        default=None,
        metavar="SRC",
        help="with DATASET = 'shards': the source to write as WebDataset shards ('shapes', 'emoji' or a caption "
        "folder)",
    )
    parser.add_argument(
        "--shard-size", type=A.SAMPLES, default=1000, help="`data shards`: samples per shard (default: 1000)"
    )
    parser.set_defaults(handler=run_data, n=None, size=None)
    parser.description = (parser.description or "") + (
        " `unclip data shards SRC --out DIR [--shard-size N]` instead writes SRC as WebDataset shards in the "
        "img2dataset layout (DIR/00000.tar ...: KEY.png or the folder's original image, KEY.txt, KEY.json); -n caps "
        "the samples (default: all; shapes: 10,000), --size resizes (default: 64 for built-in sets, a folder's "
        "images are copied unchanged)."
    )


def run_data(args: argparse.Namespace) -> int:
    """Dump samples (one positional) or write shards (``shards SRC``)."""
    if args.src is None:
        from ...data import get_dataset
        from ...data.dump import dump_samples

        n = DUMP_DEFAULT_N if args.n is None else args.n
        size = DUMP_DEFAULT_SIZE if args.size is None else args.size
        ds = get_dataset(args.dataset, split=args.split, size=size, seed=args.seed, length=max(n, 1))
        path = dump_samples(ds, n, args.out)
        print(f"wrote {n} samples to {path}")
        return 0
    if args.dataset != "shards":
        raise InputError(
            f"`unclip data` takes one dataset to dump (got {args.dataset!r} and {args.src!r}); "
            "to write shards use `unclip data shards SRC --out DIR`"
        )
    from ...data.shard_writer import write_shards

    summary = write_shards(
        args.src, args.out, shard_size=args.shard_size, size=args.size, split=args.split, seed=args.seed, length=args.n
    )
    print(f"wrote {summary['samples']} samples in {len(summary['shards'])} shards to {args.out}")
    return 0
