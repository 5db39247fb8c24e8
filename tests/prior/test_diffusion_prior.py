"""The diffusion prior (unCLIP section 2.2) against its specification (issue 16, item 3).

- the transformer sees [text tokens, z_t, timestep, noised z_i, final query], in that order;
- attention is causal: a token never depends on later ones, the final query on all;
- the network predicts x0 (the clean scaled z_i), and training regresses it with an MSE;
- a dropped caption (classifier-free guidance) is replaced by the learned null values;
- sampling keeps, of ``best_of`` candidates per caption, the one with the largest z_i . z_t.

Each test is built so that it fails if the property is broken (a swapped order, a missing
mask, an eps target, a wrong candidate grouping).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from unclip.data.embeddings import TextTable, TrainingSet
from unclip.diffusion import GaussianDiffusion
from unclip.nn.layers import timestep_embedding
from unclip.prior.diffusion_prior import (
    DiffusionPrior,
    DiffusionPriorConfig,
    sample_image_embeds,
)
from unclip.train.stages import PriorStage

E, W, L = 8, 12, 5  # embed dim, text width, context length


def _prior(seed: int = 0, **kw) -> DiffusionPrior:
    torch.manual_seed(seed)
    config = DiffusionPriorConfig(
        embed_dim=E, text_width=W, context_length=L, width=32, depth=2, heads=4, num_timesteps=50, **kw
    )
    return DiffusionPrior(config).eval()


def _inputs(b: int = 2, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, L, dtype=torch.bool)
    mask[0, 3:] = False  # a shorter caption in the first row
    return {
        "x_t": torch.randn(b, E, generator=g),
        "t": torch.tensor([7, 31][:b] + [3] * max(0, b - 2)),
        "text_embed": nn.functional.normalize(torch.randn(b, E, generator=g), dim=-1),
        "text_tokens": torch.randn(b, L, W, generator=g),
        "text_mask": mask,
        "text_keep": torch.ones(b, dtype=torch.bool),
    }


def _run(prior: DiffusionPrior, inp: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(output, transformer input sequence, transformer output sequence) of one forward."""
    seen = {}

    def hook(module, args, kwargs, out):
        seen["seq"], seen["h"], seen["kwargs"] = args[0], out, kwargs

    handle = prior.transformer.register_forward_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            out = prior(**inp)
    finally:
        handle.remove()
    assert seen["kwargs"]["causal"] is True
    return out, seen["seq"], seen["h"]


# ---------------------------------------------------------------- token order


def test_sequence_is_text_tokens_then_zt_timestep_noised_zi_final_query() -> None:
    prior, inp = _prior(), _inputs()
    _, seq, _ = _run(prior, inp)
    assert seq.shape == (2, L + 4, 32)
    pos = prior.positions[: L + 4]
    with torch.no_grad():
        expected = (
            torch.cat(
                [
                    prior.text_token_proj(inp["text_tokens"]),
                    prior.text_embed_proj(inp["text_embed"] * math.sqrt(E))[:, None],
                    prior.time_mlp(timestep_embedding(inp["t"], 32))[:, None],
                    prior.image_embed_proj(inp["x_t"])[:, None],
                    prior.final_query.expand(2, 1, -1),
                ],
                dim=1,
            )
            + pos
        )
    assert torch.allclose(seq, expected, atol=1e-6)


def test_output_is_read_at_the_final_query() -> None:
    prior, inp = _prior(), _inputs()
    out, _, h = _run(prior, inp)
    with torch.no_grad():
        assert torch.allclose(out, prior.out(h[:, -1]), atol=1e-6)
        assert not torch.allclose(out, prior.out(h[:, -2]), atol=1e-3)


def test_permuting_real_text_tokens_changes_the_prediction() -> None:
    """Order matters (positions + causal mask): the prior is not a bag of tokens."""
    prior, inp = _prior(), _inputs()
    out, _, _ = _run(prior, inp)
    swapped = dict(inp, text_tokens=inp["text_tokens"][:, [1, 0, 2, 3, 4]])
    out2, _, _ = _run(prior, swapped)
    assert (out - out2).abs().max() > 1e-4


