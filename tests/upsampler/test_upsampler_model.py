"""The upsampler network: conv-only, conditioned on the low-res image, runs on crops and full size."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from unclip.errors import ConfigError, InputError
from unclip.nn.attention import MultiHeadAttention
from unclip.nn.unet import AttentionBlock
from unclip.storage.checkpoint import config_from_dict, config_to_dict
from unclip.upsampler import Upsampler, UpsamplerConfig

TINY = dict(low_res=16, high_res=64, base_channels=16, channel_mults=(1, 2, 2), num_res_blocks=1)


def make(**overrides) -> Upsampler:
    torch.manual_seed(0)
    net = Upsampler(UpsamplerConfig(**{**TINY, **overrides}))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return net.eval()


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_has_no_attention_and_takes_six_channels() -> None:
    net = Upsampler(UpsamplerConfig(**TINY))
    assert not any(isinstance(m, (AttentionBlock, MultiHeadAttention)) for m in net.modules())
    assert net.unet.config.in_channels == 6 and net.unet.config.out_channels == 3
    assert net.unet.config.context_dim is None


def test_runs_on_crops_and_full_size_with_the_same_weights() -> None:
    net = make()
    t = torch.tensor([3, 700])
    crop = net(randn(2, 3, 16, 16), t, randn(2, 3, 4, 4, seed=1))  # a quarter-side crop, as in training
    full = net(randn(2, 3, 64, 64), t, randn(2, 3, 16, 16, seed=1))  # the full image, as at inference
    assert crop.shape == (2, 3, 16, 16) and full.shape == (2, 3, 64, 64)
    assert torch.isfinite(crop).all() and torch.isfinite(full).all()


def test_low_res_image_conditions_output() -> None:
    net = make()
    x, t = randn(2, 3, 32, 32), torch.tensor([5, 5])
    a = net(x, t, randn(2, 3, 8, 8, seed=1))
    b = net(x, t, randn(2, 3, 8, 8, seed=2))
    assert (a - b).abs().max() > 1e-3


def test_pre_resized_low_res_is_used_as_is() -> None:
    net = make()
    x, t, low = randn(1, 3, 32, 32), torch.tensor([9]), randn(1, 3, 8, 8, seed=1)
    up = F.interpolate(low, size=(32, 32), mode="bicubic", align_corners=False)
    torch.testing.assert_close(net(x, t, low), net(x, t, up))


def test_bad_low_res_is_an_input_error() -> None:
    net = make()
    with pytest.raises(InputError, match="aspect"):
        net(randn(1, 3, 32, 32), torch.tensor([1]), randn(1, 3, 8, 4))
    with pytest.raises(InputError, match="low_res"):
        net(randn(2, 3, 32, 32), torch.tensor([1, 1]), randn(1, 3, 8, 8))


def test_config_checks_and_round_trip() -> None:
    with pytest.raises(ConfigError, match="interpolation"):
        UpsamplerConfig(interpolation="area")
    with pytest.raises(ConfigError, match="low_res"):
        UpsamplerConfig(low_res=64, high_res=64)
    cfg = UpsamplerConfig(**TINY)
    assert config_from_dict(UpsamplerConfig, json.loads(json.dumps(config_to_dict(cfg)))) == cfg


def test_fresh_residual_upsampler_predicts_the_resized_low_res_image() -> None:
    # The output conv is zero-initialised, so before training a residual upsampler's x0
    # estimate is exactly the bicubic upsampling, whatever the noise level.
    torch.manual_seed(0)
    net = Upsampler(UpsamplerConfig(**TINY, residual=True)).eval()
    low = randn(2, 3, 16, 16, seed=1)
    out = net(randn(2, 3, 64, 64), torch.tensor([10, 990]), low)
    torch.testing.assert_close(out, F.interpolate(low, size=(64, 64), mode="bicubic", align_corners=False))
    plain = Upsampler(UpsamplerConfig(**TINY)).eval()
    assert plain(randn(2, 3, 64, 64), torch.tensor([10, 990]), low).abs().max() == 0


def test_residual_upsampler_needs_x0_prediction() -> None:
    from unclip.upsampler.model import check_prediction

    check_prediction(UpsamplerConfig(**TINY, residual=True), "x0")
    check_prediction(UpsamplerConfig(**TINY), "eps")
    with pytest.raises(ConfigError, match="prediction='x0'"):
        check_prediction(UpsamplerConfig(**TINY, residual=True), "eps")
