"""The BSR degradation model (BSRGAN, Zhang et al. 2021): one test per step, plans, and the pipeline."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from unclip.errors import InputError
from unclip.upsampler import camera as C
from unclip.upsampler.bsr import (
    BSR_LIGHT,
    BSRConfig,
    Step,
    add_noise,
    apply_plan,
    blur_nearest_downsample,
    bsr_degradation,
    draw_blur,
    draw_noise,
    draw_plan,
    shifted_gaussian_kernel,
)
from unclip.upsampler.corruption import degrade

CFG = BSRConfig()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def blocky(b: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    x = torch.rand(b, 3, size // 8, size // 8, generator=gen(seed)) * 2 - 1
    return F.interpolate(x, size=(size, size), mode="nearest")


def plans(n: int, scale: float = 4.0, seed: int = 0) -> list[list[Step]]:
    g = gen(seed)
    return [draw_plan(scale, g) for _ in range(n)]


# ---------------------------------------------------------------- the plan: order and probabilities


def test_order_is_random_per_image_and_downsample3_follows_downsample2() -> None:
    orders = Counter()
    for plan in plans(400):
        names = [s.name for s in plan]
        assert names.index("downsample2") < names.index("downsample3")
        assert names[-1] == "final_jpeg" and names.count("blur") == 2 and names.count("noise") == 1
        orders[tuple(n for n in names if n in ("blur", "downsample2", "downsample3", "noise"))] += 1
    # Two identical blurs, downsample2 before downsample3: 5! / (2 * 2) = 30 orders; all occur.
    assert len(orders) == 30
    g = gen(1)  # one generator, consecutive images: different orders
    names = [tuple(s.name for s in draw_plan(4.0, g)) for _ in range(8)]
    assert len(set(names)) > 1


def test_step_probabilities_match_bsrgan() -> None:
    ps = plans(2000, seed=3)

    def frac(pred):
        return sum(map(pred, ps)) / len(ps)

    assert frac(lambda p: p[0].name == "downsample1") == pytest.approx(0.25, abs=0.03)
    assert frac(lambda p: any(s.name == "jpeg" for s in p)) == pytest.approx(0.9, abs=0.02)
    assert frac(lambda p: any(s.name == "camera" for s in p)) == pytest.approx(0.25, abs=0.03)
    resize = frac(lambda p: next(s for s in p if s.name == "downsample2").params["variant"] == "resize")
    assert resize == pytest.approx(0.75, abs=0.03)
    blurs = [s.params for p in ps for s in p if s.name == "blur"]
    assert sum(b["kind"] == "anisotropic" for b in blurs) / len(blurs) == pytest.approx(0.5, abs=0.03)
    kinds = Counter(s.params["kind"] for p in ps for s in p if s.name == "noise")
    assert kinds["colour"] / len(ps) == pytest.approx(0.4, abs=0.03)
    assert kinds["gray"] / len(ps) == pytest.approx(0.4, abs=0.03)
    assert kinds["correlated"] / len(ps) == pytest.approx(0.2, abs=0.03)


def test_no_downsample1_below_scale_four() -> None:
    assert all(p[0].name != "downsample1" for p in plans(300, scale=2.0))


def test_parameter_ranges() -> None:
    g = gen(5)
    for _ in range(500):
        b = draw_blur(4.0, g, CFG)
        assert b["size"] % 2 == 1 and 7 <= b["size"] <= 25
        if b["kind"] == "isotropic":
            assert b["sigma_x"] == b["sigma_y"] <= 2 + 0.2 * 4
        else:
            assert max(b["sigma_x"], b["sigma_y"]) <= math.sqrt(4 + 4) and 0 <= b["theta"] <= math.pi
        n = draw_noise(g, CFG)
        assert 2 / 255 - 1e-9 <= n["sigma"] <= 25 / 255 + 1e-9
    for p in plans(500):
        for s in p:
            if s.name == "downsample2" and s.params["variant"] == "resize":
                sf = 2.0 if p[0].name == "downsample1" else 4.0
                assert 1.0 <= s.params["factor"] <= 2 * sf
            if s.name in ("jpeg", "final_jpeg"):
                assert 30 <= s.params["quality"] <= 95


def test_light_variant_plans_and_ranges() -> None:
    """Latent diffusion's light BSR: one blur of a quarter of the widths, noise 1-2 / 255, JPEG 80-95, no camera."""
    g = gen(7)
    ps = [draw_plan(4.0, g, BSR_LIGHT) for _ in range(1500)]
    for p in ps:
        names = [s.name for s in p]
        assert names.count("blur") == 1 and "camera" not in names and names[-1] == "final_jpeg"
        assert names.index("downsample2") < names.index("downsample3")
        for s in p:
            if s.name == "blur":
                b = s.params
                sf = 2.0 if p[0].name == "downsample1" else 4.0
                if b["kind"] == "isotropic":
                    assert b["size"] in (5, 7) and b["sigma_x"] <= (2 + 0.2 * sf) / 4
                else:
                    assert 5 <= b["size"] <= 13 and max(b["sigma_x"], b["sigma_y"]) <= math.sqrt((4 + sf) / 4)
            if s.name == "noise":
                assert 1 / 255 - 1e-9 <= s.params["sigma"] <= 2 / 255 + 1e-9
            if s.name in ("jpeg", "final_jpeg"):
                assert 80 <= s.params["quality"] <= 95
    resize = sum(next(s for s in p if s.name == "downsample2").params["variant"] == "resize" for p in ps) / len(ps)
    assert resize == pytest.approx(0.8, abs=0.03)
    with pytest.raises(InputError, match="blurs"):
        BSRConfig(blurs=3)


