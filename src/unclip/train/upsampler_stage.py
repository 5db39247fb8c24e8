"""Training stage of a diffusion upsampler: random crops of a quarter of the target side.

unCLIP (section 2.1) trains its upsamplers "with random crops of images that are 0.25 of
the target size" and applies them at full resolution: the network is convolution-only, so
the same weights run at any size. Here a batch is built from high-resolution images as

1. corrupt: downsample each image to ``low_res`` with the stage's degradation (Gaussian
   blur for the first stage, BSR for the second; see :mod:`.degradations`);
2. upsample the corrupted image back to the high resolution with the network's own
   interpolation (exactly what :class:`Upsampler` does internally at inference);
3. crop the same random ``crop x crop`` window from the original and from the upsampled
   conditioning image.

The BSR stage instead crops first and degrades the crop (``degrade_crops``), as BSRGAN
(Zhang et al. 2021) builds its training pairs from high-quality patches: the degradation is
a sequence of local operations, so a crop's degradation is the same kind of sample as the
whole image's, and at 512 px it costs a sixteenth (the BSR steps are the data pipeline's
dominant cost there: about 0.1 s per whole 512 px image on one CPU core).

The loss is the usual diffusion loss (L_simple, or the hybrid loss with a learned variance)
on the crop. The stage plugs into the stage-agnostic loop of ``train/loop.py``.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from ..data.shapes import render_batch
from ..diffusion import UPSAMPLER_DEFAULT_STEPS, DiffusionSettings, sample_timesteps, training_loss
from ..errors import ConfigError, InputError
from ..model_dir import load_upsampler
from ..storage.checkpoint import save_component
from ..upsampler.corruption import BSR_KINDS, degrade
from ..upsampler.degradations import DEGRADATIONS, resize
from ..upsampler.model import Upsampler, check_prediction
from .distributed import take_rows
from .prefetch import BatchPrefetcher


def component_name(high_res: int) -> str:
    """The component directory of the upsampler to ``high_res``: ``upsampler_<high_res>``."""
    return f"upsampler_{int(high_res)}"


def random_crops(
    images: torch.Tensor, others: torch.Tensor | None, crop: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The same random ``crop x crop`` window (one per image) from two aligned batches.

    Args:
        images, others: (B, C, H, W) and (B, C', H, W), pixel-aligned; ``others`` may be None.
    Returns:
        ((B, C, crop, crop), (B, C', crop, crop) or None), gathered with one indexing op each.
    """
    b, _, h, w = images.shape
    if others is not None and (others.shape[0] != b or others.shape[-2:] != images.shape[-2:]):
        raise InputError(f"crops need aligned batches, got {tuple(images.shape)} and {tuple(others.shape)}")
    if not 0 < crop <= min(h, w):
        raise InputError(f"crop={crop} must be in 1..{min(h, w)} for {h}x{w} images")
    ys = torch.randint(0, h - crop + 1, (b,), generator=generator)
    xs = torch.randint(0, w - crop + 1, (b,), generator=generator)
    r = torch.arange(crop)
    iy = (ys[:, None] + r)[:, :, None]  # (B, crop, 1)
    ix = (xs[:, None] + r)[:, None, :]  # (B, 1, crop)
    bi = torch.arange(b)[:, None, None]

    def take(x: torch.Tensor) -> torch.Tensor:
        return (
            x[bi, :, iy.to(x.device), ix.to(x.device)].permute(0, 3, 1, 2).contiguous()
        )  # (B, crop, crop, C) -> (B, C, crop, crop)

    return take(images), (take(others) if others is not None else None)


