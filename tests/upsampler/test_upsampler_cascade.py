"""Cascades of upsamplers: any number of stages, any ratio, seeded."""

from __future__ import annotations

import pytest
import torch

from unclip.diffusion import DiffusionSettings
from unclip.errors import InputError
from unclip.upsampler import Upsampler, UpsamplerConfig
from unclip.upsampler.cascade import CascadeStage, run_cascade, upsample

SETTINGS = DiffusionSettings(num_timesteps=50)


def stage(low: int, high: int, seed: int) -> CascadeStage:
    torch.manual_seed(seed)
    net = Upsampler(
        UpsamplerConfig(low_res=low, high_res=high, base_channels=8, channel_mults=(1, 2), num_res_blocks=1)
    )
    return CascadeStage(net.eval(), SETTINGS, steps=2)


def low_images(b: int = 2, side: int = 16) -> torch.Tensor:
    return torch.rand(b, 3, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_one_and_two_stages_give_the_final_size() -> None:
    x = low_images()
    stages = [stage(16, 32, 0), stage(32, 64, 1)]
    one = run_cascade(stages[:1], x, generator=torch.Generator().manual_seed(0))
    two = run_cascade(stages, x, steps=[2, 1], generator=torch.Generator().manual_seed(0))
    assert one.shape == (2, 3, 32, 32) and two.shape == (2, 3, 64, 64)
    assert two.min() >= -1 and two.max() <= 1 and torch.isfinite(two).all()
    assert run_cascade([], x) is x


def test_same_seed_same_images() -> None:
    s, x = stage(16, 32, 0), low_images()
    a = run_cascade([s], x, generator=torch.Generator().manual_seed(3))
    b = run_cascade([s], x, generator=torch.Generator().manual_seed(3))
    c = run_cascade([s], x, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_any_ratio_and_inputs_of_other_sizes() -> None:
    s = stage(8, 32, 0)  # 4x
    out = upsample(s.model, s.settings, low_images(1, 4), steps=1, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 16, 16)


def test_bad_inputs_are_input_errors() -> None:
    s = stage(16, 32, 0)
    with pytest.raises(InputError, match="one per stage"):
        run_cascade([s], low_images(), steps=[1, 2])
    odd = stage(16, 24, 0)  # 1.5x: a 5 px input would give 7.5 px
    with pytest.raises(InputError, match="multiples"):
        upsample(odd.model, odd.settings, low_images(1, 5), steps=1)
