"""Crop training: quarter-side crops aligned with the conditioning image; export, load and cascade."""

from __future__ import annotations

import json

import pytest
import torch

from unclip.diffusion import DiffusionSettings
from unclip.errors import ConfigError
from unclip.model_dir import load_upsampler
from unclip.storage.checkpoint import load_tensors
from unclip.train.components import train_component
from unclip.train.upsampler_stage import UpsamplerStage, random_crops
from unclip.upsampler import Upsampler, UpsamplerConfig
from unclip.upsampler.cascade import run_cascade

TINY = dict(low_res=16, high_res=64, base_channels=8, channel_mults=(1, 2), num_res_blocks=1)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def uint8_images(n: int = 6, size: int = 64) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=gen(0), dtype=torch.uint8)


def make_stage(degradation: str = "none") -> UpsamplerStage:
    torch.manual_seed(0)
    return UpsamplerStage(
        Upsampler(UpsamplerConfig(**TINY)), uint8_images(), 3, DiffusionSettings(num_timesteps=50), degradation
    )


def test_crops_are_the_same_window_of_both_batches() -> None:
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    a, b = random_crops(x, x * 10, 4, gen(0))
    assert a.shape == (2, 3, 4, 4)
    torch.testing.assert_close(b, a * 10)
    for i in range(2):  # each crop is a contiguous window of its own image
        y0 = int(a[i, 0, 0, 0]) // 8 % 8
        x0 = int(a[i, 0, 0, 0]) % 8
        torch.testing.assert_close(a[i], x[i, :, y0 : y0 + 4, x0 : x0 + 4])


def test_batch_is_quarter_side_crops_matching_the_upsampled_low_res() -> None:
    stage = make_stage("none")
    assert stage.crop == 16 and stage.name == "upsampler_64"
    high, cond = stage.get_batch(0, gen(1))
    assert high.shape == cond.shape == (3, 3, 16, 16)
    high2, cond2 = stage.get_batch(0, gen(1))
    assert torch.equal(high, high2) and torch.equal(cond, cond2)
    # Without corruption the conditioning crop is the downsampled-then-upsampled crop: close to the original's colours.
    assert (cond.mean(dim=(2, 3)) - high.mean(dim=(2, 3))).abs().max() < 0.2
    with pytest.raises(ConfigError, match="crop"):
        UpsamplerStage(Upsampler(UpsamplerConfig(**TINY)), uint8_images(), 2, DiffusionSettings(), crop=15)


def test_bsr_stage_degrades_crops_of_the_originals() -> None:
    stage = make_stage("bsr")
    assert stage.degrade_crops and not make_stage("blur").degrade_crops
    high, cond = stage.get_batch(0, gen(1))
    assert high.shape == cond.shape == (3, 3, 16, 16)
    images = stage.images.float().div(127.5).sub(1.0)
    for crop in high:  # each high-resolution crop is a window of some training image
        windows = images.unfold(2, 16, 1).unfold(3, 16, 1)  # (N, 3, 49, 49, 16, 16)
        assert (windows - crop[None, :, None, None]).abs().amax(dim=(1, 4, 5)).min() < 1e-6
    # the conditioning is the crop degraded to a quarter side and brought back: near the crop, not equal
    gap = (cond - high).abs().mean()
    assert 0.01 < gap < 0.6
    high2, cond2 = stage.get_batch(0, gen(1))
    assert torch.equal(high, high2) and torch.equal(cond, cond2)
    with pytest.raises(ConfigError, match="whole number of pixels"):
        UpsamplerStage(Upsampler(UpsamplerConfig(**TINY)), uint8_images(), 2, DiffusionSettings(), "bsr", crop=6)


def test_crop_trained_weights_run_at_full_size() -> None:
    stage = make_stage("blur")
    model = stage.model
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    loss, metrics = stage.loss(stage.get_batch(0, gen(0)), gen(0))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and "mse" in metrics
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    model.eval()
    with torch.no_grad():
        full = model(torch.randn(2, 3, 64, 64), torch.tensor([10, 40]), torch.rand(2, 3, 16, 16) * 2 - 1)
    assert full.shape == (2, 3, 64, 64) and torch.isfinite(full).all()


