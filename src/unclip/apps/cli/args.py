"""Argument types of the ``unclip`` command line: every number has a stated finite range.

argparse calls a ``type=`` function on the raw string; raising ``argparse.ArgumentTypeError``
there makes argparse print ``usage: ...`` and ``error: argument --x: <message>`` and exit
with status 2, before any model is loaded. Each function here states its range in the
message, so ``--steps 0``, ``--eta inf`` or ``--seed 2**70`` are refused with the range to
use instead of being taken as "the default" or failing deep inside torch.

The limits are the ones the commands can honour on one machine; :data:`LIMITS` lists them
(docs/safety.md quotes it).
"""

from __future__ import annotations

import argparse
import math
from typing import Callable

#: the largest seed accepted: torch generators take 64-bit seeds; we keep one bit spare
SEED_MAX = 2**63 - 1

#: stated upper limits of the commands' counts and sizes (the lower limit is 1 unless said)
LIMITS = {
    "steps": 10_000,  # DDIM / prior sampling steps
    "images": 4_096,  # -n of generate/vary, images per prompt
    "frames": 1_024,  # --frames of interpolate/textdiff
    "size": 4_096,  # image side in pixels
    "train_steps": 10_000_000,  # --steps of unclip train
    "batch_size": 65_536,
    "threads": 1_024,
    "refine": 100,
    "best_of": 1_024,
    "fit_n": 1_000_000,
    "samples": 10_000_000,  # -n of unclip data
    "guidance": 1_000.0,  # |classifier-free guidance scale|
    "time_limit_s": 1e7,  # about 115 days
}


def _integer(text: str) -> int:
    text = str(text).strip()
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{_show(text)} is not a whole number") from None


def _show(text: str, limit: int = 40) -> str:
    """The user's text, quoted and shortened (a 10,000-character argument stays one line)."""
    text = str(text)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def int_range(low: int, high: int, what: str = "a whole number") -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]``."""

    def parse(text: str) -> int:
        value = _integer(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{_show(text)} is out of range; expected {what} from {low} to {high}")
        return value

    parse.__name__ = f"int in [{low}, {high}]"
    return parse


def positive_int(high: int, what: str = "a whole number") -> Callable[[str], int]:
    """An argparse type: an integer in ``[1, high]``."""
    return int_range(1, high, what)


def nonnegative_int(high: int, what: str = "a whole number") -> Callable[[str], int]:
    """An argparse type: an integer in ``[0, high]``."""
    return int_range(0, high, what)


def seed(text: str) -> int:
    """An argparse type: a seed in ``[0, 2**63)``."""
    value = _integer(text)
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"{_show(text)} is out of range; a seed is a whole number from 0 to 2**63 - 1")
    return value


def finite_float(low: float, high: float, *, low_open: bool = False, what: str = "a number") -> Callable[[str], float]:
    """An argparse type: a finite float in ``[low, high]`` (``(low, high]`` with ``low_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{_show(text)} is not a number") from None
        bracket = "(" if low_open else "["
        if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
            raise argparse.ArgumentTypeError(
                f"{_show(text)} is out of range; expected {what} in {bracket}{low:g}, {high:g}]"
            )
        return value

    parse.__name__ = f"float in {'(' if low_open else '['}{low:g}, {high:g}]"
    return parse


def device(text: str) -> str:
    """An argparse type: a torch device that exists here (``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""
    import torch

    text = str(text).strip()
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{_show(text)} is not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{_show(text)}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f"{_show(text)}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise argparse.ArgumentTypeError(f"{_show(text)}: MPS is not available on this machine; use --device cpu")
    elif dev.type != "cpu":
        raise argparse.ArgumentTypeError(f"{_show(text)} is not supported; use cpu, cuda or cuda:N")
    return text


def upsampler_start(text: str) -> int | str:
    """An argparse type: ``noise`` or a diffusion timestep, an int >= 0 (the stage checks it is below its T)."""
    text = str(text).strip()
    if text == "noise":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{_show(text)} is neither 'noise' nor a timestep (an integer)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give a timestep (0 is the least noisy) or 'noise'")
    return value


# The types the commands share, built once.
STEPS = positive_int(LIMITS["steps"], "a number of steps")
IMAGES = positive_int(LIMITS["images"], "a number of images")
FRAMES = int_range(2, LIMITS["frames"], "a number of frames")
SIZE = positive_int(LIMITS["size"], "an image side in pixels")
TRAIN_STEPS = positive_int(LIMITS["train_steps"], "a number of training steps")
BATCH_SIZE = positive_int(LIMITS["batch_size"], "a batch size")
THREADS = positive_int(LIMITS["threads"], "a number of threads")
REFINE = nonnegative_int(LIMITS["refine"], "a number of refinements")
BEST_OF = positive_int(LIMITS["best_of"], "a number of candidates")
FIT_N = positive_int(LIMITS["fit_n"], "a number of images")
SAMPLES = positive_int(LIMITS["samples"], "a number of samples")
GUIDANCE = finite_float(0.0, LIMITS["guidance"], what="a guidance scale")
ETA = finite_float(0.0, 1.0, what="a DDIM eta")
THETA = finite_float(0.0, 1.0, what="a slerp weight")
TIME_LIMIT = finite_float(0.0, LIMITS["time_limit_s"], low_open=True, what="seconds")
