"""DDIM inversion through the whole cascade: decoder plus diffusion upsamplers (unCLIP sections 2.1 and 3).

:func:`unclip.manipulate.invert` gives the bipartite latent (z_i, x_T) of an image at the
decoder's side. A model with upsampler stages (e.g. 32 -> 128) produces larger images, and
each stage starts from noise of its own; an image at the larger side is reconstructed only
if that noise too is the image's own. :func:`invert_cascade` therefore extends the latent:

1. the input is centre-cropped and resized to ``size`` (the top of the chain) and, from
   that, resized with antialiasing to every lower side of the chain (so the levels form one
   consistent pyramid);
2. the decoder is inverted at its side exactly as :func:`~unclip.manipulate.invert` does
   (z_i, x_T);
3. every upsampler stage is DDIM-inverted on the input at its own side, conditioned on an
   image one level down, which gives that stage's noise.

:func:`reconstruct_cascade` runs the chain forwards: decode (z_i, x_T) with DDIM, then each
stage from its inverted noise conditioned on the image the level below *decoded*, as
generation does. At eta 0 this retraces the inversions.

Which image conditions a stage's inversion (``condition=``):

* ``"decoded"`` (default): the eta-0 reconstruction of the level below, i.e. exactly what
  the stage will be conditioned on when the latent is decoded. Inversion and decoding then
  use the same model function, so the stage's round trip is as exact as its own DDIM
  inversion, whatever error the level below made; the stage's noise even absorbs that error
  (measured on the tiny model: the top level beats the decoder level by 1-3 dB). Costs one
  extra eta-0 decode per level.
* ``"input"``: the input resized to the side below. Simpler, but decoding then conditions
  on the decoded image instead, and the mismatch in the eps the stage predicts is amplified
  by 1/sqrt(alpha-bar) ~ 22 at the top noise level (see below): measured 6-8 dB worse on
  the tiny model (20-22 dB vs 27-28 dB at 64 px, refine 2).

Schedules. The upsamplers sample with no guidance (unCLIP section 2.1), so their model
function is just the network bound to its low-resolution image, the same for inversion and
decoding. :func:`unclip.upsampler.cascade.upsample` respaces the stage's schedule over all
timesteps, up to alpha-bar ~ 2e-9 under the cosine schedule, and clips x0 estimates to
[-1, 1]; neither can be inverted (see :mod:`unclip.manipulate`, "Noise levels"). The stages
here instead run over :func:`~unclip.manipulate.manipulation_diffusion` (evenly spaced
timesteps up to the last with alpha-bar >= ``min_alpha_bar``) without clipping, in both
directions. Each stage's noise therefore still carries ~4.5 % of the image's amplitude, as
the decoder's x_T does, and is not a sample of N(0, I): feed it to this module, not to
:meth:`UnCLIP.upsample_to`.

Where it is inexact. The decoder level is inexact as documented in :mod:`unclip.manipulate`
(shrinks with ``steps`` and ``refine``). Each stage's own DDIM inversion is inexact in the
same way (the eps used going up is taken one step early; ``refine`` fixes most of it), and
with ``condition="input"`` the error of the level below adds to it, amplified. Variations
(eta > 0) and edits of z_i change the image below a stage, so its noise, fitted to the
reconstruction, no longer reproduces the input's detail exactly.

The latent is a :class:`CascadeLatent`, a :class:`~unclip.manipulate.BipartiteLatent` with
the per-stage noises. Its file is an ordinary bipartite-latent file (same format and
version) with one extra tensor ``stage_noise_<k>`` per stage and the stages' sides and
steps in the metadata: :meth:`BipartiteLatent.load` reads it as the decoder-level latent
(so ``unclip vary`` and friends accept it), and :meth:`CascadeLatent.load` reads old files as
a latent with no stages.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from .checkpoint import save_tensors
from .diffusion import bind, ddim_invert, ddim_sample
from .errors import CheckpointError, InputError
from .manipulate import DEFAULT_GUIDANCE, DEFAULT_STEPS, MIN_ALPHA_BAR, BipartiteLatent, ImageInput, as_image_tensor, decode_latent, invert, manipulation_diffusion
from .upsampler.cascade import steps_per_stage

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline import UnCLIP
    from .upsampler.cascade import CascadeStage

STAGE_KEY = "stage_noise_{}"
CONDITIONS = ("input", "decoded")

__all__ = ["CascadeLatent", "stage_chain", "invert_cascade", "reconstruct_cascade", "load_latent"]


# ----------------------------------------------------------------------------- latent


@dataclass
class CascadeLatent(BipartiteLatent):
    """A bipartite latent extended through the upsampler stages.

    Attributes (besides :class:`~unclip.manipulate.BipartiteLatent`'s):
        stage_noises: one (B, 3, H_k, H_k) DDIM-inverted noise per upsampler stage, in chain
            order (H_k the stage's output side); empty for a decoder-only latent.
        stage_steps: the DDIM steps each stage was inverted with (decode with the same).
        stage_low_res: the input side of each stage (the chain is checked on decoding).
    """

    stage_noises: list[torch.Tensor] = field(default_factory=list)
    stage_steps: list[int] = field(default_factory=list)
    stage_low_res: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        n = len(self.stage_noises)
        if len(self.stage_steps) != n or len(self.stage_low_res) != n:
            raise InputError(f"a CascadeLatent needs one steps and one low_res entry per stage noise, got {n} noises, {len(self.stage_steps)} steps, {len(self.stage_low_res)} low_res")
        b, side = self.noise.shape[0], self.noise.shape[-1]
        for k, (z, low) in enumerate(zip(self.stage_noises, self.stage_low_res)):
            if z.dim() != 4 or z.shape[0] != b or z.shape[1] != 3 or z.shape[-2] != z.shape[-1]:
                raise InputError(f"stage {k} noise must be (B={b}, 3, H, H), got {tuple(z.shape)}")
            if int(low) != side:
                raise InputError(f"stage {k} takes {low} px inputs but the level below is {side} px; the stages must form a chain")
            side = z.shape[-1]

    @property
    def size(self) -> int:
        """The side the latent reconstructs at: the last stage's output (the decoder's without stages)."""
        return int(self.stage_noises[-1].shape[-1]) if self.stage_noises else int(self.noise.shape[-1])

    @classmethod
    def from_bipartite(cls, latent: BipartiteLatent, stage_noises: Sequence[torch.Tensor] = (), stage_steps: Sequence[int] = (), stage_low_res: Sequence[int] = ()) -> "CascadeLatent":
        """``latent`` with the given stages (none: a decoder-only cascade latent)."""
        return cls(latent.image_embed, latent.noise, latent.steps, latent.guidance, latent.captions, latent.model, latent.min_alpha_bar, dict(latent.extra), list(stage_noises), [int(s) for s in stage_steps], [int(s) for s in stage_low_res])

    def bipartite(self) -> BipartiteLatent:
        """The decoder-level latent alone."""
        return BipartiteLatent(self.image_embed, self.noise, self.steps, self.guidance, self.captions, self.model, self.min_alpha_bar, dict(self.extra))

    def __getitem__(self, index: int | slice) -> "CascadeLatent":
        sl = index if isinstance(index, slice) else slice(index, index + 1 if index != -1 else None)
        return CascadeLatent.from_bipartite(self.bipartite()[index], [z[sl] for z in self.stage_noises], self.stage_steps, self.stage_low_res)

    def to(self, device: str | torch.device) -> "CascadeLatent":
        return CascadeLatent.from_bipartite(self.bipartite().to(device), [z.to(device) for z in self.stage_noises], self.stage_steps, self.stage_low_res)

    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        meta["cascade"] = {"steps": list(self.stage_steps), "low_res": list(self.stage_low_res), "high_res": [int(z.shape[-1]) for z in self.stage_noises]}
        return meta

    def save(self, path: str | os.PathLike) -> Path:
        """One safetensors file: ``image_embed``, ``noise`` and ``stage_noise_<k>``, metadata as JSON in the header."""
        path = Path(path)
        tensors = {"image_embed": self.image_embed.float(), "noise": self.noise.float()}
        tensors.update({STAGE_KEY.format(k): z.float() for k, z in enumerate(self.stage_noises)})
        save_tensors(path, tensors, metadata={"unclip": json.dumps(self.metadata())})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CascadeLatent":
        """Read a cascade latent, or an older decoder-only latent file (then with no stages)."""
        from safetensors import safe_open

        base = BipartiteLatent.load(path)  # checks the file, format and version; names the file in errors
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["unclip"])
            keys = set(f.keys())
            info = meta.get("cascade") or {}
            steps, lows = list(info.get("steps", [])), list(info.get("low_res", []))
            names = [STAGE_KEY.format(k) for k in range(len(steps))]
            if len(lows) != len(steps) or not set(names) <= keys:
                raise CheckpointError(f"{path}: its cascade metadata lists {len(steps)} stages but the file lacks some of the tensors {names} (or their low_res entries); invert the image again with `unclip invert --size`")
            noises = [f.get_tensor(n) for n in names]
        try:
            return cls.from_bipartite(base, noises, steps, lows)
        except InputError as exc:
            raise CheckpointError(f"{path}: inconsistent cascade latent ({exc}); invert the image again with `unclip invert --size`") from exc


def load_latent(path: str | os.PathLike) -> BipartiteLatent:
    """A latent file as :class:`CascadeLatent` when it holds upsampler stages, else as :class:`BipartiteLatent`."""
    lat = CascadeLatent.load(path)
    return lat if lat.stage_noises else lat.bipartite()


# ----------------------------------------------------------------------------- the chain


def stage_chain(pipe: "UnCLIP", size: int | None) -> list["CascadeStage"]:
    """The upsampler stages that take the decoder's output to ``size`` (None: the model's default), in order."""
    return pipe.stage_chain(size)


def _stage_fn(stage: "CascadeStage", low_res: torch.Tensor):
    """The stage's network bound to its conditioning image: no caption, no guidance (section 2.1)."""
    return bind(stage.model, low_res=low_res.clamp(-1, 1))