def test_tiny_training_writes_a_loadable_component(tmp_path) -> None:
    (tmp_path / "model.json").write_text(
        json.dumps({"format": "unclip-model", "version": 1, "components": {"decoder": "decoder"}})
    )
    summary = train_component(
        "upsampler",
        "shapes",
        "tiny",
        tmp_path,
        low_res=8,
        high_res=32,
        degradation="blur",
        steps=4,
        num_images=8,
        progress=False,
    )
    assert summary["steps"] == 4 and summary["crop"] == 8
    components = json.loads((tmp_path / "model.json").read_text())["components"]
    assert components == {"decoder": "decoder", "upsampler_32": "upsampler_32"}
    weights = load_tensors(tmp_path / "upsampler_32" / "weights.safetensors")
    assert all(v.dtype == torch.float16 for v in weights.values() if v.is_floating_point())
    loaded = load_upsampler(tmp_path / "upsampler_32")
    assert loaded.steps == 27 and loaded.settings.num_timesteps == 100
    assert next(loaded.model.parameters()).dtype == torch.float32
    out = run_cascade([loaded], torch.zeros(2, 3, 8, 8), steps=2, generator=gen(0))
    assert out.shape == (2, 3, 32, 32)


def test_warm_start_continues_a_stage_under_another_degradation(tmp_path) -> None:
    """``init_from``: the run starts from the given stage's weights and trains on with its own degradation."""
    roots = [tmp_path / name for name in ("first", "warm", "fresh", "bad")]
    for root in roots:
        root.mkdir()
        (root / "model.json").write_text(json.dumps({"format": "unclip-model", "version": 1, "components": {}}))
    first, warm, fresh, bad = roots
    common = dict(low_res=8, high_res=32, num_images=8, progress=False)
    train_component("upsampler", "shapes", "tiny", first, degradation="bsr", steps=3, seed=1, **common)
    start = load_upsampler(first / "upsampler_32").model.state_dict()
    init = first / "upsampler_32"
    summary = train_component(
        "upsampler", "shapes", "tiny", warm, degradation="bsr-light", steps=2, init_from=init, **common
    )
    assert summary["init_from"] == str(first / "upsampler_32") and summary["degradation"] == "bsr-light"
    assert json.loads((warm / "upsampler_32" / "config.json").read_text())["extra"]["degradation"] == "bsr-light"
    train_component("upsampler", "shapes", "tiny", fresh, degradation="bsr-light", steps=2, **common)

    def distance(root) -> float:
        state = load_upsampler(root / "upsampler_32").model.state_dict()
        return sum((state[k] - v).pow(2).sum().item() for k, v in start.items() if v.is_floating_point())

    # a fresh network (seed 0) is far from the first stage's (seed 1); the warm start stays near it
    assert 0 < distance(warm) < 0.01 * distance(fresh)
    with pytest.raises(ConfigError, match="cannot warm-start"):
        train_component(
            "upsampler", "shapes", "tiny", bad, degradation="bsr-light", steps=1, init_from=first / "upsampler_32",
            low_res=16, high_res=64, num_images=4, progress=False,
        )  # fmt: skip


def test_batches_built_by_workers_are_the_loops_batches() -> None:
    """Prefetching in worker processes changes nothing: the same crops, and the generator left in the same state."""
    from unclip.train.config import step_generator

    def stage(workers: int) -> UpsamplerStage:
        return UpsamplerStage(
            Upsampler(UpsamplerConfig(**TINY)), uint8_images(), 3, DiffusionSettings(num_timesteps=50), "bsr-light",
            workers=workers, seed=5,
        )  # fmt: skip

    plain, ahead = stage(0), stage(2)
    try:
        for step in (0, 1, 2, 7, 8, 3):  # in order, then a jump forward (a resume) and one back
            g0, g1 = step_generator(5, step), step_generator(5, step)
            (h0, c0), (h1, c1) = plain.get_batch(step, g0), ahead.get_batch(step, g1)
            assert torch.equal(h0, h1) and torch.equal(c0, c1)
            assert torch.equal(torch.rand(4, generator=g0), torch.rand(4, generator=g1))  # the loss's noise
        used, same = step_generator(5, 4), step_generator(5, 4)
        torch.rand(1, generator=used), torch.rand(1, generator=same)  # not fresh: built in this process instead
        assert torch.equal(ahead.get_batch(4, used)[1], plain.get_batch(4, same)[1])
        assert ahead.prefetcher is not None and ahead.prefetcher._pool is not None
    finally:
        ahead.prefetcher.close()
