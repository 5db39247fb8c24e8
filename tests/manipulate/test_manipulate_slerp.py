"""slerp and text_diff_direction: pure vector maths, no model."""

import math

import pytest
import torch

from unclip.errors import InputError
from unclip.manipulate import slerp, text_diff_direction, theta_schedule


def _angle(a, b):
    return torch.arccos(torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1, 1))


def _units(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return x / x.norm(dim=-1, keepdim=True)


def test_endpoints_batch():
    a, b = _units(5, 16, 0) * 2.0, _units(5, 16, 1) * 3.0
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-10)
    assert torch.allclose(slerp(a, b, 1.0), b, atol=1e-10)


def test_unit_norms_stay_unit():
    a, b = _units(7, 32, 2), _units(7, 32, 3)
    for t in (0.1, 0.37, 0.5, 0.9):
        assert torch.allclose(slerp(a, b, t).norm(dim=-1), torch.ones(7, dtype=torch.float64), atol=1e-10)


def test_norms_interpolate_linearly():
    a, b = _units(4, 8, 4) * 1.0, _units(4, 8, 5) * 5.0
    out = slerp(a, b, 0.25)
    assert torch.allclose(out.norm(dim=-1), torch.full((4,), 2.0, dtype=torch.float64), atol=1e-10)


def test_angle_is_proportional_to_theta():
    a, b = _units(6, 10, 6), _units(6, 10, 7)
    omega = _angle(a, b)
    for t in (0.2, 0.5, 0.8):
        out = slerp(a, b, t)
        assert torch.allclose(_angle(a, out), t * omega, atol=1e-8)
        assert torch.allclose(_angle(out, b), (1 - t) * omega, atol=1e-8)
        # stays in the plane of a and b: no component outside span(a, b)
        basis, _ = torch.linalg.qr(torch.stack([a, b], dim=-1))
        resid = out - (basis @ (basis.transpose(-1, -2) @ out.unsqueeze(-1))).squeeze(-1)
        assert resid.abs().max() < 1e-9


def test_known_2d_quarter_turn():
    a = torch.tensor([1.0, 0.0], dtype=torch.float64)
    b = torch.tensor([0.0, 1.0], dtype=torch.float64)
    out = slerp(a, b, 0.5)
    assert torch.allclose(out, torch.tensor([math.sqrt(0.5), math.sqrt(0.5)], dtype=torch.float64))
    # not lerp: lerp would give norm sqrt(0.5)
    assert abs(out.norm().item() - 1.0) < 1e-12


def test_tensor_theta_frames_and_per_row():
    a, b = _units(1, 12, 8)[0], _units(1, 12, 9)[0]
    thetas = theta_schedule(5)
    frames = slerp(a, b, thetas)
    assert frames.shape == (5, 12)
    for k, t in enumerate(thetas.tolist()):
        assert torch.allclose(frames[k], slerp(a, b, t), atol=1e-12)
    A, B = _units(3, 12, 10), _units(3, 12, 11)
    per_row = slerp(A, B, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    assert torch.allclose(per_row[0], A[0]) and torch.allclose(per_row[2], B[2])
    assert torch.allclose(per_row[1], slerp(A[1], B[1], 0.5))


def test_nearly_parallel_is_finite_and_between():
    a = _units(1, 8, 12)[0]
    b = a + 1e-9 * _units(1, 8, 13)[0]
    out = slerp(a, b, 0.5)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, a, atol=1e-8)
    assert torch.allclose(slerp(a, a, 0.3), a, atol=1e-12)


def test_opposite_vectors_are_deterministic_and_on_the_sphere():
    a = _units(1, 6, 14)[0]
    b = -a
    mid = slerp(a, b, 0.5)
    assert torch.isfinite(mid).all()
    assert abs(mid.norm().item() - 1.0) < 1e-10
    assert abs(torch.dot(mid, a).item()) < 1e-10  # a quarter of the way round: orthogonal to both ends
    assert torch.allclose(slerp(a, b, 1.0), b, atol=1e-10)
    assert torch.allclose(slerp(a, b, 0.25), slerp(a, b, 0.25))  # deterministic
    assert abs(_angle(a, slerp(a, b, 0.25)).item() - math.pi / 4) < 1e-8


def test_zero_vector_falls_back_to_lerp():
    a = torch.zeros(4, dtype=torch.float64)
    b = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    assert torch.allclose(slerp(a, b, 0.5), 0.5 * b)


def test_float32_and_bad_input():
    a, b = _units(2, 4, 15).float(), _units(2, 4, 16).float()
    assert slerp(a, b, 0.5).dtype == torch.float32
    with pytest.raises(InputError):
        slerp(torch.tensor([1.0]), torch.tensor([2.0]), 0.5)


def test_text_diff_direction():
    z_t, z_t0 = _units(3, 8, 17), _units(3, 8, 18)
    d = text_diff_direction(z_t, z_t0)
    assert torch.allclose(d.norm(dim=-1), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(d, (z_t - z_t0) / (z_t - z_t0).norm(dim=-1, keepdim=True))
    with pytest.raises(InputError, match="same CLIP text embedding"):
        text_diff_direction(z_t, z_t)


def test_theta_schedule():
    assert theta_schedule(5, 0.5).tolist() == [0.0, 0.125, 0.25, 0.375, 0.5]
    with pytest.raises(InputError):
        theta_schedule(1)
