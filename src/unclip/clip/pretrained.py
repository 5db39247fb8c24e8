"""Real pretrained CLIP weights from local files, behind the FrozenCLIP interface (optional).

unCLIP was trained on top of OpenAI's CLIP (Ramesh et al. 2022, section 2). Users who
have such weights on disk can use them instead of our small CLIP; this module never
touches the network (``HF_HUB_OFFLINE=1``, ``local_files_only=True``) and needs an
optional library:

- a Hugging Face ``CLIPModel`` directory (``config.json`` + ``model.safetensors`` and the
  tokenizer files): ``pip install transformers``;
- an OpenCLIP state dict (``.safetensors``; ``.pt``/``.bin`` read with
  ``torch.load(weights_only=True)``) plus its architecture (``ViT-B-32`` or a config
  ``.json``), read into transformers' CLIPModel by :mod:`unclip.clip.openclip`: needs
  ``transformers``, and ``open_clip_torch`` installed (never imported; ``--no-deps``
  will do) only to find a config by name and the BPE vocabulary.

The returned adapter takes images in [-1, 1] of any size and applies the model's own
resize and normalisation, so callers need not know which CLIP they hold.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import CheckpointError, ConfigError, InputError, UnclipError
from .frozen import TextEncoding

# OpenAI CLIP's pixel statistics, the default of both libraries.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


class PretrainedCLIP:
    """Adapter base: batching, preprocessing and the FrozenCLIP methods.

    Subclasses provide ``tokenize``, ``_text(ids) -> (embed, hidden, mask)`` and
    ``_image(pixels) -> embed`` and set the size attributes.
    """

    embed_dim: int
    text_width: int
    context_length: int
    image_size: int

    def __init__(
        self,
        model: torch.nn.Module,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        batch_size: int = 64,
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "PretrainedCLIP":
        self.model.to(device=device, dtype=dtype)
        return self

    def tokenize(self, texts: str | Sequence[str]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _text(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def _image(self, pixels: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _ids(self, texts: str | Sequence[str] | torch.Tensor) -> torch.Tensor:
        ids = texts if isinstance(texts, torch.Tensor) else self.tokenize(texts)
        return ids.long().to(self.device)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images (B, 3, H, W) -> the model's input: shorter side resized (bicubic),
        centre-cropped to ``image_size``, normalised with the model's mean and std."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            raise InputError(
                "encode_image expects a (B, 3, H, W) tensor in [-1, 1], got "
                f"{getattr(images, 'shape', type(images).__name__)}"
            )
        s = self.image_size
        x = (images.float() + 1) / 2
        h, w = x.shape[-2:]
        if (h, w) != (s, s):
            scale = s / min(h, w)
            nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
            top, left = (nh - s) // 2, (nw - s) // 2
            x = x[..., top : top + s, left : left + s]
        return ((x - self.mean.to(x.device)) / self.std.to(x.device)).to(self.device, self.dtype)

    @torch.no_grad()
    def encode_text_full(self, texts: str | Sequence[str] | torch.Tensor) -> TextEncoding:
        """Captions -> TextEncoding(embed (B, E) unit-norm, tokens (B, L, W), mask (B, L)), float32."""
        ids = self._ids(texts)
        parts = [self._text(chunk) for chunk in ids.split(self.batch_size)] if len(ids) else []
        if not parts:
            return TextEncoding(
                torch.zeros(0, self.embed_dim),
                torch.zeros(0, ids.shape[1], self.text_width),
                torch.zeros(0, ids.shape[1], dtype=torch.bool),
            )
        e, h, m = zip(*parts)
        return TextEncoding(F.normalize(torch.cat(e).float(), dim=-1), torch.cat(h).float(), torch.cat(m))

    def encode_text(self, texts: str | Sequence[str] | torch.Tensor) -> torch.Tensor:
        """Captions -> (B, E) unit-norm float32 text embeddings."""
        return self.encode_text_full(texts).embed

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> (B, E) unit-norm float32 image embeddings."""
        parts = (
            [self._image(self.preprocess(chunk)).float() for chunk in images.split(self.batch_size)]
            if len(images)
            else []
        )
        return F.normalize(torch.cat(parts), dim=-1) if parts else torch.zeros(0, self.embed_dim)


