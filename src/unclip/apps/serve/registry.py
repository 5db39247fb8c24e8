"""The models a server was started with, each with its own worker pool.

Clients pick a model by the name it was served under; they never pass a path, so the
server only ever runs the models its operator named at start (``unclip serve --model``).
"""

from __future__ import annotations

import re
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ...errors import InputError
from ...manipulate import MIN_ALPHA_BAR
from .limits import RequestError
from .workers import WorkerPool

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class ServedModel:
    """One loaded pipeline (an :class:`unclip.UnCLIP`), its served name and its worker pool."""

    name: str
    pipe: Any
    pool: WorkerPool

    @property
    def priors(self) -> list[str]:
        """The conditioning modes this model can run (paper Figure 8), in the pipeline's names."""
        if not self.pipe.decoder.config.use_image_embed:
            return ["none"]  # the GLIDE-style text-only decoder ignores z_i
        modes = ["diffusion"] if self.pipe.prior is not None else []
        modes += ["ar"] if getattr(self.pipe, "ar_prior", None) is not None else []
        return modes + ["text-embed", "none"]

    @property
    def sizes(self) -> list[int]:
        """Output sides: the decoder's, then each upsampler stage's."""
        return list(self.pipe.output_sizes)

    @property
    def decoder_timesteps(self) -> int:
        """Most decoder sampling steps: its diffusion's timesteps."""
        return int(self.pipe.decoder_diffusion.num_timesteps)

    @property
    def prior_timesteps(self) -> int | None:
        """Most diffusion-prior sampling steps (None without a diffusion prior)."""
        prior = self.pipe.prior
        return None if prior is None else int(prior.config.num_timesteps)

    @property
    def manipulation_timesteps(self) -> int:
        """Most DDIM steps of inversion and manipulation: the timesteps up to the level the
        manipulations stop at (see :func:`unclip.manipulate.manipulation_diffusion`)."""
        above = (self.pipe.decoder_diffusion.alphas_cumprod >= MIN_ALPHA_BAR).nonzero().flatten()
        return int(above.max()) + 1 if above.numel() else self.decoder_timesteps

    @property
    def context_length(self) -> int:
        return int(self.pipe.clip.context_length)

    def word_count(self, text: str) -> int:
        """Tokens of ``text`` without the start and end tokens (what the CLIP context must hold)."""
        tokenizer = getattr(self.pipe.clip, "tokenizer", None)
        if tokenizer is not None and hasattr(tokenizer, "word_ids"):
            return len(tokenizer.word_ids(text))
        return len(text.split())

    def describe(self) -> dict[str, Any]:
        """What a client may ask of this model (GET /api/models)."""
        d = self.pipe.defaults
        return {
            "name": self.name,
            "priors": self.priors,
            "sizes": self.sizes,
            "default_size": self.pipe.resolve_size(None),
            "context_length": self.context_length,
            "max_decoder_steps": self.decoder_timesteps,
            "max_prior_steps": self.prior_timesteps,
            "max_manipulation_steps": self.manipulation_timesteps,
            "decoder_steps": d.decoder_steps,
            "prior_steps": d.prior_steps,
        }


class Registry:
    """Served models by name (the first is the default) and their pools."""

    def __init__(self, models: Mapping[str, Any], workers: int = 1, queue_size: int = 8) -> None:
        if not models:
            raise InputError("serve needs at least one model")
        bad = [n for n in models if not isinstance(n, str) or not NAME_RE.match(n)]
        if bad:
            raise InputError(
                f"model names must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit; got {bad}"
            )
        self.models = {
            name: ServedModel(name, pipe, WorkerPool(name, workers, queue_size)) for name, pipe in models.items()
        }
        self.default = next(iter(self.models))

    @property
    def names(self) -> list[str]:
        return list(self.models)

    def get(self, name: Any) -> ServedModel:
        """The model served as ``name`` (None: the default), else a 400 naming the field ``model``."""
        if name is None:
            return self.models[self.default]
        if not isinstance(name, str) or name not in self.models:
            raise RequestError("model", f"unknown model {name!r}; this server runs {', '.join(self.models)}")
        return self.models[name]

    def submit(self, model: ServedModel, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Queue ``fn`` on the model's pool (raises ``QueueFull`` / ``PoolClosed`` at once)."""
        return model.pool.submit(fn, *args, **kwargs)

    @property
    def closed(self) -> bool:
        return any(m.pool.closed for m in self.models.values())

    def close(self, timeout: float = 30.0) -> None:
        """Close every pool: queued jobs fail, running ones get up to ``timeout`` seconds to finish."""
        for m in self.models.values():
            m.pool.close(timeout)
