"""Command groups of the ``unclip`` command line.

Each module here registers its subcommands with ``register(subparsers)``; every parser it
adds sets ``handler`` (a function of the parsed arguments returning the exit status).
"""

from __future__ import annotations

#: modules of this package that contribute subcommands, in help order
COMMAND_MODULES: list[str] = ["serve"]