class UpsamplerStage:
    """Batch-to-loss for an :class:`Upsampler` trained on crops of high-resolution images.

    Args:
        model: the upsampler; its config gives ``low_res`` and ``high_res``.
        images: (N, 3, high_res, high_res) training images, uint8 in [0, 255] (compact) or
            float in [-1, 1].
        batch_size: crops per step.
        diffusion: the diffusion settings, stored with the exported weights.
        degradation: ``"blur"`` (first stage), ``"bsr"`` or ``"bsr-light"`` (second stage) or ``"none"``.
        crop: crop side; defaults to a quarter of ``high_res`` (the paper).
        export_root: where ``export`` writes ``upsampler_<high_res>/`` (default: the run dir).
        half_weights: export the weights as float16 (halves the file; loaded back as float32).
        degrade_crops: crop the high-resolution images first and degrade the crops (default:
            True for the BSR kinds, False otherwise; see the module docstring).
        workers, seed: build batches ahead in this many worker processes (0: in the loop's
            process), with the run's seed (see :mod:`.prefetch`; the batches are the same).
    """

    def __init__(
        self,
        model: Upsampler,
        images: torch.Tensor,
        batch_size: int,
        diffusion: DiffusionSettings,
        degradation: str = "blur",
        crop: int | None = None,
        export_root: Path | None = None,
        half_weights: bool = True,
        degrade_crops: bool | None = None,
        workers: int = 0,
        seed: int = 0,
    ) -> None:
        cfg = model.config
        if degradation not in DEGRADATIONS:
            raise ConfigError(f"degradation={degradation!r} must be one of {DEGRADATIONS}")
        check_prediction(cfg, diffusion.prediction)
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (cfg.high_res, cfg.high_res):
            raise InputError(
                f"training images must have shape (N, 3, {cfg.high_res}, {cfg.high_res}), got {tuple(images.shape)}"
            )
        self.crop = crop or cfg.high_res // 4
        levels = len(cfg.channel_mults) - 1
        if self.crop % (2**levels) or self.crop > cfg.high_res:
            raise ConfigError(
                f"crop={self.crop} must divide by {2**levels} (the UNet's downsampling) and be <= "
                f"high_res={cfg.high_res}"
            )
        self.degrade_crops = degradation in BSR_KINDS if degrade_crops is None else degrade_crops
        if self.degrade_crops and (self.crop * cfg.low_res) % cfg.high_res:
            raise ConfigError(
                f"crop={self.crop} times low_res={cfg.low_res} must divide by high_res={cfg.high_res} to degrade "
                "crops (the low-resolution crop needs a whole number of pixels)"
            )
        self.model, self.images, self.batch_size = model, images, batch_size
        self.settings, self.diffusion = diffusion, diffusion.make()
        self.degradation, self.export_root, self.half_weights = degradation, export_root, half_weights
        self.name = component_name(cfg.high_res)
        self.prefetcher = BatchPrefetcher(self.build_batch, seed, workers) if workers > 0 else None

    @staticmethod
    def _as_float(x: torch.Tensor) -> torch.Tensor:
        return x.float().div(127.5).sub(1.0) if x.dtype == torch.uint8 else x.float()

    def get_batch(self, step: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(high-res crops, matching crops of the corrupted low-res image upsampled), each (B, 3, crop, crop)."""
        if self.prefetcher is not None:
            return self.prefetcher.get(step, generator)
        return self.build_batch(step, generator)

    def build_batch(self, step: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`get_batch` without the workers: the batch made here, from ``generator``."""
        cfg = self.model.config
        index = torch.randint(0, self.images.shape[0], (self.batch_size,), generator=generator)
        if self.degrade_crops:  # crop the stored (uint8) images, then convert only the crops
            high = self._as_float(random_crops(self.images[index], None, self.crop, generator)[0])
            low = degrade(high, self.crop * cfg.low_res // cfg.high_res, self.degradation, generator)
            return high, resize(low, self.crop, cfg.interpolation)
        high = self._as_float(self.images[index])
        low = degrade(high, cfg.low_res, self.degradation, generator)
        cond = resize(low, cfg.high_res, cfg.interpolation)
        return random_crops(high, cond, self.crop, generator)

    def loss(
        self, batch: tuple[torch.Tensor, torch.Tensor], generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        device = next(self.model.parameters()).device
        # ``batch`` is the global batch (every rank builds it); draw its noise, keep this rank's rows.
        b = batch[0].shape[0]
        t = sample_timesteps(b, self.diffusion.num_timesteps, generator=generator)
        noise = torch.randn(batch[0].shape, generator=generator)
        x0, cond, t, noise = take_rows(batch[0], batch[1], t, noise)
        x0, cond, t, noise = x0.to(device), cond.to(device), t.to(device), noise.to(device)
        x_t = self.diffusion.q_sample(x0, t, noise)
        out = self.model(x_t, t, cond)
        terms = training_loss(self.diffusion, out.float(), x0, x_t, t, noise)
        return terms["loss"].mean(), {"mse": terms["mse"].mean().detach()}

    def export(self, model: nn.Module, out_dir: Path) -> None:
        """Write ``upsampler_<high_res>/``: config, (EMA) weights, diffusion settings and sampling defaults."""
        state = model.state_dict()
        if self.half_weights:
            state = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
        extra = {
            "diffusion": asdict(self.settings),
            "degradation": self.degradation,
            "crop": self.crop,
            "degraded": "crops" if self.degrade_crops else "images",
            "default_steps": UPSAMPLER_DEFAULT_STEPS[self.degradation],
        }
        save_component(Path(self.export_root or out_dir) / self.name, "upsampler", model.config, state, extra=extra)


def warm_start_upsampler(init_dir: str | Path, low_res: int, high_res: int) -> tuple[Upsampler, DiffusionSettings]:
    """An upsampler with the network, weights and diffusion of the upsampler component in ``init_dir``.

    Used to continue a stage under another training corruption (e.g. a second stage trained with
    the full BSR model, then with the light variant). Its sides must be the run's.
    """
    loaded = load_upsampler(init_dir)  # float32, in eval mode and frozen: made trainable again below
    config = loaded.model.config
    if (config.low_res, config.high_res) != (low_res, high_res):
        raise ConfigError(
            f"cannot warm-start a {low_res} -> {high_res} upsampler from {init_dir}, a {config.low_res} -> "
            f"{config.high_res} one; pass matching --low-res/--high-res or another component"
        )
    return loaded.model.train().requires_grad_(True), loaded.settings


def render_training_images(num_images: int, size: int, *, seed: int = 0, chunk: int = 500) -> torch.Tensor:
    """``num_images`` shapes training images at ``size``: (N, 3, size, size) uint8 (compact in memory)."""
    parts = []
    for start in range(0, num_images, chunk):
        images, _, _ = render_batch("train", start, min(chunk, num_images - start), size, seed)
        parts.append(((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8))
    return torch.cat(parts)
