"""The unCLIP decoder P(x | z_i, y): a GLIDE UNet conditioned on CLIP image embeddings and text."""

from .model import Decoder, DecoderConfig, DecoderTextEncoder

__all__ = ["Decoder", "DecoderConfig", "DecoderTextEncoder"]
