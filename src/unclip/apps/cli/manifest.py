"""The settings a command actually used, for its ``manifest.json`` (never ``None`` for "the default")."""

from __future__ import annotations

import argparse
from typing import Any

from ...upsampler.cascade import NOISE_START, plan_stages


def generate_settings(pipe: Any, args: argparse.Namespace) -> dict[str, Any]:
    """``unclip generate``'s settings with every default resolved from the model's ``model.json``."""
    d = pipe.defaults
    size = pipe.resolve_size(args.size)
    chain = pipe.stage_chain(size)
    plan = plan_stages(chain, args.upsampler_steps, getattr(args, "upsampler_start", None))
    upsampler_steps = [n for n, _ in plan]
    starts = [t0 for _, t0 in plan]

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