def test_light_variant_degrades_less_than_the_full_model() -> None:
    """Both kinds through :func:`degrade`; the light one stays closer to clean bicubic downsampling."""
    x = blocky(8, 64, seed=4)
    clean = degrade(x, 16, "none", gen(0))
    err = {kind: (degrade(x, 16, kind, gen(1)) - clean).pow(2).mean().item() for kind in ("bsr", "bsr-light")}
    assert 0 < err["bsr-light"] < 0.75 * err["bsr"]  # 0.109 vs 0.190 here: resampling kinds dominate both


# ---------------------------------------------------------------- each step


def test_blur_step_kernels_of_both_kinds() -> None:
    x = torch.zeros(1, 3, 41, 41)
    x[..., 20, 20] = 1.0
    iso = Step("blur", {"kind": "isotropic", "size": 15, "sigma_x": 2.0, "sigma_y": 2.0, "theta": 0.0})
    aniso = Step("blur", {"kind": "anisotropic", "size": 15, "sigma_x": 3.0, "sigma_y": 0.7, "theta": 0.4})
    for step in (iso, aniso):
        out = apply_plan(x, [step], 41, gen(0))
        assert out.sum().item() == pytest.approx(3.0, abs=1e-4)  # a normalised kernel keeps the mass
    k_iso = apply_plan(x, [iso], 41, gen(0))[0, 0, 13:28, 13:28]
    k_aniso = apply_plan(x, [aniso], 41, gen(0))[0, 0, 13:28, 13:28]
    assert torch.allclose(k_iso, k_iso.T, atol=1e-6)
    assert (k_aniso - k_aniso.T).abs().max() > 1e-3


