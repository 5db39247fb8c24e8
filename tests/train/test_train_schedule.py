"""Learning-rate schedule, per-step seeds and TrainConfig validation."""

import math

import pytest
import torch

from unclip.errors import ConfigError
from unclip.train import TrainConfig, lr_at, lr_factor, step_generator, step_seed


def test_linear_warmup_then_constant():
    config = TrainConfig(steps=10, lr=1.0, warmup_steps=4)
    assert [lr_at(s, config) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_at(9, config) == 1.0


def test_no_warmup_starts_at_full_lr():
    config = TrainConfig(steps=5, lr=2e-3, warmup_steps=0)
    assert lr_at(0, config) == 2e-3


def test_cosine_decay_after_warmup():
    config = TrainConfig(steps=12, lr=1.0, warmup_steps=2, lr_decay="cosine")
    assert lr_factor(0, config) == 0.5
    assert lr_factor(2, config) == 1.0  # decay starts where warm-up ends
    assert lr_factor(7, config) == pytest.approx(0.5)  # half-way through the 10 decay steps
    assert lr_factor(11, config) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.9)))
    values = [lr_factor(s, config) for s in range(2, 12)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_step_seed_is_deterministic_and_distinct():
    assert step_seed(0, 5) == step_seed(0, 5)
    seeds = {step_seed(seed, step, stream) for seed in range(3) for step in range(50) for stream in range(2)}
    assert len(seeds) == 3 * 50 * 2
    assert all(0 <= s < 2**63 for s in seeds)
    a = torch.randn(4, generator=step_generator(3, 7))
    b = torch.randn(4, generator=step_generator(3, 7))
    c = torch.randn(4, generator=step_generator(3, 8))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(
    "field, value",
    [
        ("precision", "fp8"),
        ("lr_decay", "linear"),
        ("ema_decay", 1.0),
        ("log_every", 0),
        ("lr", 0.0),
        ("steps", -1),
        ("betas", (0.9, 1.5)),
    ],
)
def test_invalid_config_is_named(field, value):
    config = TrainConfig(**{field: value})
    with pytest.raises(ConfigError, match=field):
        config.validate()


def test_from_dict_rejects_unknown_keys_and_restores_tuples():
    config = TrainConfig.from_dict({"steps": 3, "betas": [0.8, 0.9]})
    assert config.steps == 3 and config.betas == (0.8, 0.9)
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainConfig.from_dict({"learning_rate": 1e-3})
