"""The unCLIP decoder network: conditioning paths, guidance keep flags, variants, size, trainability."""

from __future__ import annotations

import json

import pytest
import torch

from unclip.decoder import Decoder, DecoderConfig
from unclip.errors import ConfigError, InputError
from unclip.storage.checkpoint import config_from_dict, config_to_dict

TINY = dict(
    image_size=16,
    base_channels=16,
    channel_mults=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(8,),
    head_channels=8,
    clip_embed_dim=16,
    num_clip_tokens=4,
    vocab_size=50,
    context_length=8,
    text_width=32,
    text_depth=1,
    text_heads=2,
)
B = 3


def perturb(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Add noise to every weight so the zero-initialised branches stop being exact zeros."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def make(**overrides) -> Decoder:
    torch.manual_seed(0)
    return perturb(Decoder(DecoderConfig(**{**TINY, **overrides})))


def inputs(seed: int = 0, b: int = B) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, TINY["vocab_size"], (b, 6), generator=g)
    tokens[0, 4:] = 0  # a padded caption
    return {
        "x_t": torch.randn(b, 3, 16, 16, generator=g),
        "t": torch.randint(0, 1000, (b,), generator=g),
        "image_embed": torch.randn(b, TINY["clip_embed_dim"], generator=g),
        "text_tokens": tokens,
        "image_keep": torch.ones(b, dtype=torch.bool),
        "text_keep": torch.ones(b, dtype=torch.bool),
    }


def differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).abs().max() > 1e-3)


@pytest.mark.parametrize(
    "overrides, size, channels",
    [
        ({}, 16, 3),
        ({"learned_variance": True}, 16, 6),
        ({"use_image_embed": False}, 16, 3),
        ({"use_text": False}, 8, 3),
        ({"num_clip_tokens": 0, "attention_resolutions": ()}, 16, 3),
    ],
)
def test_output_shape(overrides: dict, size: int, channels: int) -> None:
    net = make(**overrides)
    kw = inputs()
    kw["x_t"] = kw["x_t"][..., :size, :size]
    y = net(**kw)
    assert y.shape == (B, channels, size, size)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()


def test_image_embed_and_text_influence_output() -> None:
    net = make()
    kw = inputs()
    ref = net(**kw)
    assert differs(net(**{**kw, "image_embed": inputs(1)["image_embed"]}), ref)
    assert differs(net(**{**kw, "text_tokens": inputs(1)["text_tokens"]}), ref)


def test_image_embed_reaches_both_paths() -> None:
    """z_i enters through the timestep embedding and through the 4 context tokens (section 2.1)."""
    net = make()
    kw = inputs()
    other = {**kw, "image_embed": inputs(1)["image_embed"]}
    with torch.no_grad():
        net.image_to_tokens.weight.zero_()
        net.image_to_tokens.bias.zero_()
    assert differs(net(**kw), net(**other))  # time-embedding path alone
    net = make()
    with torch.no_grad():
        net.image_to_emb.weight.zero_()
    assert differs(net(**kw), net(**other))  # context-token path alone


def test_image_keep_false_ignores_image_embed() -> None:
    net = make()
    kw = inputs()
    keep = torch.tensor([False, True, False])
    a = net(**{**kw, "image_keep": keep})
    b = net(**{**kw, "image_keep": keep, "image_embed": inputs(1)["image_embed"]})
    torch.testing.assert_close(a[~keep], b[~keep], atol=1e-5, rtol=0)
    assert differs(a[keep], b[keep])
    assert differs(a, net(**kw))  # dropping z_i does change the output


def test_text_keep_false_ignores_text_tokens() -> None:
    net = make()
    kw = inputs()
    keep = torch.tensor([True, False, False])
    other_tokens = inputs(1)["text_tokens"]
    other_tokens[2, 1:] = 0  # also a different length
    a = net(**{**kw, "text_keep": keep})
    b = net(**{**kw, "text_keep": keep, "text_tokens": other_tokens})
    torch.testing.assert_close(a[~keep], b[~keep], atol=1e-5, rtol=0)
    assert differs(a[keep], b[keep])
    assert differs(a, net(**kw))


