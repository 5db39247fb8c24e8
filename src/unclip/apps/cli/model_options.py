"""Command-line options shared by the commands that load a model (not a command group itself).

``--image-encoder-from`` completes a diffusers unCLIP directory (Kakao Brain's Karlo,
docs/karlo.md) that has no CLIP image encoder: the text-to-image download
``kakaobrain/karlo-v1-alpha`` brings the prior, the image-variations download
``kakaobrain/karlo-v1-alpha-image-variations`` the image encoder that inversion, variations,
interpolations, text diffs and PCA probing need.
"""

from __future__ import annotations

import argparse
from typing import Any

IMAGE_ENCODER_HELP = (
    "diffusers unCLIP models only: take the CLIP image encoder from this directory, e.g. a download of "
    "kakaobrain/karlo-v1-alpha-image-variations when --model is kakaobrain/karlo-v1-alpha (see docs/karlo.md)"
)


def add_image_encoder_from(p: argparse.ArgumentParser) -> None:
    """Add ``--image-encoder-from DIR`` to a parser that has ``--model``."""
    p.add_argument("--image-encoder-from", default=None, metavar="DIR", help=IMAGE_ENCODER_HELP)


def load_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for ``UnCLIP.load`` from the parsed options (empty when not given)."""
    source = getattr(args, "image_encoder_from", None)
    return {"image_encoder_from": source} if source else {}
