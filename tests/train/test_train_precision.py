"""bf16 autocast training on the CPU: the forward runs in bf16, everything that persists stays fp32."""

from __future__ import annotations

import math

import torch

from unclip.nn.precision import set_default_precision
from unclip.train import TrainConfig, train


def _config(**kw) -> TrainConfig:
    return TrainConfig(
        **{**dict(steps=6, lr=1e-2, warmup_steps=1, checkpoint_every=6, log_every=2, ema_decay=0.9, seed=0), **kw}
    )


def test_bf16_training_keeps_fp32_master_weights_optimizer_state_and_ema(tmp_path, tiny_stage, read_state):
    stage = tiny_stage(record_dtype=True)
    result = train(stage, _config(precision="bf16"), tmp_path, progress=False)
    assert set(stage.dtypes) == {torch.bfloat16}  # the forward ran in bf16 ...
    assert all(p.dtype == torch.float32 for p in stage.model.parameters())  # ... on fp32 master weights
    state = read_state(tmp_path)
    floats = [
        (f"{name}:{k}", t.dtype)
        for name in ("model.safetensors", "optimizer.safetensors", "ema.safetensors")
        for k, t in state[name].items()
        if t.is_floating_point()
    ]
    assert floats and all(dtype == torch.float32 for _, dtype in floats), floats
    assert math.isfinite(result.final_loss)


def test_command_line_precision_overrides_the_preset(tmp_path, tiny_stage):
    set_default_precision("bf16")  # what `unclip train --precision bf16` does
    try:
        stage = tiny_stage(record_dtype=True)
        train(stage, _config(steps=2, precision="fp32"), tmp_path, progress=False)
    finally:
        set_default_precision(None)
    assert set(stage.dtypes) == {torch.bfloat16}
    stage = tiny_stage(record_dtype=True)
    train(stage, _config(steps=2, precision="fp32"), tmp_path / "b", progress=False)
    assert set(stage.dtypes) == {torch.float32}