def test_fully_unconditional_rows_agree() -> None:
    """With both flags False, two examples with the same x_t and t get the same output."""
    net = make()
    kw = inputs()
    kw["x_t"] = kw["x_t"][:1].expand(B, -1, -1, -1).contiguous()
    kw["t"] = kw["t"][:1].expand(B).contiguous()
    off = torch.zeros(B, dtype=torch.bool)
    y = net(**{**kw, "image_keep": off, "text_keep": off})
    torch.testing.assert_close(y[0], y[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(y[0], y[2], atol=1e-5, rtol=0)


def test_padding_tokens_are_ignored() -> None:
    """Padding is masked, so extra trailing padding does not change the output."""
    net = make()
    kw = inputs()
    padded = torch.cat([kw["text_tokens"], torch.zeros(B, 2, dtype=torch.long)], dim=1)
    torch.testing.assert_close(net(**kw), net(**{**kw, "text_tokens": padded}), atol=1e-5, rtol=1e-4)


def test_batch_independence() -> None:
    net = make()
    kw = inputs()
    a = net(**kw)
    other = inputs(5)
    kw2 = {k: v.clone() for k, v in kw.items()}
    for k in ("x_t", "t", "image_embed", "text_tokens"):
        kw2[k][1:] = other[k][1:]
    kw2["text_keep"][2] = False
    b = net(**kw2)
    torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=0)
    assert differs(a[1:], b[1:])


def test_text_only_variant_ignores_image_embed() -> None:
    net = make(use_image_embed=False)
    assert not hasattr(net, "null_image_embed")
    kw = inputs()
    torch.testing.assert_close(net(**kw), net(**{**kw, "image_embed": None}))
    assert differs(net(**kw), net(**{**kw, "text_tokens": inputs(1)["text_tokens"]}))


def test_image_only_variant_has_no_text_encoder() -> None:
    net = make(use_text=False)
    assert not hasattr(net, "text_encoder")
    kw = inputs()
    torch.testing.assert_close(net(**kw), net(**{**kw, "text_tokens": None, "text_keep": None}))
    assert differs(net(**kw), net(**{**kw, "image_embed": inputs(1)["image_embed"]}))


def test_keep_flags_default_to_true() -> None:
    net = make()
    kw = inputs()
    torch.testing.assert_close(net(**kw), net(**{**kw, "image_keep": None, "text_keep": None}))


def test_bad_inputs_name_the_argument() -> None:
    net = make()
    kw = inputs()
    with pytest.raises(InputError, match="image_embed"):
        net(**{**kw, "image_embed": torch.zeros(B, 5)})
    with pytest.raises(InputError, match="context_length"):
        net(**{**kw, "text_tokens": torch.ones(B, 20, dtype=torch.long)})
    with pytest.raises(InputError, match="vocab|ids"):
        net(**{**kw, "text_tokens": torch.full((B, 4), 999)})
    with pytest.raises(InputError, match="text_keep"):
        net(**{**kw, "text_keep": torch.ones(B + 1, dtype=torch.bool)})
    with pytest.raises(InputError, match="text_tokens"):
        net(**{**kw, "text_tokens": None})
    with pytest.raises(ConfigError, match="pad_token_id"):
        DecoderConfig(**{**TINY, "pad_token_id": 50})


def test_config_json_round_trip() -> None:
    cfg = DecoderConfig(**{**TINY, "learned_variance": True})
    back = config_from_dict(DecoderConfig, json.loads(json.dumps(config_to_dict(cfg))))
    assert back == cfg
    torch.manual_seed(0)
    a = Decoder(cfg)
    b = Decoder(back)
    b.load_state_dict(a.state_dict())
    kw = inputs()
    torch.testing.assert_close(perturb(a)(**kw), perturb(b)(**kw))


def test_small_32px_config_size() -> None:
    """The default config is the '32 px small' decoder; its size is pinned so changes are deliberate."""
    net = Decoder(DecoderConfig())
    n = sum(p.numel() for p in net.parameters())
    assert 5e6 < n < 12e6, n
    assert net.unet.config.image_size == 32


def test_overfits_fixed_target() -> None:
    """A tiny decoder learns to map fixed conditioned inputs to a fixed target in 60 steps."""
    torch.manual_seed(0)
    net = Decoder(DecoderConfig(**TINY)).train()
    kw = inputs()
    kw["x_t"] = kw["x_t"][..., :8, :8]  # 8 px keeps the test fast; the net runs at any even side
    kw["image_keep"] = torch.tensor([True, False, True])
    target = torch.randn(B, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = (net(**kw) - target).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0], (losses[0], losses[-1])
