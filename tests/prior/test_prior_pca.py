"""PCA of image embeddings (the AR prior's first step, paper section 2.2)."""

import torch

from unclip.prior.pca import PCA


def _known_spectrum(n=4000, seed=0):
    """Data whose covariance has eigenvalues exactly ``ev`` along a random rotation."""
    g = torch.Generator().manual_seed(seed)
    ev = torch.tensor([50.0, 20.0, 10.0, 5.0, 2.0, 0.5, 0.3, 0.2], dtype=torch.float64)
    e = ev.numel()
    white = torch.randn(n, e, generator=g, dtype=torch.float64)
    white = white - white.mean(0)
    # Exactly whiten the sample so its covariance (normalised by N) is the identity.
    cov = white.T @ white / n
    white = white @ torch.linalg.inv(torch.linalg.cholesky(cov)).T
    rot, _ = torch.linalg.qr(torch.randn(e, e, generator=g, dtype=torch.float64))
    mean = torch.randn(e, generator=g, dtype=torch.float64)
    return (white * ev.sqrt()) @ rot.T + mean, ev, rot, mean


def test_fit_recovers_known_spectrum_in_decreasing_order():
    x, ev, rot, mean = _known_spectrum()
    pca = PCA.fit(x)
    assert torch.allclose(pca.eigenvalues, ev, atol=1e-8)
    assert torch.all(pca.eigenvalues[:-1] >= pca.eigenvalues[1:])
    assert torch.allclose(pca.mean, x.mean(0))
    # Each recovered axis matches the true one up to sign.
    assert torch.allclose((pca.components @ rot).abs(), torch.eye(8, dtype=torch.float64), atol=1e-6)
    # Variance of the projections equals the eigenvalues, so the ordering is the real one.
    var = pca.project(x).var(0, unbiased=False)
    assert torch.allclose(var, ev, atol=1e-8)


def test_reconstruction_exact_with_all_components():
    g = torch.Generator().manual_seed(1)
    x = torch.nn.functional.normalize(torch.randn(300, 16, generator=g), dim=-1)
    pca = PCA.fit(x)
    assert torch.allclose(pca.reconstruct(pca.project(x)), x, atol=1e-5)
    # Fewer components: a real (non-zero) error.
    assert (pca.reconstruct(pca.project(x, 4)) - x).pow(2).sum(-1).mean() > 1e-3


def test_one_percent_rule_on_known_spectrum():
    x, ev, _, _ = _known_spectrum()
    pca = PCA.fit(x)
    # Total 88. Relative MSE keeping k: k=4 -> 3.0/88 = 3.4%, k=5 -> 1.0/88 = 1.14%, k=6 -> 0.5/88 = 0.57%.
    assert pca.num_components_for(0.01) == 6
    assert pca.num_components_for(0.02) == 5
    assert pca.num_components_for(0.05) == 4
    # The stated definition: measured mean squared reconstruction error over total variance.
    for k in (4, 5, 6):
        recon = pca.reconstruct(pca.project(x, k))
        mse = (recon - x).pow(2).sum(-1).mean()
        total = (x - x.mean(0)).pow(2).sum(-1).mean()
        assert abs(float(mse / total) - float(pca.relative_errors()[k])) < 1e-8
        assert abs(float(mse) - float(ev[k:].sum())) < 1e-6


def test_save_load_round_trip(tmp_path):
    x, _, _, _ = _known_spectrum(n=200)
    pca = PCA.fit(x.float())
    pca.save(tmp_path / "pca.safetensors")
    back = PCA.load(tmp_path / "pca.safetensors")
    for a, b in zip(pca.state_dict().values(), back.state_dict().values()):
        assert torch.equal(a, b)
