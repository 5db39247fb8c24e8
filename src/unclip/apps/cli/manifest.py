"""The settings a command actually used, for its ``manifest.json`` (never ``None`` for "the default")."""

from __future__ import annotations

import argparse
from typing import Any

from ...upsampler.cascade import NOISE_START, starts_per_stage


def generate_settings(pipe: Any, args: argparse.Namespace) -> dict[str, Any]:
    """``unclip generate``'s settings with every default resolved from the model's ``model.json``."""
    d = pipe.defaults
    size = pipe.resolve_size(args.size)
    chain = pipe.stage_chain(size)
    upsampler_steps = [args.upsampler_steps or stage.steps for stage in chain]
    starts = starts_per_stage(chain, getattr(args, "upsampler_start", None))

    def pick(value: Any, default: Any) -> Any:
        return default if value is None else value

    return {
        "prior": args.prior,
        "decoder": args.decoder,
        "n": args.n,
        "seed": args.seed,
        "size": size,
        "prior_guidance": pick(args.prior_guidance, d.prior_guidance),
        "prior_steps": pick(args.prior_steps, d.prior_steps),
        "best_of": pick(args.best_of, d.best_of),
        "decoder_guidance": pick(args.decoder_guidance, d.decoder_guidance),
        "steps": pick(args.steps, d.decoder_steps),
        "eta": d.eta,
        "upsampler_steps": upsampler_steps,
        "upsampler_start": [NOISE_START if t0 is None else t0 for t0 in starts],
        "upsampler_back_projection": [stage.back_projection for stage in chain],
    }
