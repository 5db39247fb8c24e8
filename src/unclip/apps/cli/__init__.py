"""Command groups of the ``unclip`` command line.

Each module here registers its subcommands with ``register(subparsers)``; every parser it
adds sets ``handler`` (a function of the parsed arguments returning the exit status).
"""

from __future__ import annotations

#: modules of this package that contribute subcommands, in help order
COMMAND_MODULES: list[str] = ["data_shards", "embed", "serve"]

from .main import build_parser, main  # noqa: E402  (after COMMAND_MODULES, which main reads)

__all__ = ["COMMAND_MODULES", "build_parser", "main"]
