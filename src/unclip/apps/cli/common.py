"""Options shared by several commands: the model, the device, the output side, precision, sampler."""

from __future__ import annotations

import argparse

from . import args as A

DATA_HELP = "dataset: 'shapes' (built in), 'emoji' (needs fonts), or a folder of images with same-named .txt captions"


def add_model(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--model",
        default=None if required else "shapes",
        required=required,
        help="a shipped model name ('shapes') or a model directory written by `unclip train all` (default: shapes)",
    )


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", type=A.device, help="torch device, e.g. cpu or cuda (default: cpu)")


PRIOR_CHOICES = ["diffusion", "ar", "text-embed", "none"]
PRIOR_HELP = (
    "conditioning: diffusion prior z_i (default), the autoregressive prior's z_i, the text embedding as z_i, or "
    "caption only (the paper's Figure 8 modes)"
)


def add_size(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--size",
        type=A.SIZE,
        default=None,
        help=(
            "output side in pixels: the decoder's or a larger one reached by the model's upsampler stages, e.g. 128 "
            "or 512 (default: the model's default side, model.json 'defaults.size'; eval: the decoder's side)"
        ),
    )


def add_precision(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--precision",
        default=None,
        choices=["fp32", "bf16", "auto"],
        help=(
            "network arithmetic: fp32, bf16 autocast (fp32 weights, norms and diffusion maths), or auto: bf16 where "
            "the CPU/GPU runs it natively (default: sampling, the model's model.json precision, auto for the shipped "
            "model; training, the preset's)"
        ),
    )


def add_sampler(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sampler",
        default=None,
        choices=["ddim", "dpmpp2m"],
        help="sampler of the prior, decoder and upsamplers: DDIM or DPM-Solver++(2M) (default: the model's, ddim)",
    )
