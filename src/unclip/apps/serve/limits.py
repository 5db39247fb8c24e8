"""What one request may ask of the server, and the checks that enforce it before any work starts.

A public service has to bound the cost of each request up front (a queue bounds how many
run at once, these bound how long each runs and how much memory it takes): images per
request, sampler steps, frames, prompt length (the CLIP text context), upload size and pixel
count, and the image type. Every check raises :class:`RequestError`, which the JSON API
answers with HTTP 400 (413 for sizes) and the UI shows as an error, both naming the field.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from ...errors import InputError

#: image formats accepted from clients, as Pillow names them
IMAGE_FORMATS = ("PNG", "JPEG")
#: seeds go to ``torch.Generator.manual_seed``; keep them in its signed 64-bit range
MAX_SEED = 2**63 - 1


class RequestError(InputError):
    """A request the server refuses before doing any work: ``status`` (400 or 413) and the ``field`` at fault."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.status = status
        self.detail = message


@dataclass(frozen=True)
class Limits:
    """Per-request limits (all inclusive). The defaults suit a CPU; raise them on a GPU.

    ``max_images`` caps the images one request produces (prompts x num_images for
    generation, the variations of one upload); ``max_frames`` caps interpolation and
    text-diff frames. ``max_upload_bytes`` is the decoded size of one uploaded image and
    ``max_pixels`` its width x height, checked from the header before the pixels are decoded.
    """

    max_images: int = 8
    max_prompts: int = 8
    max_steps: int = 100
    max_frames: int = 16
    max_prompt_chars: int = 1000
    max_upload_bytes: int = 4 * 2**20
    max_pixels: int = 4096 * 4096
    max_guidance: float = 20.0
    max_eta: float = 2.0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not value > 0
                or not math.isfinite(value)
            ):
                raise InputError(f"serve limit {name} must be a positive number, got {value!r}")

    @property
    def max_body_bytes(self) -> int:
        """Largest JSON body accepted: two base64 uploads (interpolation) plus room for the other fields."""
        return 2 * (4 * math.ceil(self.max_upload_bytes / 3)) + 64 * 1024


# ----------------------------------------------------------------------------- scalar checks


def check_int(field: str, value: int, low: int, high: int, hint: str = "") -> int:
    """``value`` as an int in [low, high], else a 400 naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(field, f"must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise RequestError(field, f"must be between {low} and {high}, got {value}{hint}")
    return value


def check_float(field: str, value: float, low: float, high: float) -> float:
    """``value`` as a finite float in [low, high], else a 400 naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(field, f"must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or not low <= value <= high:
        raise RequestError(field, f"must be a finite number between {low} and {high}, got {value}")
    return float(value)


def check_choice(field: str, value: Any, choices: tuple[str, ...] | list[str]) -> str:
    """``value`` if it is one of ``choices``, else a 400 listing them."""
    if not isinstance(value, str) or value not in choices:
        raise RequestError(field, f"unknown value {value!r}; choose one of {', '.join(choices)}")
    return value


def check_steps(field: str, value: int | None, default: int, limits: Limits, model_max: int | None = None) -> int:
    """Sampler steps: a given value must be in [1, max_steps] and within the model's timesteps
    (``model_max``); an omitted one is the default, capped the same way."""
    high = limits.max_steps if model_max is None else min(limits.max_steps, int(model_max))
    if value is None:
        return max(1, min(int(default), high))
    why = " (the server's --max-steps)" if high == limits.max_steps else " (the model's diffusion timesteps)"
    return check_int(field, value, 1, high, why)


def check_text(
    field: str, text: Any, limits: Limits, context_length: int, word_count, *, allow_empty: bool = False
) -> str:
    """A caption: a string, not blank (unless allowed), at most ``max_prompt_chars`` characters and
    at most ``context_length - 2`` words (the CLIP context minus its start and end tokens; longer
    captions would be cut silently by the tokenizer). ``word_count(text)`` counts the tokens."""
    if not isinstance(text, str):
        raise RequestError(field, f"must be a string, got {type(text).__name__}")
    if not allow_empty and not text.strip():
        raise RequestError(field, "must not be empty")
    if len(text) > limits.max_prompt_chars:
        raise RequestError(field, f"is {len(text)} characters long; the limit is {limits.max_prompt_chars}")
    words = word_count(text)
    if words > context_length - 2:
        raise RequestError(
            field, f"has {words} tokens; this model's CLIP context holds {context_length - 2} (plus start and end)"
        )
    return text


# ----------------------------------------------------------------------------- images


def decode_base64(field: str, data: Any, limits: Limits) -> bytes:
    """Base64 text (optionally a ``data:image/...;base64,`` URL) -> bytes, at most ``max_upload_bytes``."""
    if not isinstance(data, str) or not data:
        raise RequestError(field, "must be a non-empty base64 string (a PNG or JPEG file)")
    if data.startswith("data:"):
        head, _, data = data.partition(",")
        if not head.endswith(";base64"):
            raise RequestError(field, "a data URL must be base64-encoded (data:image/png;base64,...)")
    # 4 base64 characters carry 3 bytes: refuse an oversized upload before decoding it.
    if len(data) > 4 * math.ceil(limits.max_upload_bytes / 3) + 4:
        raise RequestError(field, f"the upload is larger than the limit of {limits.max_upload_bytes} bytes", 413)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(field, f"is not valid base64 ({exc})") from None
    if len(raw) > limits.max_upload_bytes:
        raise RequestError(field, f"the upload is {len(raw)} bytes; the limit is {limits.max_upload_bytes}", 413)
    return raw


def open_image_bytes(field: str, raw: bytes, limits: Limits) -> Image.Image:
    """Bytes -> an RGB PIL image, if Pillow reads them as PNG or JPEG within ``max_pixels``.

    The header is read first (``Image.open`` is lazy), so a decompression bomb is refused by
    its declared size before its pixels are decoded. Anything else Pillow cannot decode
    completely (truncated files, other formats) is a 400.
    """
    if len(raw) > limits.max_upload_bytes:
        raise RequestError(field, f"the upload is {len(raw)} bytes; the limit is {limits.max_upload_bytes}", 413)
    try:
        im = Image.open(io.BytesIO(raw), formats=list(IMAGE_FORMATS))
    except UnidentifiedImageError:
        raise RequestError(field, f"is not an image Pillow can read as {' or '.join(IMAGE_FORMATS)}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise RequestError(field, f"could not be read as an image ({exc})") from None
    with im:
        width, height = im.size
        if width < 1 or height < 1:
            raise RequestError(field, f"has an empty size {width}x{height}")
        if width * height > limits.max_pixels:
            raise RequestError(
                field, f"is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}", 413
            )
        try:
            im.load()
            return im.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise RequestError(field, f"could not be decoded as {im.format} ({exc})") from None


def decode_image(field: str, data: Any, limits: Limits) -> Image.Image:
    """Base64 PNG/JPEG from a JSON body -> RGB PIL image, every limit checked (see above)."""
    return open_image_bytes(field, decode_base64(field, data, limits), limits)
