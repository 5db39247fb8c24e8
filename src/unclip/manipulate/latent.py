"""The bipartite latent (z_i, x_T) of images, with one noise per level of the cascade (section 3).

An image is described by its CLIP image embedding z_i (what it shows) and the noise that
deterministic DDIM maps back to it (everything else). Level 0 is the decoder: x_T at the
decoder's side, inverted under the decoder conditioned on z_i. A model with upsampler
stages adds one level per stage: the noise that the stage's sampler, conditioned on the
level below, maps to the image at the stage's side (see :mod:`.invert`). A latent of the
decoder alone has no stage levels. The stages are inverted with EDICT by default
(:mod:`unclip.diffusion.edict`), which keeps two noises per stage, ``stage_noises`` and their
``stage_partners``; a DDIM-inverted stage has no partner.

One file format: a safetensors file holding ``image_embed``, ``noise``, ``stage_noise_<k>``
per stage (and ``stage_partner_<k>`` for EDICT), with the facts as JSON under the header
key ``unclip``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from ..diffusion.edict import DEFAULT_MIX
from ..errors import CheckpointError, InputError
from ..storage.checkpoint import save_tensors
from .latent_checks import check_latent_file

LATENT_FORMAT = "unclip-bipartite-latent"
LATENT_VERSION = 1
DEFAULT_STEPS = 50
DEFAULT_GUIDANCE = 1.0
# Fixed-point refinements per DDIM inversion step: on outside images 22.5 dB at 0, 42.3 dB at 2
# at the decoder's side, at twice the time (benchmarks/results/inversion_defaults.json).
DEFAULT_REFINE = 2
# The noisiest level the manipulations use: the largest timestep whose alpha-bar is at least
# this (t = 970 of 1000 under the cosine schedule). See :func:`.invert.manipulation_diffusion`.
MIN_ALPHA_BAR = 2e-3
STAGE_KEY = "stage_noise_{}"
PARTNER_KEY = "stage_partner_{}"
_AGAIN = "write the latent again with `unclip invert`"


@dataclass
class BipartiteLatent:
    """The bipartite latent of a batch of images (section 3), through the cascade.

    Attributes:
        image_embed: (B, E) CLIP image embeddings z_i as the model's CLIP gives them (unit norm for
            ours; unnormalised for Karlo's).
        noise: (B, 3, S, S) DDIM-inverted noise x_T at the decoder's side S (level 0).
        steps: DDIM steps of the decoder's inversion; decode with the same to reconstruct.
        guidance: classifier-free guidance scale of the inversion; decode with the same.
        captions: the decoder captions used, or None when the caption was dropped.
        model: the model the latent belongs to (a name or a path; informational).
        min_alpha_bar: the noise level every level's noise sits at.
        extra: other JSON-able facts (e.g. ``refine``, ``size``, ``condition``).
        stage_noises: one (B, 3, H_k, H_k) noise per upsampler stage in chain order (H_k the
            stage's output side); empty for a decoder-only latent.
        stage_steps: the DDIM steps each stage was inverted with (decode with the same).
        stage_low_res: the input side of each stage (the chain is checked on decoding).
        stage_partners: EDICT's second noise per stage, same shapes as ``stage_noises``
            (decoded together with ``stage_mix``), or empty when the stages were DDIM-inverted.
        stage_mix: EDICT's mixing weight the stages were inverted with.
    """

    image_embed: torch.Tensor
    noise: torch.Tensor
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    captions: list[str] | None = None
    model: str = ""
    min_alpha_bar: float = MIN_ALPHA_BAR
    extra: dict[str, Any] = field(default_factory=dict)
    stage_noises: list[torch.Tensor] = field(default_factory=list)
    stage_steps: list[int] = field(default_factory=list)
    stage_low_res: list[int] = field(default_factory=list)
    stage_partners: list[torch.Tensor] = field(default_factory=list)
    stage_mix: float = DEFAULT_MIX

    def __post_init__(self) -> None:
        z, x = self.image_embed, self.noise
        if z.dim() != 2 or x.dim() != 4 or z.shape[0] != x.shape[0]:
            raise InputError(
                "a BipartiteLatent needs image_embed (B, E) and noise (B, 3, S, S) with the same B, "
                f"got {tuple(z.shape)} and {tuple(x.shape)}"
            )
        if self.captions is not None and len(self.captions) != z.shape[0]:
            raise InputError(f"a BipartiteLatent of batch {z.shape[0]} got {len(self.captions)} captions")
        n = len(self.stage_noises)
        if len(self.stage_steps) != n or len(self.stage_low_res) != n:
            raise InputError(
                f"a BipartiteLatent needs one steps and one low_res entry per stage noise, got {n} noises, "
                f"{len(self.stage_steps)} steps, {len(self.stage_low_res)} low_res"
            )
        b, side = x.shape[0], x.shape[-1]
        for k, (s, low) in enumerate(zip(self.stage_noises, self.stage_low_res)):
            if s.dim() != 4 or s.shape[0] != b or s.shape[1] != 3 or s.shape[-2] != s.shape[-1]:
                raise InputError(f"stage {k} noise must be (B={b}, 3, H, H), got {tuple(s.shape)}")
            if int(low) != side:
                raise InputError(
                    f"stage {k} takes {low} px inputs but the level below is {side} px; the stages must form a chain"
                )
            side = s.shape[-1]
        if self.stage_partners and [p.shape for p in self.stage_partners] != [s.shape for s in self.stage_noises]:
            raise InputError(
                f"EDICT stage partners {[tuple(p.shape) for p in self.stage_partners]} must match the stage noises "
                f"{[tuple(s.shape) for s in self.stage_noises]}"
            )

    @property
    def stage_inversion(self) -> str:
        """How the stages were inverted: ``"edict"`` (noise pairs), ``"ddim"``, or ``"none"`` without stages."""
        if not self.stage_noises:
            return "none"
        return "edict" if self.stage_partners else "ddim"

    def __len__(self) -> int:
        return self.image_embed.shape[0]

    @property
    def size(self) -> int:
        """The side the latent reconstructs at: the last stage's output (the decoder's without stages)."""
        return int(self.stage_noises[-1].shape[-1]) if self.stage_noises else int(self.noise.shape[-1])

    def _with(self, image_embed: torch.Tensor, noise: torch.Tensor, captions, each) -> "BipartiteLatent":
        """A copy with new tensors; ``each`` maps every stage tensor (noise or partner) to its new value."""
        return replace(
            self, image_embed=image_embed, noise=noise, captions=captions, extra=dict(self.extra),
            stage_noises=[each(s) for s in self.stage_noises], stage_steps=list(self.stage_steps),
            stage_low_res=list(self.stage_low_res), stage_partners=[each(p) for p in self.stage_partners],
        )  # fmt: skip

    def __getitem__(self, index: int | slice) -> "BipartiteLatent":
        """The latent of image(s) ``index`` (batch dimension kept)."""
        sl = index if isinstance(index, slice) else slice(index, index + 1 if index != -1 else None)
        caps = None if self.captions is None else self.captions[sl]
        return self._with(self.image_embed[sl], self.noise[sl], caps, lambda s: s[sl])

    def repeat_each(self, n: int) -> "BipartiteLatent":
        """Each image's latent ``n`` times in a row: batch B -> B * n."""
        rep = lambda t: t.repeat_interleave(int(n), dim=0)  # noqa: E731
        caps = None if self.captions is None else [c for c in self.captions for _ in range(int(n))]
        return self._with(rep(self.image_embed), rep(self.noise), caps, rep)

    def decoder_level(self) -> "BipartiteLatent":
        """The latent without its upsampler levels (z_i and the decoder's x_T)."""
        return replace(
            self, extra=dict(self.extra), stage_noises=[], stage_steps=[], stage_low_res=[], stage_partners=[]
        )

    def to(self, device: str | torch.device) -> "BipartiteLatent":
        caps = None if self.captions is None else list(self.captions)
        return self._with(self.image_embed.to(device), self.noise.to(device), caps, lambda s: s.to(device))

    @staticmethod
    def cat(latents: Sequence["BipartiteLatent"]) -> "BipartiteLatent":
        """One batch from decoder-level latents decoded alike (same steps, guidance, noise level, captions kind)."""
        if not latents:
            raise InputError("BipartiteLatent.cat needs at least one latent")
        first = latents[0]
        for lat in latents:
            if lat.stage_noises:
                raise InputError("BipartiteLatent.cat joins decoder-level latents only; use decoder_level() first")
            if (lat.steps, lat.guidance, lat.min_alpha_bar) != (first.steps, first.guidance, first.min_alpha_bar):
                raise InputError("BipartiteLatent.cat needs latents with the same steps, guidance and min_alpha_bar")
            if (lat.captions is None) != (first.captions is None):
                raise InputError("BipartiteLatent.cat cannot join latents with and without captions")
        caps = None if first.captions is None else [c for lat in latents for c in lat.captions]
        z = torch.cat([lat.image_embed for lat in latents])
        x = torch.cat([lat.noise for lat in latents])
        return replace(first, image_embed=z, noise=x, captions=caps, extra=dict(first.extra))

    def metadata(self) -> dict[str, Any]:
        """The JSON-able facts stored next to the tensors."""
        meta = {
            "format": LATENT_FORMAT, "version": LATENT_VERSION, "model": self.model, "steps": self.steps,
            "guidance": self.guidance, "captions": self.captions, "min_alpha_bar": self.min_alpha_bar,
            "extra": self.extra,
        }  # fmt: skip
        if self.stage_noises:
            high = [int(s.shape[-1]) for s in self.stage_noises]
            meta["cascade"] = {
                "steps": list(self.stage_steps), "low_res": list(self.stage_low_res), "high_res": high,
                "inversion": self.stage_inversion,
            }  # fmt: skip
            if self.stage_partners:
                meta["cascade"]["mix"] = self.stage_mix
        return meta

    def save(self, path: str | os.PathLike) -> Path:
        """Write one safetensors file (``image_embed``, ``noise``, ``stage_noise_<k>``, ``stage_partner_<k>``)
        with the metadata as JSON."""
        path = Path(path)
        tensors = {"image_embed": self.image_embed.float(), "noise": self.noise.float()}
        tensors.update({STAGE_KEY.format(k): s.float() for k, s in enumerate(self.stage_noises)})
        tensors.update({PARTNER_KEY.format(k): p.float() for k, p in enumerate(self.stage_partners)})
        save_tensors(path, tensors, metadata={"unclip": json.dumps(self.metadata())})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BipartiteLatent":
        """Read a file written by :meth:`save` (never pickle); errors name the file."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(
                f"bipartite latent file not found: {path}; write one with `unclip invert IMAGE --out FILE`"
            )
        try:
            with safe_open(str(path), framework="pt") as f:
                meta_text = (f.metadata() or {}).get("unclip")
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # safetensors raises several types for corrupt files
            raise CheckpointError(f"could not read {path} as safetensors ({exc})") from exc
        if meta_text is None or not {"image_embed", "noise"} <= set(tensors):
            raise CheckpointError(
                f"{path} is not a bipartite latent (no 'unclip' metadata or missing tensors); write one with `unclip "
                "invert`"
            )
        try:
            meta = json.loads(meta_text)
        except ValueError as exc:
            raise CheckpointError(f"{path}: its 'unclip' metadata is not JSON ({exc}); {_AGAIN}") from exc
        if not isinstance(meta, dict):
            raise CheckpointError(f"{path}: its 'unclip' metadata is not a JSON object; {_AGAIN}")
        if meta.get("format") != LATENT_FORMAT or meta.get("version") != LATENT_VERSION:
            raise CheckpointError(
                f"{path}: expected format '{LATENT_FORMAT}' version {LATENT_VERSION}, "
                f"found {meta.get('format')!r} version {meta.get('version')!r}"
            )
        check_latent_file(path, meta, tensors)
        tensors = {k: v.float() for k, v in tensors.items()}  # checked floating point above: float16/64 -> float32
        info = meta.get("cascade") or {}
        steps, lows = list(info.get("steps", [])), list(info.get("low_res", []))
        names = [STAGE_KEY.format(k) for k in range(len(steps))]
        partners = [PARTNER_KEY.format(k) for k in range(len(steps))] if info.get("inversion") == "edict" else []
        if len(lows) != len(steps) or not set(names + partners) <= set(tensors):
            raise CheckpointError(
                f"{path}: its cascade metadata lists {len(steps)} stages but the file lacks some of the tensors "
                f"{names + partners} (or their low_res entries); invert the image again with `unclip invert --size`"
            )
        try:
            return cls(
                tensors["image_embed"], tensors["noise"], int(meta["steps"]), float(meta["guidance"]),
                meta.get("captions"), meta.get("model", ""), float(meta.get("min_alpha_bar", MIN_ALPHA_BAR)),
                meta.get("extra") or {}, [tensors[n] for n in names], [int(s) for s in steps], [int(s) for s in lows],
                [tensors[n] for n in partners], float(info.get("mix", DEFAULT_MIX)),
            )  # fmt: skip
        except InputError as exc:
            raise CheckpointError(
                f"{path}: inconsistent latent ({exc}); invert the image again with `unclip invert`"
            ) from exc