def test_every_input_reaches_the_prediction() -> None:
    prior, inp = _prior(), _inputs()
    out, _, _ = _run(prior, inp)
    changes = {
        "x_t": inp["x_t"] + 1.0,
        "t": inp["t"] + 5,
        "text_embed": nn.functional.normalize(inp["text_embed"] + 0.5, dim=-1),
        "text_tokens": inp["text_tokens"] + 0.5,
    }
    for name, value in changes.items():
        other, _, _ = _run(prior, dict(inp, **{name: value}))
        assert (out - other).abs().max() > 1e-4, f"changing {name} did not change the prediction"


# ---------------------------------------------------------------- causal mask


def _first_changed_position(prior: DiffusionPrior, inp: dict, name: str, value: torch.Tensor) -> int:
    _, _, h = _run(prior, inp)
    _, _, h2 = _run(prior, dict(inp, **{name: value}))
    changed = (h - h2).abs().amax(dim=(0, 2)) > 1e-6  # (L + 4,)
    return int(changed.nonzero()[0])


def test_attention_is_causal_over_the_sequence() -> None:
    """Changing an input changes the hidden states at its own position and later ones only."""
    prior, inp = _prior(), _inputs()
    _, _, h = _run(prior, inp)
    # z_i sits at L + 2: the text tokens, z_t and the timestep must not see it.
    for name, value, position in (
        ("x_t", inp["x_t"] + 1.0, L + 2),
        ("t", inp["t"] + 5, L + 1),
        ("text_embed", nn.functional.normalize(inp["text_embed"] + 0.5, dim=-1), L),
    ):
        _, _, h2 = _run(prior, dict(inp, **{name: value}))
        diff = (h - h2).abs().amax(dim=(0, 2))
        assert diff[:position].max() < 1e-6, f"{name} leaked into earlier positions: {diff.tolist()}"
        assert diff[position:].min() > 1e-5, f"{name} did not reach positions >= {position}: {diff.tolist()}"


def test_later_text_token_does_not_change_earlier_ones() -> None:
    prior, inp = _prior(), _inputs()
    tokens = inp["text_tokens"].clone()
    tokens[:, 2] += 1.0
    assert _first_changed_position(prior, inp, "text_tokens", tokens) == 2


def test_padding_tokens_are_not_attended() -> None:
    """Row 0 masks tokens 3 and 4: what they hold must not reach the prediction."""
    prior, inp = _prior(), _inputs()
    out, _, _ = _run(prior, inp)
    tokens = inp["text_tokens"].clone()
    tokens[0, 3:] = 100.0
    out2, _, _ = _run(prior, dict(inp, text_tokens=tokens))
    assert torch.allclose(out[0], out2[0], atol=1e-5)


# ---------------------------------------------------------------- null text conditioning


def test_dropped_caption_uses_the_null_values_only() -> None:
    prior, inp = _prior(), _inputs()
    drop = dict(inp, text_keep=torch.tensor([False, True]))
    out, _, _ = _run(prior, drop)
    other = dict(
        drop,
        text_tokens=torch.randn(2, L, W),
        text_embed=nn.functional.normalize(torch.randn(2, E), dim=-1),
        text_mask=torch.ones(2, L, dtype=torch.bool),
    )
    out2, _, _ = _run(prior, other)
    assert torch.allclose(out[0], out2[0], atol=1e-5)  # the dropped row ignores its caption
    assert (out[1] - out2[1]).abs().max() > 1e-4  # the kept row does not
    with torch.no_grad():
        # A random change: a constant shift of every coordinate would vanish in the LayerNorms.
        prior.null_text_embed.add_(torch.randn(32, generator=torch.Generator().manual_seed(2)))
    out3, _, _ = _run(prior, drop)
    assert (out[0] - out3[0]).abs().max() > 1e-4  # ...and depends on the learned null values


