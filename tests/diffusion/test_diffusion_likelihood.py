"""The full variational bound (``unclip.diffusion.likelihood``) against closed forms."""

from __future__ import annotations

import math

import torch

from unclip.diffusion import GaussianDiffusion, discretized_gaussian_log_likelihood
from unclip.diffusion.likelihood import prior_bpd, vlb_bpd

T = 30


def test_prior_term_is_the_gaussian_kl_to_standard_normal() -> None:
    d = GaussianDiffusion.make("linear", T)
    x0 = torch.rand(3, 2, 4, 4, dtype=torch.float64) * 2 - 1
    abar = float(d.alphas_cumprod[-1])
    # KL(N(sqrt(abar) x0, 1 - abar) || N(0, 1)) per dim, averaged, in bits
    kl = 0.5 * (abar * x0**2 + (1 - abar) - 1 - math.log(1 - abar))
    assert torch.allclose(prior_bpd(d, x0), kl.mean(dim=(1, 2, 3)) / math.log(2), atol=1e-12)


def test_oracle_model_leaves_only_the_decoder_term_and_the_prior() -> None:
    """A model that knows x0 predicts the true posterior mean, so every KL term is zero."""
    d = GaussianDiffusion.make("cosine", T)
    x0 = torch.randint(0, 256, (2, 3, 4, 4)).double() / 127.5 - 1

    def oracle(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return d.eps_from_x0(x_t, t, x0)

    out = vlb_bpd(oracle, d, x0, generator=torch.Generator().manual_seed(0))
    assert out["terms"].shape == (T, 2)
    assert out["terms"][1:].abs().max() < 1e-6
    log_scale = 0.5 * float(d.posterior_log_variance_clipped[0])
    nll = -discretized_gaussian_log_likelihood(x0, x0, torch.full_like(x0, log_scale)).mean(dim=(1, 2, 3)) / math.log(2)
    assert torch.allclose(out["terms"][0], nll.float(), atol=1e-5)
    assert torch.allclose(out["total"], (nll + prior_bpd(d, x0)).float(), atol=1e-5)


def test_a_wrong_model_has_a_larger_bound() -> None:
    d = GaussianDiffusion.make("cosine", T)
    x0 = torch.randint(0, 256, (2, 3, 4, 4)).double() / 127.5 - 1
    good = vlb_bpd(lambda x, t: d.eps_from_x0(x, t, x0), d, x0, generator=torch.Generator().manual_seed(0))
    bad = vlb_bpd(lambda x, t: d.eps_from_x0(x, t, x0 * 0.5), d, x0, generator=torch.Generator().manual_seed(0))
    assert bool((bad["total"] > good["total"] + 0.1).all())
