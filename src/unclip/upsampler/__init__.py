"""Diffusion upsamplers: conv-only UNets conditioned on a low-resolution image."""

from .model import Upsampler, UpsamplerConfig

__all__ = ["Upsampler", "UpsamplerConfig"]