def test_guided_sampling_pairs_conditional_and_null_halves() -> None:
    """Guidance scale 0 is the unconditional model: it must equal sampling with the caption dropped."""
    prior = _prior()
    inp = _inputs()
    args = (inp["text_embed"], inp["text_tokens"], inp["text_mask"])

    class Dropped(nn.Module):
        def __init__(self, inner: DiffusionPrior) -> None:
            super().__init__()
            self.inner, self.config = inner, inner.config

        def make_diffusion(self) -> GaussianDiffusion:
            return self.inner.make_diffusion()

        def forward(self, x_t, t, text_embed, text_tokens, text_mask, text_keep):
            return self.inner(x_t, t, text_embed, text_tokens, text_mask, torch.zeros_like(text_keep))

    kw = {"steps": 5, "best_of": 1}

    def run(model: nn.Module, scale: float) -> torch.Tensor:
        return sample_image_embeds(model, *args, guidance_scale=scale, generator=torch.Generator().manual_seed(0), **kw)

    unguided, scale0, cond = run(Dropped(prior), 1.0), run(prior, 0.0), run(prior, 1.0)
    assert torch.allclose(unguided, scale0, atol=1e-5)
    assert (cond - scale0).abs().max() > 1e-4


def test_training_drops_the_caption_at_the_configured_rate(data_for_stage) -> None:
    prior = _prior(text_drop_prob=0.5)
    keeps = []
    handle = prior.register_forward_pre_hook(lambda m, args: keeps.append(args[5].clone()))
    stage = PriorStage(prior, data_for_stage, batch_size=256)
    g = torch.Generator().manual_seed(0)
    stage.loss(stage.get_batch(0, g), g)
    handle.remove()
    rate = 1.0 - keeps[0].float().mean().item()
    assert 0.4 < rate < 0.6


# ---------------------------------------------------------------- x0 target


@pytest.fixture
def data_for_stage() -> TrainingSet:
    g = torch.Generator().manual_seed(5)
    n, u = 300, 4
    text = TextTable(
        captions=[f"c{i}" for i in range(u)],
        token_ids=torch.zeros(u, L, dtype=torch.long),
        text_embeds=nn.functional.normalize(torch.randn(u, E, generator=g), dim=-1),
        token_encodings=torch.randn(u, L, W, generator=g).half(),
        token_mask=torch.ones(u, L, dtype=torch.bool),
    )
    return TrainingSet(
        images=torch.zeros(n, 3, 1, 1, dtype=torch.uint8),
        caption_ids=torch.arange(n) % u,
        captions=text.captions,
        image_embeds=nn.functional.normalize(torch.randn(n, E, generator=g), dim=-1),
        text=text,
    )


def test_prior_diffusion_predicts_x0() -> None:
    assert _prior().make_diffusion().prediction == "x0"


def test_training_loss_regresses_the_clean_scaled_embedding(data_for_stage: TrainingSet) -> None:
    """A network that outputs sqrt(E) z_i exactly has zero loss; x_t is q_sample of that target."""
    prior = _prior()
    stage = PriorStage(prior, data_for_stage, batch_size=16)
    g = torch.Generator().manual_seed(3)
    index = stage.get_batch(0, g)
    target = data_for_stage.image_embeds[index] * math.sqrt(E)
    seen = {}

    def oracle(x_t, t, *rest):
        seen["x_t"], seen["t"] = x_t, t
        return target.clone().requires_grad_()

    prior.forward = oracle  # instance attribute: the stage calls self.model(...)
    state = g.get_state()
    loss, metrics = stage.loss(index, g)
    assert loss.item() == pytest.approx(0.0, abs=1e-10)
    assert float(metrics["cos"]) == pytest.approx(1.0, abs=1e-6)
    # Replay the stage's draws (t, then noise) to check x_t = q_sample(sqrt(E) z_i, t, noise).
    g.set_state(state)
    t = torch.randint(0, stage.diffusion.num_timesteps, (16,), generator=g)
    noise = torch.randn(target.shape, generator=g)
    assert torch.equal(seen["t"], t)
    assert torch.allclose(seen["x_t"], stage.diffusion.q_sample(target, t, noise), atol=1e-6)


class _ConstantX0(nn.Module):
    """A stand-in prior that predicts the same clean embedding whatever it is given."""

    def __init__(self, x0: torch.Tensor) -> None:
        super().__init__()
        self.x0, self.config = x0, DiffusionPriorConfig(embed_dim=E, num_timesteps=50)

    def make_diffusion(self) -> GaussianDiffusion:
        return DiffusionPrior.make_diffusion(self)

    def forward(self, x_t, t, **cond):
        return self.x0.expand(x_t.shape[0], -1)