class HFCLIP(PretrainedCLIP):
    """A ``transformers`` CLIPModel with its tokenizer (from a local directory, or converted from OpenCLIP)."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
    ) -> None:
        super().__init__(model.to(device), mean or CLIP_MEAN, std or CLIP_STD, batch_size)
        self.tokenizer = tokenizer
        self.embed_dim = model.config.projection_dim
        self.text_width = model.config.text_config.hidden_size
        self.context_length = model.config.text_config.max_position_embeddings
        self.image_size = model.config.vision_config.image_size
        self.eos_id = self.tokenizer.eos_token_id

    @classmethod
    def from_directory(cls, directory: Path, device: str | torch.device = "cpu", batch_size: int = 64) -> "HFCLIP":
        """Read ``config.json`` + ``model.safetensors`` + tokenizer files (+ ``preprocessor_config.json``)."""
        _offline()
        try:
            from transformers import AutoTokenizer, CLIPModel
        except ImportError as exc:
            raise UnclipError(
                f"loading the Hugging Face CLIP in {directory} needs the 'transformers' package: pip install "
                "transformers"
            ) from exc
        try:
            model = CLIPModel.from_pretrained(str(directory), local_files_only=True, use_safetensors=True)
        except Exception as exc:
            raise CheckpointError(
                f"could not load a CLIPModel from {directory} ({exc}); it needs config.json and model.safetensors"
            ) from exc
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        except Exception as exc:
            raise CheckpointError(
                f"no usable tokenizer files in {directory} ({exc}); copy the model's tokenizer files (vocab.json, "
                "merges.txt, tokenizer_config.json) there"
            ) from exc
        mean, std = CLIP_MEAN, CLIP_STD
        proc = directory / "preprocessor_config.json"
        if proc.is_file():
            cfg = json.loads(proc.read_text())
            mean, std = cfg.get("image_mean", mean), cfg.get("image_std", std)
        return cls(model, tokenizer, mean, std, device=device, batch_size=batch_size)

    @classmethod
    def from_openclip(
        cls, weights: Path, arch: str, device: str | torch.device = "cpu", batch_size: int = 64
    ) -> "HFCLIP":
        """OpenCLIP ``arch`` with ``weights``, read into transformers' CLIPModel (open_clip is never imported)."""
        _offline()
        try:
            import transformers  # noqa: F401
        except ImportError as exc:
            raise UnclipError(
                f"loading the OpenCLIP weights {weights} needs the 'transformers' package "
                "(they are read into its CLIPModel): pip install transformers"
            ) from exc
        from .openclip import load_openclip_as_hf

        model, tokenizer, pre = load_openclip_as_hf(weights, arch)
        return cls(model, tokenizer, pre["mean"], pre["std"], device=device, batch_size=batch_size)

    def tokenize(self, texts: str | Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        out = self.tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=self.context_length, return_tensors="pt"
        )
        return out["input_ids"]

    def _text(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Real tokens run up to and including the first EOS (the pad id may equal EOS).
        is_eos = (ids == self.eos_id).long()
        mask = (is_eos.cumsum(1) - is_eos) == 0
        out = self.model.text_model(input_ids=ids, attention_mask=mask.long())
        return self.model.text_projection(out.pooler_output), out.last_hidden_state, mask

    def _image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.visual_projection(self.model.vision_model(pixel_values=pixels).pooler_output)


OPENCLIP_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def load_pretrained_clip(
    path: str | os.PathLike, *, model_name: str | None = None, device: str | torch.device = "cpu", batch_size: int = 64
) -> PretrainedCLIP:
    """Load pretrained CLIP weights from local files (never the network).

    Args:
        path: a Hugging Face CLIPModel directory (``config.json`` + ``model.safetensors``
            + tokenizer files), or an OpenCLIP weights file (``.safetensors`` preferred;
            ``.pt``/``.bin`` are read with ``torch.load(weights_only=True)``).
        model_name: the OpenCLIP architecture: a name shipped with open_clip_torch
            (``"ViT-B-32"``) or the path of its config ``.json``; required for a file.
        device: where to put the model.
    Returns:
        an adapter with FrozenCLIP's ``tokenize``, ``encode_text``, ``encode_text_full``,
        ``encode_image``, ``embed_dim``, ``text_width``, ``context_length`` and ``image_size``.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(
                f"{path} is a directory without config.json; expected a Hugging Face CLIPModel directory"
            )
        return HFCLIP.from_directory(path, device=device, batch_size=batch_size)
    if path.is_file():
        if path.suffix not in OPENCLIP_SUFFIXES:
            raise CheckpointError(
                f"{path}: OpenCLIP weights must be .safetensors "
                "(or .pt/.pth/.bin, read with torch.load(weights_only=True))"
            )
        if not model_name:
            raise ConfigError(
                f"{path}: an OpenCLIP weights file needs its architecture name, e.g. model_name='ViT-B-32'"
            )
        return HFCLIP.from_openclip(path, model_name, device=device, batch_size=batch_size)
    raise CheckpointError(
        f"pretrained CLIP not found: {path} (pass a Hugging Face model directory or an OpenCLIP weights file)"
    )
