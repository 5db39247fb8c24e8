"""Request bodies of the JSON API and their checks, shared with the UI.

Each body is a strict pydantic model (unknown fields and wrong JSON types are refused, no
silent coercion of ``"3"`` to 3); :func:`parse_body` turns a validation error into a
:class:`~unclip.apps.serve.limits.RequestError` naming the field. The ``*_params``
functions then check the values against the server's :class:`Limits` and the chosen model
(its conditioning modes, output sizes, CLIP context), decode uploaded images, and return
the keyword arguments of the matching runner in :mod:`unclip.apps.serve.jobs`. All of
this happens before a job is queued, so a refused request costs no model time.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ...manipulate import DEFAULT_GUIDANCE, DEFAULT_STEPS, NOISE_PATHS
from ...pipeline import PRIOR_MODES
from .limits import (
    MAX_SEED,
    Limits,
    RequestError,
    check_choice,
    check_float,
    check_int,
    check_steps,
    check_text,
    decode_image,
)
from .registry import ServedModel


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = None


class GenerateRequest(_Body):
    prompts: list[str]
    num_images: int = 1
    seed: int = 0
    prior: str = "diffusion"
    size: int | None = None
    steps: int | None = None
    prior_steps: int | None = None
    decoder_guidance: float | None = None
    prior_guidance: float | None = None


class _Manipulation(_Body):
    steps: int | None = None
    guidance: float = DEFAULT_GUIDANCE


class InvertRequest(_Manipulation):
    image: str


class VaryRequest(_Manipulation):
    image: str
    eta: float = 1.0
    num_images: int = 4
    seed: int = 0
    size: int | None = None
    return_latent: bool = False


class InterpolateRequest(_Manipulation):
    image_a: str
    image_b: str
    frames: int = 8
    noise: str = "slerp"
    seed: int = 0
    size: int | None = None
    return_latent: bool = False


class TextDiffRequest(_Manipulation):
    image: str
    from_text: str = ""
    to_text: str
    max_theta: float = 0.5
    frames: int = 5
    size: int | None = None
    return_latent: bool = False


REQUESTS: dict[str, type[_Body]] = {
    "generate": GenerateRequest,
    "vary": VaryRequest,
    "interpolate": InterpolateRequest,
    "textdiff": TextDiffRequest,
    "invert": InvertRequest,
}


def _field(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def parse_body(kind: str, raw: bytes | str) -> _Body:
    """JSON text -> the request model of ``kind``, or a 400 naming the first field at fault."""
    try:
        return REQUESTS[kind].model_validate_json(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        more = f" (and {exc.error_count() - 1} more errors)" if exc.error_count() > 1 else ""
        raise RequestError(_field(tuple(err.get("loc", ()))), f"{err.get('msg', 'invalid value')}{more}") from None


# ----------------------------------------------------------------------------- shared checks


def _size(served: ServedModel, size: int | None) -> int | None:
    if size is not None and size not in served.sizes:
        raise RequestError(
            "size",
            f"model '{served.name}' cannot produce {size} px images; "
            f"available sizes: {', '.join(map(str, served.sizes))}",
        )
    return size


def _seed(seed: int) -> int:
    return check_int("seed", seed, 0, MAX_SEED)


def _guidance(field: str, value: float | None, limits: Limits) -> float | None:
    return None if value is None else check_float(field, value, 0.0, limits.max_guidance)


def _manip_common(req: _Manipulation, served: ServedModel, limits: Limits) -> dict[str, Any]:
    return {
        "steps": check_steps("steps", req.steps, DEFAULT_STEPS, limits, served.manipulation_timesteps),
        "guidance": _guidance("guidance", req.guidance, limits),
    }


def _or(value: float | None, default: float) -> float:
    return float(default) if value is None else value


def _capped(req: _Body, name: str, limit: int) -> int:
    """A count field's value; when the client left it out, its default capped at the server's limit."""
    value = getattr(req, name)
    return value if name in req.model_fields_set else min(value, limit)


def _frames(req: _Body, limits: Limits) -> int:
    return check_int(
        "frames", _capped(req, "frames", limits.max_frames), 2, limits.max_frames, " (the server's --max-frames)"
    )


# ----------------------------------------------------------------------------- per job


def generate_params(req: GenerateRequest, served: ServedModel, limits: Limits) -> dict[str, Any]:
    """Checked keyword arguments of :func:`~unclip.apps.serve.jobs.run_generate`."""
    if not req.prompts:
        raise RequestError("prompts", "must hold at least one prompt")
    if len(req.prompts) > limits.max_prompts:
        raise RequestError("prompts", f"holds {len(req.prompts)} prompts; the limit is {limits.max_prompts}")
    prompts = [
        check_text(f"prompts[{k}]", p, limits, served.context_length, served.word_count)
        for k, p in enumerate(req.prompts)
    ]
    num = check_int("num_images", req.num_images, 1, limits.max_images)
    if num * len(prompts) > limits.max_images:
        raise RequestError(
            "num_images",
            f"{len(prompts)} prompts x {num} images = {num * len(prompts)} images; "
            f"the limit per request is {limits.max_images}",
        )
    prior = check_choice("prior", req.prior, PRIOR_MODES)
    if prior not in served.priors:
        raise RequestError(
            "prior", f"model '{served.name}' cannot run prior mode '{prior}'; it runs {', '.join(served.priors)}"
        )
    d = served.pipe.defaults
    return {
        "prompts": prompts,
        "num_images": num,
        "seed": _seed(req.seed),
        "prior": prior,
        "size": _size(served, req.size),
        "steps": check_steps("steps", req.steps, d.decoder_steps, limits, served.decoder_timesteps),
        "prior_steps": check_steps("prior_steps", req.prior_steps, d.prior_steps, limits, served.prior_timesteps),
        "decoder_guidance": _guidance("decoder_guidance", _or(req.decoder_guidance, d.decoder_guidance), limits),
        "prior_guidance": _guidance("prior_guidance", _or(req.prior_guidance, d.prior_guidance), limits),
    }


def invert_params(req: InvertRequest, served: ServedModel, limits: Limits) -> dict[str, Any]:
    """Checked keyword arguments of :func:`~unclip.apps.serve.jobs.run_invert`."""
    common = _manip_common(req, served, limits)
    return {**common, "image": decode_image("image", req.image, limits)}


def vary_params(req: VaryRequest, served: ServedModel, limits: Limits) -> dict[str, Any]:
    """Checked keyword arguments of :func:`~unclip.apps.serve.jobs.run_vary`."""
    out = {
        **_manip_common(req, served, limits),
        "eta": check_float("eta", req.eta, 0.0, limits.max_eta),
        "num_images": check_int("num_images", _capped(req, "num_images", limits.max_images), 1, limits.max_images),
        "seed": _seed(req.seed),
        "size": _size(served, req.size),
    }
    return {**out, "image": decode_image("image", req.image, limits)}


def interpolate_params(req: InterpolateRequest, served: ServedModel, limits: Limits) -> dict[str, Any]:
    """Checked keyword arguments of :func:`~unclip.apps.serve.jobs.run_interpolate`."""
    out = {
        **_manip_common(req, served, limits),
        "frames": _frames(req, limits),
        "noise": check_choice("noise", req.noise, NOISE_PATHS),
        "seed": _seed(req.seed),
        "size": _size(served, req.size),
    }
    return {
        **out,
        "image_a": decode_image("image_a", req.image_a, limits),
        "image_b": decode_image("image_b", req.image_b, limits),
    }


def textdiff_params(req: TextDiffRequest, served: ServedModel, limits: Limits) -> dict[str, Any]:
    """Checked keyword arguments of :func:`~unclip.apps.serve.jobs.run_textdiff`."""
    texts = {
        "from_text": check_text(
            "from_text", req.from_text, limits, served.context_length, served.word_count, allow_empty=True
        ),
        "to_text": check_text("to_text", req.to_text, limits, served.context_length, served.word_count),
    }
    out = {
        **_manip_common(req, served, limits),
        **texts,
        "max_theta": check_float("max_theta", req.max_theta, 0.0, 1.0),
        "frames": _frames(req, limits),
        "size": _size(served, req.size),
    }
    return {**out, "image": decode_image("image", req.image, limits)}


PARAMS = {
    "generate": generate_params,
    "vary": vary_params,
    "interpolate": interpolate_params,
    "textdiff": textdiff_params,
    "invert": invert_params,
}