# ----------------------------------------------------------------------------- inversion and reconstruction


@torch.no_grad()
def invert_cascade(
    pipe: "UnCLIP",
    images: ImageInput,
    size: int | None = None,
    *,
    steps: int = DEFAULT_STEPS,
    upsampler_steps: int | Sequence[int | None] | None = None,
    guidance: float = DEFAULT_GUIDANCE,
    refine: int = 0,
    captions: list[str] | None = None,
    min_alpha_bar: float = MIN_ALPHA_BAR,
    condition: str = "decoded",
    progress: bool = False,
) -> CascadeLatent:
    """Invert images through the decoder and every upsampler stage up to ``size``.

    Args:
        pipe: a loaded :class:`~unclip.pipeline.UnCLIP` with the needed upsampler stages.
        images: PIL image(s) (centre-cropped) or a square tensor (B, 3, H, W) in [-1, 1].
        size: the top side (None: the model's default size); the decoder's side gives a
            latent with no stages.
        steps, guidance, refine, captions, min_alpha_bar: of the decoder's inversion, as in
            :func:`unclip.manipulate.invert`; ``refine`` and ``min_alpha_bar`` apply to the
            stages too.
        upsampler_steps: DDIM steps per stage: one int for all, one entry per stage (None
            entries take the stage's default), or None for every stage's default.
        condition: what conditions each stage's inversion: ``"decoded"``, the eta-0
            reconstruction of the level below (exact round trips), or ``"input"``, the
            resized input (see the module docstring).
    Returns:
        A :class:`CascadeLatent`: z_i (B, E), x_T (B, 3, S, S) and one (B, 3, H_k, H_k)
        noise per stage; ``extra`` records ``refine``, ``size`` and ``condition``.
    """
    if condition not in CONDITIONS:
        raise InputError(f"condition must be one of {', '.join(CONDITIONS)}, got {condition!r}")
    chain = stage_chain(pipe, size)
    per_steps = steps_per_stage(chain, upsampler_steps)
    top = chain[-1].high_res if chain else pipe.decoder.config.image_size
    x_top = as_image_tensor(images, top).to(pipe.device)
    levels = [as_image_tensor(x_top, pipe.decoder.config.image_size)] + [as_image_tensor(x_top, st.high_res) for st in chain]
    base = invert(pipe, levels[0], steps=steps, guidance=guidance, refine=refine, captions=captions, min_alpha_bar=min_alpha_bar, progress=progress)
    noises = []
    cond = levels[0]
    if condition == "decoded" and chain:
        cond = decode_latent(pipe, base.image_embed, base.noise, steps=steps, guidance=guidance, captions=captions, min_alpha_bar=min_alpha_bar, progress=progress)
    for k, (stage, n) in enumerate(zip(chain, per_steps)):
        diffusion = manipulation_diffusion(stage.settings.make(), n, min_alpha_bar)
        noise = ddim_invert(_stage_fn(stage, cond), diffusion, levels[k + 1], refine=refine, progress=progress)
        noises.append(noise)
        if condition == "decoded" and k + 1 < len(chain):  # the next stage's condition: this level as decoding will give it
            cond = ddim_sample(_stage_fn(stage, cond), diffusion, noise, progress=progress).clamp(-1, 1)
        else:
            cond = levels[k + 1]
    lat = CascadeLatent.from_bipartite(base, noises, per_steps, [st.low_res for st in chain])
    lat.extra.update(size=int(top), condition=condition)
    return lat


