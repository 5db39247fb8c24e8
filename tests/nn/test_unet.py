"""The ADM UNet backbone: shapes, conditioning paths, per-sample independence, config checks."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from unclip.errors import ConfigError, InputError
from unclip.nn.attention import MultiHeadAttention
from unclip.nn.unet import AttentionBlock, ResBlock, UNet, UNetConfig, group_norm, timestep_embedding
from unclip.storage.checkpoint import config_from_dict, config_to_dict

TINY = dict(
    base_channels=16, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(8,), image_size=16, head_channels=8
)


def perturb(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Add noise to every weight so the zero-initialised branches stop being exact zeros."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def make(seed: int = 0, **overrides) -> UNet:
    torch.manual_seed(seed)
    return perturb(UNet(UNetConfig(**{**TINY, **overrides})), seed)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "overrides, size",
    [
        ({}, (16, 16)),
        ({}, (32, 8)),  # not the nominal size, not square
        ({"channel_mults": (1, 2, 2), "attention_resolutions": (4,), "out_channels": 6}, (16, 16)),
        ({"attention_resolutions": (), "resblock_updown": False, "use_scale_shift_norm": False}, (24, 24)),
        ({"channel_mults": (1,), "attention_resolutions": (16,), "in_channels": 6}, (5, 7)),
        ({"context_dim": 12}, (16, 16)),
    ],
)
def test_output_shape_and_dtype(overrides: dict, size: tuple[int, int]) -> None:
    net = make(**overrides)
    cfg = net.config
    x = randn(2, cfg.in_channels, *size)
    kw = {"context": randn(2, 3, 12, seed=1)} if cfg.context_dim else {}
    y = net(x, torch.tensor([0, 999]), **kw)
    assert y.shape == (2, cfg.out_channels, *size)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()


def test_fresh_network_outputs_zero() -> None:
    """The output conv is zero-initialised (ADM): an untrained model predicts exactly 0."""
    torch.manual_seed(0)
    net = UNet(UNetConfig(**TINY))
    assert net(randn(2, 3, 16, 16), torch.tensor([3, 4])).abs().max() == 0


def test_timestep_changes_output() -> None:
    net = make()
    x = randn(2, 3, 16, 16)
    a = net(x, torch.tensor([10, 10]))
    b = net(x, torch.tensor([500, 500]))
    assert (a - b).abs().max() > 1e-3
    # fractional timesteps (respaced samplers) are accepted too
    assert net(x, torch.tensor([10.0, 10.5])).shape == a.shape


def test_emb_extra_changes_output_and_is_checked() -> None:
    net = make()
    x, t = randn(2, 3, 16, 16), torch.tensor([5, 5])
    extra = randn(2, net.emb_dim, seed=3)
    assert net.emb_dim == TINY["base_channels"] * 4
    assert (net(x, t, emb_extra=extra) - net(x, t)).abs().max() > 1e-3
    with pytest.raises(InputError, match="emb_extra"):
        net(x, t, emb_extra=randn(2, net.emb_dim + 1))


def test_context_influences_output_and_mask_hides_it() -> None:
    net = make(context_dim=12)
    x, t = randn(2, 3, 16, 16), torch.tensor([5, 5])
    c1, c2 = randn(2, 4, 12, seed=1), randn(2, 4, 12, seed=2)
    assert (net(x, t, context=c1) - net(x, t, context=c2)).abs().max() > 1e-3
    # masked-out tokens have no influence at all
    mask = torch.tensor([[True, True, False, False]] * 2)
    c3 = c1.clone()
    c3[:, 2:] = randn(2, 2, 12, seed=4)
    torch.testing.assert_close(
        net(x, t, context=c1, context_mask=mask), net(x, t, context=c3, context_mask=mask), atol=1e-5, rtol=0
    )


def test_context_needs_context_dim() -> None:
    with pytest.raises(InputError, match="context_dim"):
        make()(randn(1, 3, 16, 16), torch.tensor([1]), context=randn(1, 2, 12))


def test_batch_items_are_independent() -> None:
    """GroupNorm and attention work per sample: changing example 1 leaves example 0 alone."""
    net = make(context_dim=12)
    x, t, c = randn(2, 3, 16, 16), torch.tensor([7, 300]), randn(2, 3, 12, seed=1)
    a = net(x, t, context=c)
    x2, c2 = x.clone(), c.clone()
    x2[1] = randn(3, 16, 16, seed=9)
    c2[1] = randn(3, 12, seed=8)
    b = net(x2, torch.tensor([7, 12]), context=c2)
    torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=0)
    assert (a[1] - b[1]).abs().max() > 1e-3


def test_attention_modules_present_only_when_asked() -> None:
    def attn_count(net: UNet) -> int:
        return sum(isinstance(m, (AttentionBlock, MultiHeadAttention)) for m in net.modules())

    assert attn_count(UNet(UNetConfig(**{**TINY, "attention_resolutions": ()}))) == 0
    with_attn = UNet(UNetConfig(**TINY))
    # level with side 8: one down block, two up blocks, plus the middle block = 4 blocks
    assert sum(isinstance(m, AttentionBlock) for m in with_attn.modules()) == 4
    # context alone brings attention into the middle block so the context is used
    assert attn_count(UNet(UNetConfig(**{**TINY, "attention_resolutions": (), "context_dim": 8}))) > 0


def test_resblock_updown_switch() -> None:
    with_rb = UNet(UNetConfig(**TINY))
    without = UNet(UNetConfig(**{**TINY, "resblock_updown": False}))
    assert any(isinstance(m, ResBlock) and m.down for m in with_rb.modules())
    assert not any(isinstance(m, ResBlock) and (m.down or m.up) for m in without.modules())


def test_side_not_divisible_is_an_input_error() -> None:
    net = make(channel_mults=(1, 2, 2), attention_resolutions=())
    with pytest.raises(InputError, match="divisible by 4"):
        net(randn(1, 3, 18, 16), torch.tensor([1]))
    with pytest.raises(InputError, match="in_channels|shape"):
        net(randn(1, 4, 16, 16), torch.tensor([1]))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"attention_resolutions": (12,)}, "sides"),
        ({"channel_mults": ()}, "channel_mults"),
        ({"image_size": 18, "channel_mults": (1, 2, 2)}, "divisible"),
        ({"dropout": 1.5}, "dropout"),
    ],
)
def test_bad_configs_raise(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        UNetConfig(**{**TINY, **overrides})


def test_config_json_round_trip() -> None:
    cfg = UNetConfig(**{**TINY, "context_dim": 12})
    back = config_from_dict(UNetConfig, json.loads(json.dumps(config_to_dict(cfg))))
    assert back == cfg
    # lists straight from JSON are normalised to tuples
    assert UNetConfig(**{**TINY, "channel_mults": [1, 2]}).channel_mults == (1, 2)
    assert dataclasses.asdict(back)["attention_resolutions"] == (8,)


def test_timestep_embedding() -> None:
    e = timestep_embedding(torch.tensor([0, 1, 100]), 16)
    assert e.shape == (3, 16) and e.dtype == torch.float32
    torch.testing.assert_close(e[0], torch.cat([torch.ones(8), torch.zeros(8)]))
    assert (e[1] - e[2]).abs().max() > 0.1
    assert timestep_embedding(torch.tensor([3]), 7).shape == (1, 7)


def test_group_norm_groups() -> None:
    assert group_norm(64).num_groups == 32
    assert group_norm(48).num_groups == 24
    assert group_norm(6).num_groups == 6


def test_gradients_reach_every_parameter() -> None:
    net = make(context_dim=12)
    y = net(randn(2, 3, 16, 16), torch.tensor([1, 2]), emb_extra=randn(2, net.emb_dim), context=randn(2, 3, 12))
    y.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert not missing


def test_channels_last_matches_contiguous() -> None:
    net = make()
    x, t = randn(2, 3, 16, 16), torch.tensor([1, 2])
    ref = net(x, t)
    net_cl = net.to(memory_format=torch.channels_last)
    out = net_cl(x.to(memory_format=torch.channels_last), t)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_recomputed_norm_activation_gives_the_stored_gradients():
    """ResBlock's GroupNorm -> SiLU chains are recomputed in backward (memory); the gradients
    must equal those of the plain, stored computation."""
    from unclip.nn.unet import ResBlock, _norm_modulate_silu, recompute_in_backward

    torch.manual_seed(0)
    block = ResBlock(32, 64, 16)
    torch.nn.init.normal_(block.conv_out.weight, std=0.05)  # the zero init would hide the branch
    x = torch.randn(2, 32, 8, 8, requires_grad=True)
    emb = torch.randn(2, 16)

    def plain(x: torch.Tensor) -> torch.Tensor:
        h = block.conv_in(torch.nn.functional.silu(block.norm_in(x)))
        e = block.emb_proj(torch.nn.functional.silu(emb))[:, :, None, None]
        h = _norm_modulate_silu(block.norm_out, h, e)
        return block.skip(x) + block.conv_out(h)

    out = block(x, emb)
    assert torch.allclose(out, plain(x), atol=1e-6)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, *block.parameters()], g)
    ref = torch.autograd.grad(plain(x), [x, *block.parameters()], g)
    for a, b in zip(grads, ref):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    # and it stores less: only the chain's input is kept
    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
        recompute_in_backward(torch.nn.functional.silu, x * 2)
    assert sizes == [x.numel()]
