"""The diffusion maths of unCLIP, apart from any network.

Networks map (x_t, t, cond) to a raw output; this package schedules noise
(:mod:`.schedule`), reads outputs and answers closed-form questions (:mod:`.gaussian`),
computes training losses (:mod:`.losses`), samples and inverts (:mod:`.sampling`; exactly:
:mod:`.edict`) and guides (:mod:`.guidance`). It imports no network code.
"""

from .dispatch import sample
from .edict import edict_invert, edict_sample
from .gaussian import PREDICTIONS, GaussianDiffusion, randn_like
from .guidance import bind, classifier_free_guidance
from .likelihood import prior_bpd, vlb_bpd
from .losses import (
    discretized_gaussian_log_likelihood,
    gaussian_log_likelihood,
    mean_flat,
    normal_kl,
    prediction_target,
    sample_timesteps,
    training_loss,
    vb_terms,
)
from .sampling import ddim_invert, ddim_sample, ddpm_sample
from .schedule import SCHEDULES, cosine_betas, linear_betas, make_betas, spaced_timesteps
from .settings import UPSAMPLER_DEFAULT_STEPS, DiffusionSettings
from .solvers import dpmpp_2m_sample

__all__ = [
    "PREDICTIONS",
    "SCHEDULES",
    "DiffusionSettings",
    "GaussianDiffusion",
    "UPSAMPLER_DEFAULT_STEPS",
    "bind",
    "classifier_free_guidance",
    "cosine_betas",
    "ddim_invert",
    "ddim_sample",
    "ddpm_sample",
    "edict_invert",
    "edict_sample",
    "discretized_gaussian_log_likelihood",
    "dpmpp_2m_sample",
    "gaussian_log_likelihood",
    "linear_betas",
    "make_betas",
    "mean_flat",
    "normal_kl",
    "prediction_target",
    "prior_bpd",
    "randn_like",
    "sample",
    "sample_timesteps",
    "spaced_timesteps",
    "training_loss",
    "vb_terms",
    "vlb_bpd",
]
