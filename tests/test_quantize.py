"""int8 storage of shipped weights: round trip error bound, what is kept, loading through load_component."""

from __future__ import annotations

import pytest
import torch

from unclip.decoder.model import Decoder, DecoderConfig
from unclip.storage.checkpoint import load_component, save_component
from unclip.storage.quantize import SCALE_SUFFIX, dequantize_state, quantize_state, quantize_tensor


def test_int8_error_is_within_half_a_step_per_channel():
    w = torch.randn(16, 8, 3, 3) * torch.logspace(-3, 1, 16)[:, None, None, None]
    q, scale = quantize_tensor(w)
    assert q.dtype == torch.int8 and scale.shape == (16,)
    back = dequantize_state({"w": q, "w" + SCALE_SUFFIX: scale})["w"]
    step = scale.float()[:, None, None, None]
    assert ((back - w).abs() <= step / 2 + 1e-6 * w.abs().amax()).all()
    assert (q.abs().amax(dim=(1, 2, 3)) == 127).all()  # every channel uses its full range


def test_small_and_non_float_tensors_are_not_quantised():
    state = {
        "big": torch.randn(64, 64),
        "bias": torch.randn(64),
        "steps": torch.tensor([3]),
        "kept": torch.randn(64, 64),
    }
    q = quantize_state(state, keep={"kept"})
    assert q["big"].dtype == torch.int8 and q["bias"].dtype == torch.float16
    assert q["steps"].dtype == torch.int64 and q["kept"].dtype == torch.float32
    assert set(q) == set(state) | {"big" + SCALE_SUFFIX}
    with pytest.raises(ValueError, match="reserved suffix"):
        quantize_state({"x" + SCALE_SUFFIX: torch.randn(64, 64)})


def test_quantised_component_loads_into_its_model(tmp_path):
    cfg = DecoderConfig(
        image_size=16,
        base_channels=16,
        channel_mults=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(8,),
        head_channels=16,
        text_width=32,
        text_depth=1,
        text_heads=2,
        clip_embed_dim=32,
        vocab_size=50,
        context_length=8,
    )
    torch.manual_seed(0)
    model = Decoder(cfg).eval()
    with torch.no_grad():  # zero-initialised output layers would make the comparison vacuous
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_component(tmp_path, "decoder", cfg, quantize_state(model.state_dict()))  # int8 weights, their SHA-256 recorded
    _, state, _ = load_component(tmp_path, "decoder", DecoderConfig)
    assert all(v.dtype != torch.int8 for v in state.values()) and set(state) == set(model.state_dict())
    loaded = Decoder(cfg).eval()
    loaded.load_state_dict(state)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 50])
    z, tokens = torch.randn(2, 32), torch.randint(0, 50, (2, 8))
    with torch.no_grad():
        a, b = model(x, t, z, tokens), loaded(x, t, z, tokens)
    rel = (a - b).norm() / a.norm()
    assert 0 < rel < 0.05  # random weights; the trained decoder is checked by benchmarks/ship_model.py --check
