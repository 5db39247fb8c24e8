"""EMA arithmetic on known sequences."""

import pytest
import torch
from torch import nn

from unclip.train import EMA


def _scalar_model(value: float) -> nn.Module:
    model = nn.Module()
    model.w = nn.Parameter(torch.tensor([value], dtype=torch.float64))
    model.register_buffer("count", torch.tensor([0.0], dtype=torch.float64))
    return model


def test_constant_decay_on_known_sequence():
    model = _scalar_model(0.0)
    ema = EMA(model, decay=0.5, warmup=False)
    expected = 0.0
    for step, value in enumerate([1.0, 2.0, 4.0, -8.0]):
        model.w.data.fill_(value)
        ema.update(model, step)
        expected = 0.5 * expected + 0.5 * value
        assert ema.model.w.item() == pytest.approx(expected, abs=1e-12)
    assert expected == -2.6875  # 0 -> 0.5 -> 1.25 -> 2.625 -> -2.6875


def test_warmup_decay_values_and_update():
    model = _scalar_model(10.0)
    ema = EMA(model, decay=0.9, warmup=True)
    assert ema.decay_at(0) == pytest.approx(0.1)  # 1 / 10
    assert ema.decay_at(10) == pytest.approx(11 / 20)
    assert ema.decay_at(1000) == 0.9  # capped by ema_decay
    expected = 10.0
    for step in range(30):
        model.w.data.fill_(float(step))
        ema.update(model, step)
        d = min(0.9, (1 + step) / (10 + step))
        expected = d * expected + (1 - d) * step
    assert ema.model.w.item() == pytest.approx(expected, abs=1e-10)


def test_buffers_are_copied_and_copy_is_frozen():
    model = _scalar_model(1.0)
    ema = EMA(model, decay=0.99, warmup=False)
    model.count.fill_(7.0)
    ema.update(model, 0)
    assert ema.model.count.item() == 7.0
    assert not ema.model.training
    assert all(not p.requires_grad for p in ema.model.parameters())
    # the copy is independent of the live model
    model.w.data.fill_(100.0)
    assert ema.model.w.item() == pytest.approx(1.0)


def test_state_dict_roundtrip():
    model = _scalar_model(3.0)
    ema = EMA(model, decay=0.5, warmup=False)
    model.w.data.fill_(5.0)
    ema.update(model, 0)
    other = EMA(_scalar_model(0.0), decay=0.5, warmup=False)
    other.load_state_dict(ema.state_dict())
    assert other.model.w.item() == 4.0


def test_decay_must_be_below_one():
    with pytest.raises(ValueError):
        EMA(_scalar_model(0.0), decay=1.0)
