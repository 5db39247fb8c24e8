"""The Gaussian diffusion process: forward noising, its posterior, and reading a network's output.

One object holds a schedule and answers every closed-form question about it (Ho et al. 2020;
Nichol & Dhariwal 2021 for learned variances; Salimans & Ho 2022 for v). It knows nothing of
networks: a network maps (x_t, t, cond) to a raw output, and :meth:`GaussianDiffusion.p_mean_variance`
turns that output into the mean and variance of p(x_{t-1} | x_t).

Shapes: x is (B, ...) with any number of trailing dims -- images (B, C, H, W) for the decoder,
vectors (B, D) for the diffusion prior, which diffuses CLIP image embeddings. ``t`` is a
LongTensor (B,) (or one int for the whole batch) of indices into *this* diffusion's
schedule; for a respaced diffusion,
:attr:`GaussianDiffusion.timestep_map` turns them into the original timesteps a network was
trained on. Schedule arrays are float64 on the CPU and cast to x's dtype and device on use.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import ConfigError, InputError
from .schedule import make_betas

PREDICTIONS = ("eps", "x0", "v")


class GaussianDiffusion:
    """A discrete-time Gaussian diffusion with T steps.

    Args:
        betas: (T,) noise variances of q(x_t | x_{t-1}), each in (0, 1].
        prediction: what the network predicts: "eps" (the noise), "x0" (the clean sample) or
            "v" (sqrt(abar) eps - sqrt(1 - abar) x0).
        learned_variance: whether the network also outputs the iDDPM variance interpolation
            value; its output then has twice the channels of x along dim 1 (prediction first).
        timestep_map: (T,) original timestep of each step; identity unless made by :meth:`respace`.
    """

    def __init__(
        self,
        betas: torch.Tensor | Sequence[float],
        prediction: str = "eps",
        learned_variance: bool = False,
        timestep_map: torch.Tensor | Sequence[int] | None = None,
    ) -> None:
        if prediction not in PREDICTIONS:
            raise ConfigError(f"unknown prediction {prediction!r}; choose one of {', '.join(PREDICTIONS)}")
        betas = torch.as_tensor(betas, dtype=torch.float64).detach().cpu()
        if betas.ndim != 1 or betas.numel() == 0:
            raise ConfigError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas <= 1)).all()):
            raise ConfigError("every beta must lie in (0, 1]; build betas with make_betas('cosine' | 'linear', T)")
        self.prediction = prediction
        self.learned_variance = bool(learned_variance)
        self.betas = betas
        T = betas.numel()
        if timestep_map is None:
            timestep_map = torch.arange(T)
        self.timestep_map = torch.as_tensor(timestep_map, dtype=torch.long).detach().cpu()
        if self.timestep_map.shape != (T,):
            raise ConfigError(f"timestep_map must have shape ({T},), got {tuple(self.timestep_map.shape)}")

        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        one, zero = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
        self.alphas_cumprod_prev = torch.cat([one, self.alphas_cumprod[:-1]])
        self.alphas_cumprod_next = torch.cat([self.alphas_cumprod[1:], zero])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        self.log_one_minus_alphas_cumprod = torch.log1p(-self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = self.alphas_cumprod.rsqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / self.alphas_cumprod - 1.0).sqrt()

        # q(x_{t-1} | x_t, x0) = N(coef1 x0 + coef2 x_t, posterior_variance)   (DDPM eq. 6-7)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # The variance is 0 at t = 0; its log is clipped to the value at t = 1 so that the
        # learned-variance interpolation and the decoder NLL stay finite (iDDPM).
        first = self.posterior_variance[1:2] if T > 1 else betas[:1]
        self.posterior_log_variance_clipped = torch.log(torch.cat([first, self.posterior_variance[1:]]))
        self.posterior_mean_coef1 = betas * self.alphas_cumprod_prev.sqrt() / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * self.alphas.sqrt() / (1.0 - self.alphas_cumprod)

    # ------------------------------------------------------------------ construction

    @classmethod
    def make(
        cls,
        schedule: str = "cosine",
        num_timesteps: int = 1000,
        prediction: str = "eps",
        learned_variance: bool = False,
    ) -> "GaussianDiffusion":
        """A diffusion over the named schedule ("cosine" or "linear") with ``num_timesteps`` steps."""
        return cls(make_betas(schedule, num_timesteps), prediction=prediction, learned_variance=learned_variance)

    @property
    def num_timesteps(self) -> int:
        """T, the number of steps of this (possibly respaced) diffusion."""
        return self.betas.numel()

    def respace(self, timesteps: Sequence[int]) -> "GaussianDiffusion":
        """A shorter diffusion that visits only ``timesteps`` (indices into this one), same marginals.

        Its betas are 1 - abar_t / abar_prev over consecutive kept steps, so alphas_cumprod at
        the kept steps is unchanged (iDDPM Sec. 4). Its :attr:`timestep_map` gives the original
        timestep of each of its steps, which is what a network must be called with; this
        object is left untouched.
        """
        ts = torch.as_tensor(list(timesteps), dtype=torch.long)
        if ts.ndim != 1 or ts.numel() == 0:
            raise InputError("respace needs a non-empty list of timesteps; build one with spaced_timesteps(T, steps)")
        if int(ts.min()) < 0 or int(ts.max()) >= self.num_timesteps or not bool((ts[1:] > ts[:-1]).all()):
            raise InputError(
                f"respace timesteps must be strictly increasing ints in [0, {self.num_timesteps - 1}], got "
                f"{ts.tolist()[:8]}..."
            )
        abar = self.alphas_cumprod[ts]
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        betas = 1.0 - abar / abar_prev
        return GaussianDiffusion(betas, self.prediction, self.learned_variance, timestep_map=self.timestep_map[ts])

    def __repr__(self) -> str:
        return (
            f"GaussianDiffusion(T={self.num_timesteps}, prediction={self.prediction!r}, "
            f"learned_variance={self.learned_variance})"
        )

    # ------------------------------------------------------------------ helpers

    def extract(self, arr: torch.Tensor, t: torch.Tensor | int, x: torch.Tensor) -> torch.Tensor:
        """arr[t] shaped (B, 1, ..., 1) to broadcast against x, in x's dtype and on x's device.

        ``t`` is a LongTensor (B,), or an int (or 0-d tensor) used for the whole batch, which
        samplers pass to skip a per-element gather.
        """
        shape = x.shape[:1] + (1,) * (x.ndim - 1)
        if isinstance(t, int) or (isinstance(t, torch.Tensor) and t.ndim == 0):
            i = int(t)
            if not 0 <= i < self.num_timesteps:
                raise InputError(
                    f"t must lie in [0, {self.num_timesteps - 1}] for this {self.num_timesteps}-step diffusion, got {i}"
                )
            return arr[i : i + 1].to(dtype=x.dtype).to(x.device).reshape((1,) * x.ndim).expand(shape)
        t = torch.as_tensor(t, dtype=torch.long)
        idx = t.detach().to("cpu")
        if idx.ndim != 1 or idx.shape[0] != x.shape[0]:
            raise InputError(
                f"t must be a LongTensor of shape ({x.shape[0]},) matching x's batch, got shape {tuple(t.shape)}"
            )
        if int(idx.min()) < 0 or int(idx.max()) >= self.num_timesteps:
            raise InputError(
                f"t must lie in [0, {self.num_timesteps - 1}] for this {self.num_timesteps}-step diffusion, got "
                f"{idx.min().item()}..{idx.max().item()}"
            )
        # Cast on the CPU first: some devices (MPS) have no float64.
        return arr[idx].to(dtype=x.dtype).to(x.device).reshape(shape)

    # ------------------------------------------------------------------ forward process

    def q_sample(
        self,
        x0: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, a draw of q(x_t | x0) (DDPM eq. 4).

        x0, noise: (B, ...); t: (B,). Noise is drawn from ``generator`` when not given.
        """
        if noise is None:
            noise = randn_like(x0, generator)
        return (
            self.extract(self.sqrt_alphas_cumprod, t, x0) * x0
            + self.extract(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        )

    def q_mean_variance(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and log-variance of q(x_t | x0)."""
        mean = self.extract(self.sqrt_alphas_cumprod, t, x0) * x0
        return (
            mean,
            self.extract(1.0 - self.alphas_cumprod, t, x0),
            self.extract(self.log_one_minus_alphas_cumprod, t, x0),
        )

    def q_posterior(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x0) (DDPM eq. 6-7)."""
        mean = (
            self.extract(self.posterior_mean_coef1, t, x_t) * x0 + self.extract(self.posterior_mean_coef2, t, x_t) * x_t
        )
        return (
            mean,
            self.extract(self.posterior_variance, t, x_t),
            self.extract(self.posterior_log_variance_clipped, t, x_t),
        )

    # ------------------------------------------------------------------ parameterisations

    def x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)."""
        return (
            self.extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
            - self.extract(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps
        )

    def eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)."""
        return (self.extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0) / self.extract(
            self.sqrt_recipm1_alphas_cumprod, t, x_t
        )

    def v_from(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022, Sec. 4)."""
        return (
            self.extract(self.sqrt_alphas_cumprod, t, x0) * eps
            - self.extract(self.sqrt_one_minus_alphas_cumprod, t, x0) * x0
        )

    def x0_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """x0 = sqrt(abar) x_t - sqrt(1 - abar) v."""
        return (
            self.extract(self.sqrt_alphas_cumprod, t, x_t) * x_t
            - self.extract(self.sqrt_one_minus_alphas_cumprod, t, x_t) * v
        )

    def eps_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """eps = sqrt(1 - abar) x_t + sqrt(abar) v."""
        return (
            self.extract(self.sqrt_one_minus_alphas_cumprod, t, x_t) * x_t
            + self.extract(self.sqrt_alphas_cumprod, t, x_t) * v
        )

    # ------------------------------------------------------------------ reading a network's output

    def split_output(self, model_output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(prediction, variance values or None) from a raw network output.

        With a learned variance the output has 2C channels along dim 1: the first C are the
        prediction, the last C the interpolation values v in [-1, 1]. Otherwise it is returned whole.
        An output in half precision (a network run under bf16 autocast) is read in float32, so
        the samplers' and losses' maths stays fp32.
        """
        if model_output.dtype in (torch.bfloat16, torch.float16):
            model_output = model_output.float()
        if not self.learned_variance:
            return model_output, None
        channels = model_output.shape[1]
        if channels % 2:
            raise InputError(
                "a learned-variance diffusion needs a model output with an even number of channels along dim 1 "
                f"(prediction, variance), got {channels}"
            )
        return model_output[:, : channels // 2], model_output[:, channels // 2 :]

    def predict(
        self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, clip_x0: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(pred_x0, pred_eps) implied by the network's prediction at (x_t, t).

        With ``clip_x0`` the x0 estimate is clamped to [-clip_x0, clip_x0] and eps re-derived
        from it, so the two stay consistent with x_t (as DDIM needs).
        """
        pred, _ = self.split_output(model_output)
        if pred.shape != x_t.shape:
            raise InputError(
                f"model output prediction has shape {tuple(pred.shape)} but x_t has {tuple(x_t.shape)}; check the "
                "model's out_channels and learned_variance"
            )
        if self.prediction == "eps":
            pred_eps, pred_x0 = pred, self.x0_from_eps(x_t, t, pred)
        elif self.prediction == "x0":
            pred_x0, pred_eps = pred, self.eps_from_x0(x_t, t, pred)
        else:
            pred_x0, pred_eps = self.x0_from_v(x_t, t, pred), self.eps_from_v(x_t, t, pred)
        if clip_x0 is not None:
            pred_x0 = pred_x0.clamp(-clip_x0, clip_x0)
            pred_eps = self.eps_from_x0(x_t, t, pred_x0)
        return pred_x0, pred_eps

    def p_mean_variance(
        self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, clip_x0: float | None = None
    ) -> dict[str, torch.Tensor]:
        """Mean and variance of p(x_{t-1} | x_t) from a raw network output.

        The mean is the posterior mean q(x_{t-1} | x_t, x0 = pred_x0). The variance is
        learned -- exp(frac log beta_t + (1 - frac) log posterior_variance_t) with frac =
        (v + 1)/2 (iDDPM eq. 15) -- or fixed to the posterior variance ("fixed small").

        Returns a dict of (B, ...) tensors: mean, variance, log_variance, pred_x0, pred_eps.
        """
        _, var_values = self.split_output(model_output)
        pred_x0, pred_eps = self.predict(model_output, x_t, t, clip_x0)
        mean, variance, log_variance = self.q_posterior(pred_x0, x_t, t)
        if var_values is not None:
            min_log = log_variance
            max_log = self.extract(self.betas.log(), t, x_t)
            frac = (var_values + 1.0) / 2.0
            log_variance = frac * max_log + (1.0 - frac) * min_log
            variance = log_variance.exp()
        else:
            variance, log_variance = variance.expand_as(x_t), log_variance.expand_as(x_t)
        return {
            "mean": mean,
            "variance": variance,
            "log_variance": log_variance,
            "pred_x0": pred_x0,
            "pred_eps": pred_eps,
        }


def randn_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise shaped like x, drawn from ``generator`` (on its own device) when given."""
    if generator is None:
        return torch.randn_like(x)
    noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=torch.float32)
    return noise.to(device=x.device, dtype=x.dtype)