def test_strided_downsampling_keeps_block_centres() -> None:
    """On a linear ramp a centred blur is exact, so output pixel i must equal sf i + (sf - 1)/2."""
    sf, side = 4, 64
    ramp = torch.arange(side, dtype=torch.float32).view(1, 1, 1, side).expand(1, 3, side, side).contiguous()
    out = blur_nearest_downsample(ramp, sigma=1.5, sf=sf)
    assert out.shape == (1, 3, side // sf, side // sf)
    interior = out[0, 0, 5, 3:-3]
    expected = torch.arange(3, side // sf - 3, dtype=torch.float32) * sf + (sf - 1) / 2
    assert torch.allclose(interior, expected, atol=1e-3)
    k = shifted_gaussian_kernel(1.0, 1.5)
    assert k.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_resize_downsample2_then_downsample3_reaches_low_res() -> None:
    x = blocky(1, 64)
    plan = [
        Step("downsample2", {"variant": "resize", "factor": 6.5, "mode": "bicubic"}),
        Step("downsample3", {"mode": "nearest"}),
    ]
    out = apply_plan(x, plan, 16, gen(0))
    assert out.shape == (1, 3, 16, 16)
    mid = apply_plan(x, plan[:1], 64, gen(0))  # the plan's intermediate (resized back to 64 for the check)
    assert mid.shape == (1, 3, 64, 64)


@pytest.mark.parametrize("kind", ["colour", "gray", "correlated"])
def test_noise_kinds_have_their_channel_correlation(kind: str) -> None:
    g = gen(7)
    params = next(p for p in (draw_noise(g, CFG) for _ in range(200)) if p["kind"] == kind)
    params = {**params, "sigma": 10 / 255}
    side = 128
    x = torch.zeros(1, 3, side, side)
    noise = (add_noise(x, params, gen(8)) / 2.0).reshape(3, -1)  # back to the [0, 1] scale
    cov = torch.cov(noise.double())
    # An estimated covariance entry has standard deviation about (its scale) / sqrt(N): allow 5 of them.
    if kind == "colour":
        expected = torch.eye(3, dtype=torch.float64) * (10 / 255) ** 2
        assert torch.allclose(cov, expected, atol=5 * (10 / 255) ** 2 / side)
    elif kind == "gray":
        assert torch.equal(noise[0], noise[1]) and torch.equal(noise[1], noise[2])
    else:
        expected = params["cov"].double()
        assert torch.allclose(cov, expected, atol=5 * float(expected.diagonal().max()) / side)
        assert (expected - torch.diag(expected.diagonal())).abs().max() > 10 * float(expected.diagonal().max()) / side
        assert torch.allclose(params["cov"], params["cov"].T)
        assert bool((torch.linalg.eigvalsh(params["cov"]) >= -1e-7).all())


def test_jpeg_steps_quantise_and_change_the_image() -> None:
    x = blocky(1, 32) * 0.9
    out = apply_plan(x, [Step("jpeg", {"quality": 30})], 32, gen(0))
    levels = (out + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)  # an 8-bit decoded image
    assert 1e-3 < (out - x).abs().mean() < 0.2
    final = apply_plan(x, [Step("final_jpeg", {"quality": 95})], 32, gen(0))
    assert (final - x).abs().mean() < (out - x).abs().mean()  # higher quality, smaller change


# ---------------------------------------------------------------- camera-sensor noise


def test_tone_curve_inverse_and_bayer_round_trip() -> None:
    y = torch.linspace(0, 1, 101)
    assert torch.allclose(C.smoothstep(C.inverse_smoothstep(y)), y, atol=1e-6)
    flat = torch.rand(2, 3, 1, 1, generator=gen(0)).expand(2, 3, 8, 10).contiguous()
    assert torch.allclose(C.demosaic(C.mosaic(flat)), flat, atol=1e-6)  # constant colours survive demosaicing
    masks = C.bayer_masks(4, 4)
    assert masks.sum(0).eq(1).all() and masks[1].sum() == 8  # RGGB: half the sites green


def test_camera_round_trip_without_noise_is_identity_on_flat_colours() -> None:
    cam = C.draw_camera(gen(1))
    assert torch.allclose(cam.rgb2cam.sum(1), torch.ones(3), atol=1e-6)
    assert 1.9 <= cam.red_gain <= 2.4 and 1.5 <= cam.blue_gain <= 1.9
    assert 1e-4 <= cam.shot <= 0.012
    x = torch.rand(1, 3, 1, 1, generator=gen(2)).mul(0.6).add(0.2).expand(1, 3, 8, 8).contiguous()
    back = C.process(C.demosaic(C.mosaic(C.unprocess(x, cam))), cam)
    assert torch.allclose(back, x, atol=1e-4)


def test_camera_noise_is_signal_dependent_in_raw_and_spatially_correlated() -> None:
    cam = C.draw_camera(gen(3))
    cam.shot, cam.read = 0.01, 1e-5  # shot-noise dominated, so brighter raw values are noisier
    dark, bright = torch.full((1, 3, 64, 64), 0.15), torch.full((1, 3, 64, 64), 0.6)
    raw_std = []
    for img in (dark, bright):
        raw = C.mosaic(C.unprocess(img, cam))
        noisy = C.mosaic(C.unprocess(C.camera_sensor_noise(img, cam, gen(4)), cam))
        raw_std.append((noisy - raw).std().item())
    assert raw_std[1] > 1.3 * raw_std[0]
    out = C.camera_sensor_noise(bright, cam, gen(5)) - bright
    horizontal = torch.corrcoef(torch.stack([out[0, 1, :, :-1].flatten(), out[0, 1, :, 1:].flatten()]))[0, 1]
    assert horizontal > 0.1  # demosaicing spreads each raw sample's noise to its neighbours


def test_camera_step_in_a_plan_adds_noise() -> None:
    x = torch.full((1, 3, 32, 32), 0.2)
    out = apply_plan(x, [Step("camera", {"camera": C.draw_camera(gen(6))})], 32, gen(7))
    assert out.shape == x.shape and out.std() > 1e-3


# ---------------------------------------------------------------- the whole pipeline


def test_pipeline_shapes_range_seeding_and_per_image_plans() -> None:
    x = blocky(4, 64)
    a, b, c = bsr_degradation(x, 16, gen(1)), bsr_degradation(x, 16, gen(1)), bsr_degradation(x, 16, gen(2))
    assert a.shape == (4, 3, 16, 16) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    same = x[:1].expand(4, -1, -1, -1)
    out = bsr_degradation(same, 16, gen(3))
    assert len({tuple(img.flatten().tolist()[:20]) for img in out}) == 4  # each copy degraded its own way
    assert torch.equal(degrade(x, 16, "bsr", gen(1)), a)


def test_pipeline_rejects_upscaling() -> None:
    with pytest.raises(InputError, match="shrinks"):
        bsr_degradation(blocky(1, 16), 32, gen(0))
