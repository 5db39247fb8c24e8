"""Upsampler stages started part-way from the bicubic upsample (CCDF) instead of pure noise, and
their outputs back-projected onto their inputs."""

from __future__ import annotations

import argparse
import math

import pytest
import torch

from unclip.apps.cli.args import upsampler_start
from unclip.diffusion import DiffusionSettings
from unclip.errors import InputError
from unclip.model_dir import load_upsampler
from unclip.storage.checkpoint import save_component
from unclip.upsampler import Upsampler, UpsamplerConfig
from unclip.upsampler.cascade import (
    CascadeStage,
    back_project,
    plan_stages,
    run_cascade,
    starts_per_stage,
    upsample,
)
from unclip.upsampler.degradations import resize

SETTINGS = DiffusionSettings(num_timesteps=200, prediction="eps")


def tiny_upsampler() -> Upsampler:
    torch.manual_seed(0)
    cfg = UpsamplerConfig(low_res=8, high_res=16, base_channels=8, channel_mults=(1, 2), num_res_blocks=1)
    return Upsampler(cfg).eval()


def low_images(b: int = 2) -> torch.Tensor:
    return torch.rand(b, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


def zero_eps(net: Upsampler, seen: list[int]) -> Upsampler:
    """Make ``net`` predict eps = 0 everywhere and record the timesteps it is called with."""

    def forward(x_t: torch.Tensor, t: torch.Tensor, low_res: torch.Tensor) -> torch.Tensor:
        seen.append(int(t[0]))
        return torch.zeros_like(x_t)

    net.forward = forward  # type: ignore[method-assign]
    return net


def test_one_step_from_a_start_is_the_closed_form() -> None:
    # eps = 0: x0_hat = x_t / sqrt(abar_t) with x_t = sqrt(abar_t) bicubic + sqrt(1 - abar_t) noise
    seen: list[int] = []
    net, low = zero_eps(tiny_upsampler(), seen), low_images()
    noise = 0.1 * torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    out = upsample(net, SETTINGS, low, steps=1, start=40, noise=noise)
    abar = float(SETTINGS.make().alphas_cumprod[40])
    bicubic = resize(low, 16, "bicubic").clamp(-1, 1)
    expected = (bicubic + math.sqrt((1 - abar) / abar) * noise).clamp(-1, 1)
    assert torch.allclose(out, expected, atol=1e-5)
    assert seen == [40]
    # without noise the start is the bicubic upsample itself, whatever the timestep
    assert torch.allclose(upsample(net, SETTINGS, low, steps=1, start=150, noise=torch.zeros_like(noise)), bicubic)


def test_steps_run_over_the_timesteps_up_to_the_start() -> None:
    seen: list[int] = []
    net = zero_eps(tiny_upsampler(), seen)
    upsample(net, SETTINGS, low_images(), steps=3, start=100, generator=torch.Generator().manual_seed(0))
    assert seen == [100, 50, 0]
    seen.clear()
    upsample(net, SETTINGS, low_images(), steps=3, generator=torch.Generator().manual_seed(0))
    assert seen[0] == SETTINGS.num_timesteps - 1  # from noise: the paper's sampler, unchanged


def test_start_and_noise_fix_the_result_and_differ_from_noise_sampling() -> None:
    net, low = tiny_upsampler(), low_images()
    a = upsample(net, SETTINGS, low, steps=2, start=60, generator=torch.Generator().manual_seed(3))
    b = upsample(net, SETTINGS, low, steps=2, start=60, generator=torch.Generator().manual_seed(3))
    c = upsample(net, SETTINGS, low, steps=2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.allclose(a, c)


@pytest.mark.parametrize(
    ("start", "steps", "match"),
    [(200, 1, r"\[0, 199\]"), (-1, 1, r"\[0, 199\]"), (True, 1, "timestep"), (10, 12, "1..11 steps")],
)
def test_bad_starts_are_input_errors(start: object, steps: int, match: str) -> None:
    with pytest.raises(InputError, match=match):
        upsample(tiny_upsampler(), SETTINGS, low_images(), steps=steps, start=start)  # type: ignore[arg-type]


def test_starts_per_stage_and_the_cascade_use_each_stages_default() -> None:
    seen: list[int] = []
    stages = [
        CascadeStage(zero_eps(tiny_upsampler(), seen), SETTINGS, steps=1, start=30),
        CascadeStage(zero_eps(tiny_upsampler(), seen), SETTINGS, steps=2),
    ]
    assert starts_per_stage(stages, None) == [30, None]
    assert starts_per_stage(stages, "noise") == [None, None]
    assert starts_per_stage(stages, 70) == [70, 70]
    with pytest.raises(InputError, match="noise"):
        starts_per_stage(stages, "bicubic")
    x = run_cascade(stages[:1], low_images(), generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 16, 16) and seen == [30]


def test_a_stored_default_start_is_loaded(tmp_path) -> None:
    net = tiny_upsampler()
    extra = {"diffusion": {"num_timesteps": 200}, "degradation": "bsr-light", "default_steps": 1, "default_start": 40}
    extra["default_back_projection"] = 2
    save_component(tmp_path / "up", "upsampler", net.config, net.state_dict(), extra=extra)
    stage = load_upsampler(tmp_path / "up")
    assert (stage.start, stage.steps, stage.back_projection) == (40, 1, 2)
    del extra["default_start"], extra["default_back_projection"]
    save_component(tmp_path / "plain", "upsampler", net.config, net.state_dict(), extra=extra)
    assert (load_upsampler(tmp_path / "plain").start, load_upsampler(tmp_path / "plain").back_projection) == (None, 0)


def test_command_line_type() -> None:
    assert upsampler_start("noise") == "noise" and upsampler_start(" 150 ") == 150
    for bad in ("-3", "half", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            upsampler_start(bad)


def area_gap(x: torch.Tensor, low: torch.Tensor) -> float:
    return float((resize(x, low.shape[-1], "area") - low).abs().max())


def test_back_projection_pulls_the_downsample_onto_the_input() -> None:
    g = torch.Generator().manual_seed(0)
    low = torch.rand(2, 3, 8, 8, generator=g) - 0.5  # away from the clamp
    x = torch.rand(2, 3, 32, 32, generator=g) - 0.5
    gaps = [area_gap(back_project(x, low, r), low) for r in range(4)]
    assert torch.equal(back_project(x, low, 0), x)
    assert all(later < 0.6 * earlier for earlier, later in zip(gaps, gaps[1:])), gaps  # about 0.4-0.5 a round
    # an image whose box downsample already is the input keeps its detail below the input's scale
    sharp = resize(low, 32, "nearest") + 0.2 * torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(16, 16)
    assert area_gap(sharp, low) < 1e-6
    assert torch.allclose(back_project(sharp, low, 2), sharp, atol=1e-6)
    for bad in (-1, 1.5, True):
        with pytest.raises(InputError, match="rounds"):
            back_project(x, low, bad)  # type: ignore[arg-type]


def test_upsample_back_projects_its_own_sample() -> None:
    net, low = tiny_upsampler(), low_images()
    plain = upsample(net, SETTINGS, low, steps=1, start=50, generator=torch.Generator().manual_seed(2))
    projected = upsample(
        net, SETTINGS, low, steps=1, start=50, back_projection=2, generator=torch.Generator().manual_seed(2)
    )
    assert torch.allclose(projected, back_project(plain, low, 2))
    assert area_gap(projected, low) < area_gap(plain, low)


def test_noise_override_gives_a_part_way_stage_the_papers_step_count() -> None:
    blur = CascadeStage(tiny_upsampler(), SETTINGS, steps=27)
    bsr = CascadeStage(tiny_upsampler(), SETTINGS, steps=1, degradation="bsr-light", start=150)
    assert plan_stages([blur, bsr], None, None) == [(27, None), (1, 150)]
    assert plan_stages([blur, bsr], None, "noise") == [(27, None), (15, None)]  # 15: the paper's BSR stage
    assert plan_stages([blur, bsr], [None, 4], "noise") == [(27, None), (4, None)]  # given steps win
    assert plan_stages([blur, bsr], 3, 100) == [(3, 100), (3, 100)]


def test_a_start_works_for_non_square_inputs() -> None:
    low = torch.rand(1, 3, 8, 12, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = upsample(tiny_upsampler(), SETTINGS, low, steps=1, start=30, back_projection=1)
    assert out.shape == (1, 3, 16, 24)