def test_sampling_reads_the_output_as_x0() -> None:
    """If the network always says x0 = c, the sample is c / |c| (an eps reading would give noise)."""
    c = torch.randn(1, E, generator=torch.Generator().manual_seed(9)) * math.sqrt(E)
    inp = _inputs(b=1)
    for method in ("ddim", "ddpm"):
        eta = 0.0 if method == "ddim" else None
        z = sample_image_embeds(
            _ConstantX0(c),
            inp["text_embed"],
            inp["text_tokens"],
            inp["text_mask"],
            steps=6,
            best_of=1,
            method=method,
            eta=eta,
            generator=torch.Generator().manual_seed(0),
        )
        assert torch.allclose(z, nn.functional.normalize(c, dim=-1), atol=1e-5), method


# ---------------------------------------------------------------- best of N


class _Identity(nn.Module):
    """x0 = x_t: DDIM then only rescales x_T by positive factors, so each candidate is x_T / |x_T|."""

    def __init__(self) -> None:
        super().__init__()
        self.config = DiffusionPriorConfig(embed_dim=E, num_timesteps=50)

    def make_diffusion(self) -> GaussianDiffusion:
        return DiffusionPrior.make_diffusion(self)

    def forward(self, x_t, t, **cond):
        return x_t


@pytest.mark.parametrize("best_of", [1, 3, 8])
def test_best_of_n_keeps_the_candidate_closest_to_zt(best_of: int) -> None:
    b = 3
    inp = _inputs(b=b, seed=4)
    z_t = inp["text_embed"]
    z = sample_image_embeds(
        _Identity(),
        z_t,
        inp["text_tokens"],
        inp["text_mask"],
        steps=4,
        best_of=best_of,
        generator=torch.Generator().manual_seed(11),
    )
    # The candidates: x_T drawn from the same generator, b * best_of rows, caption-major.
    x_T = torch.randn(b * best_of, E, generator=torch.Generator().manual_seed(11))
    candidates = nn.functional.normalize(x_T, dim=-1).view(b, best_of, E)
    scores = (candidates * z_t[:, None]).sum(-1)
    expected = candidates[torch.arange(b), scores.argmax(1)]
    assert torch.allclose(z, expected, atol=1e-5)
    assert torch.allclose(z.norm(dim=-1), torch.ones(b), atol=1e-6)
    if best_of > 1:  # a wrong choice (e.g. the first, or the worst) would differ here
        assert not torch.allclose(z, candidates[:, 0], atol=1e-5) or bool((scores.argmax(1) == 0).all())
        assert bool(((z * z_t).sum(-1) >= scores.max(1).values - 1e-5).all())


def test_best_of_rejects_zero() -> None:
    inp = _inputs(b=1)
    with pytest.raises(ValueError, match="best_of"):
        sample_image_embeds(_Identity(), inp["text_embed"], inp["text_tokens"], inp["text_mask"], steps=2, best_of=0)


def test_text_prefix_cache_equals_the_full_forward():
    """Sampling runs the text tokens and z_t once (TextPrefixCache); with padding, dropped
    captions and several steps it must give the full forward's outputs."""
    from unclip.prior.diffusion_prior import TextPrefixCache

    torch.manual_seed(0)
    prior = DiffusionPrior(
        DiffusionPriorConfig(embed_dim=16, text_width=8, context_length=10, width=32, depth=3, heads=4)
    )
    prior.eval()
    b = 5
    text_embed = torch.nn.functional.normalize(torch.randn(b, 16), dim=-1)
    tokens, mask = torch.randn(b, 10, 8), torch.ones(b, 10, dtype=torch.bool)
    mask[:, 6:] = False
    mask[0, 3:] = False
    keep = torch.tensor([True, True, False, True, False])
    cached = TextPrefixCache(prior)
    with torch.no_grad():
        for step in range(3):
            x, t = torch.randn(b, 16), torch.full((b,), 900 - 300 * step)
            full = prior(x, t, text_embed, tokens, mask, keep)
            assert torch.allclose(cached(x, t, text_embed, tokens, mask, keep), full, atol=1e-5)
        # a new conditioning is noticed, not served from the old prefix
        other = torch.nn.functional.normalize(torch.randn(b, 16), dim=-1)
        assert torch.allclose(
            cached(x, t, other, tokens, mask, keep), prior(x, t, other, tokens, mask, keep), atol=1e-5
        )
    assert cached._prefix.cache.length(0) == 11  # the fixed prefix never grows
