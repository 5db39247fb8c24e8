"""Our own small CLIP (Radford et al. 2021): tokenizer, model, contrastive loss, frozen wrapper.

unCLIP (Ramesh et al. 2022) builds on a frozen CLIP: its text embedding z_t feeds the
prior, its image embedding z_i the decoder. :class:`FrozenCLIP` is the interface the rest
of the package uses; :func:`unclip.clip.pretrained.load_pretrained_clip` (optional, needs
``transformers`` or ``open_clip_torch``) wraps real pretrained weights in the same interface.
"""

from .frozen import FrozenCLIP, TextEncoding, load_clip, save_clip
from .loss import caption_ids_from_tokens, contrastive_loss
from .model import CLIP, CLIPConfig
from .tokenizer import Tokenizer
from .zeroshot import retrieval_report, zero_shot_accuracy, zero_shot_predict, zero_shot_scores

__all__ = [
    "CLIP",
    "CLIPConfig",
    "FrozenCLIP",
    "TextEncoding",
    "Tokenizer",
    "caption_ids_from_tokens",
    "contrastive_loss",
    "load_clip",
    "retrieval_report",
    "save_clip",
    "zero_shot_accuracy",
    "zero_shot_predict",
    "zero_shot_scores",
]