@torch.no_grad()
def reconstruct_cascade(
    pipe: "UnCLIP",
    latent: BipartiteLatent,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    return_levels: bool = False,
    progress: bool = False,
) -> torch.Tensor | list[torch.Tensor]:
    """Decode a (cascade) latent through the decoder and its stages: (B, 3, H, H) in [-1, 1].

    The decoder decodes (z_i, x_T) with the latent's steps and guidance; each stage then
    runs DDIM (same respacing as its inversion, no clipping) from its inverted noise,
    conditioned on the image decoded one level down. eta 0 gives the inverted images back;
    eta > 0 draws fresh noise from ``generator`` at every level. A plain
    :class:`BipartiteLatent` decodes at the decoder's side. ``return_levels`` returns the
    image of every level, smallest first, instead of the top one alone.
    """
    lat = latent if isinstance(latent, CascadeLatent) else CascadeLatent.from_bipartite(latent)
    lat = lat.to(pipe.device)
    chain = stage_chain(pipe, lat.size)
    if [st.low_res for st in chain] != lat.stage_low_res:
        raise InputError(f"the latent's stages take {lat.stage_low_res} px inputs but this model's chain to {lat.size} px takes {[st.low_res for st in chain]}; decode it with the model it was inverted with ({lat.model or 'unknown'})")
    x = decode_latent(pipe, lat.image_embed, lat.noise, steps=lat.steps, guidance=lat.guidance, eta=eta, generator=generator, captions=lat.captions, min_alpha_bar=lat.min_alpha_bar, progress=progress)
    levels = [x]
    for stage, noise, n in zip(chain, lat.stage_noises, lat.stage_steps):
        diffusion = manipulation_diffusion(stage.settings.make(), n, lat.min_alpha_bar)
        x = ddim_sample(_stage_fn(stage, x), diffusion, noise.float(), eta=eta, generator=generator, progress=progress).clamp(-1, 1)
        levels.append(x)
    return levels if return_levels else x
