"""The AR prior network, its code book and its sampler (paper section 2.2)."""

import pytest
import torch
import torch.nn.functional as F
from ar_synthetic import E, synthetic_training_set, text_batch, tiny_prior

from unclip.prior.ar_prior import sample_ar_codes, sample_ar_image_embeds, sample_dot_codes
from unclip.prior.pca import PCA


def test_value_features_add_a_gaussian_term_over_bucket_values(data):
    model = tiny_prior(data).eval()
    torch.nn.init.normal_(model.value_out.weight, std=0.5)
    h = torch.randn(2, 3, 32, generator=torch.Generator().manual_seed(0))
    free = model.head(h)
    mu, log_sigma = model.value_out(h).unbind(-1)
    values = model.bucket_values[1:4] / model.coeff_scale[1:4, None]
    expected = free - 0.5 * ((values - mu[..., None]) / log_sigma.exp()[..., None]) ** 2
    assert torch.allclose(model._logits(h, first=1), expected, atol=1e-5)
    assert torch.allclose(model.coeff_scale**2, PCA.fit(data.image_embeds).eigenvalues[:6], rtol=1e-4)
    plain = tiny_prior(data, value_features=False)
    assert not hasattr(plain, "value_out") and torch.equal(plain._logits(h), plain.head(h))


def test_buffers_hold_pca_and_quantile_edges(data):
    model = tiny_prior(data)
    pca = PCA.fit(data.image_embeds)
    assert torch.allclose(model.pca_components, pca.components[:6].float())
    coeffs = pca.project(data.image_embeds, 6)
    # Quantile edges: every bucket holds about N / B training values.
    codes = model.quantize(coeffs)
    counts = torch.stack([torch.bincount(codes[:, j], minlength=32) for j in range(6)])
    assert counts.min() >= 512 // 32 - 2 and counts.max() <= 512 // 32 + 2
    assert torch.all(model.bucket_edges[:, 1:] >= model.bucket_edges[:, :-1])
    assert torch.all(model.dot_edges[1:] >= model.dot_edges[:-1])
    assert abs(float(model.dot_probs.sum()) - 1.0) < 1e-6
    names = set(model.state_dict())
    assert {"pca_mean", "pca_components", "bucket_edges", "bucket_values", "dot_edges", "dot_probs"} <= names


def test_quantize_dequantize_error_bounded_by_bucket_width(data):
    model = tiny_prior(data)
    coeffs = (data.image_embeds - model.pca_mean) @ model.pca_components.T
    codes = model.quantize(coeffs)
    assert codes.min() >= 0 and codes.max() < 32
    back = model.dequantize(codes)
    k = torch.arange(6)
    width = model.bucket_edges[k, codes + 1] - model.bucket_edges[k, codes]
    err = (back - coeffs).abs()
    assert torch.all(err <= width + 1e-6)
    # and it is much smaller than the coefficients' spread
    assert err.mean() < 0.1 * coeffs.std(0).mean()
    # Decoding the codes lands close to the original embedding.
    cos = (model.decode(codes) * data.image_embeds).sum(-1)
    assert cos.mean() > 0.97


@pytest.mark.parametrize("value_features", [True, False])
def test_transformer_is_causal(data, value_features):
    model = tiny_prior(data, value_features=value_features).eval()
    te, tt, tm = text_batch(data, [0, 1])
    keep = torch.ones(2, dtype=torch.bool)
    dot = torch.tensor([3, 5])
    codes = torch.randint(0, 32, (2, 5), generator=torch.Generator().manual_seed(0))
    base = model(te, tt, tm, keep, dot, codes)
    assert base.shape == (2, 6, 32)
    changed = codes.clone()
    changed[:, 2] = (changed[:, 2] + 7) % 32
    out = model(te, tt, tm, keep, dot, changed)
    # logits index j predict code j from codes < j: indices 0..2 must not see code 2.
    assert torch.allclose(out[:, :3], base[:, :3], atol=1e-6)
    assert not torch.allclose(out[:, 3:], base[:, 3:], atol=1e-4)


def test_dropped_text_ignores_the_caption(data):
    model = tiny_prior(data).eval()
    codes = torch.randint(0, 32, (2, 5), generator=torch.Generator().manual_seed(0))
    drop = torch.zeros(2, dtype=torch.bool)
    a = model(*text_batch(data, [0, 0]), drop, torch.tensor([1, 1]), codes)
    b = model(*text_batch(data, [3, 4]), drop, torch.tensor([7, 2]), codes)
    assert torch.allclose(a, b, atol=1e-6)
    c = model(*text_batch(data, [3, 4]), ~drop, torch.tensor([7, 2]), codes)
    assert not torch.allclose(a, c, atol=1e-4)


@pytest.mark.parametrize("guidance,value_features", [(1.0, True), (2.5, True), (2.5, False)])
def test_kv_cached_sampling_matches_full_recomputation(data, guidance, value_features):
    model = tiny_prior(data, value_features=value_features).eval()
    if value_features:  # make the value-feature paths matter (they start at zero)
        torch.nn.init.normal_(model.value_out.weight, std=0.5)
    te, tt, tm = text_batch(data, [0, 1, 2])
    dot = torch.tensor([4, 5, 7])
    g = torch.Generator().manual_seed(3)
    codes, logits = sample_ar_codes(
        model, te, tt, tm, dot_codes=dot, guidance_scale=guidance, generator=g, return_logits=True
    )
    assert codes.shape == (3, 6) and logits.shape == (3, 6, 32)
    with torch.no_grad():
        ones = torch.ones(3, dtype=torch.bool)
        cond = F.log_softmax(model(te, tt, tm, ones, dot, codes[:, :-1]), dim=-1)
        uncond = F.log_softmax(model(te, tt, tm, ~ones, dot, codes[:, :-1]), dim=-1)
    full = uncond + guidance * (cond - uncond) if guidance != 1.0 else cond
    assert torch.allclose(logits, full, atol=1e-4)


def test_dot_codes_come_from_the_top_half(data):
    model = tiny_prior(data)
    model.dot_probs.fill_(1 / 8)
    codes = sample_dot_codes(model, 2000, generator=torch.Generator().manual_seed(0))
    assert codes.min() >= 4 and set(codes.tolist()) == {4, 5, 6, 7}
    model.dot_probs.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.6, 0.2, 0.2]))
    codes = sample_dot_codes(model, 4000, generator=torch.Generator().manual_seed(0))
    # median lies inside bucket 5: 0.1 of its 0.6 lies above it -> weights 0.1, 0.2, 0.2
    frac5 = float((codes == 5).float().mean())
    assert codes.min() >= 5 and abs(frac5 - 0.2) < 0.04


def test_sampling_is_seeded_and_unit_norm(data):
    model = tiny_prior(data).eval()
    te, tt, tm = text_batch(data, [0, 1, 2, 3])
    a = sample_ar_image_embeds(model, te, tt, tm, guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
    b = sample_ar_image_embeds(model, te, tt, tm, guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
    c = sample_ar_image_embeds(model, te, tt, tm, guidance_scale=2.0, generator=torch.Generator().manual_seed(1))
    assert a.shape == (4, E) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert torch.allclose(a.norm(dim=-1), torch.ones(4), atol=1e-5)


def test_low_temperature_is_near_greedy(data):
    model = tiny_prior(data).eval()
    te, tt, tm = text_batch(data, [0, 0])
    dot = torch.tensor([6, 6])
    a = sample_ar_codes(model, te, tt, tm, dot_codes=dot, temperature=1e-4, generator=torch.Generator().manual_seed(0))
    b = sample_ar_codes(model, te, tt, tm, dot_codes=dot, temperature=1e-4, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b) and torch.equal(a[0], a[1])
    with pytest.raises(Exception, match="temperature"):
        sample_ar_codes(model, te, tt, tm, temperature=0.0)


def test_too_many_text_tokens_is_an_error():
    data = synthetic_training_set(n=64)
    model = tiny_prior(data)
    te, tt, tm = text_batch(data, [0])
    with pytest.raises(Exception, match="context_length"):
        model(
            te,
            torch.cat([tt, tt], 1),
            torch.cat([tm, tm], 1),
            torch.ones(1, dtype=torch.bool),
            torch.tensor([0]),
            torch.zeros(1, 2, dtype=torch.long),
        )
