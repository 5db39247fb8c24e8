"""CUDA paths of the loop (fused AdamW, TF32, bf16/fp16 autocast, GradScaler, deferred
NaN checks); skipped on machines without a GPU."""

from __future__ import annotations

import json

import pytest
import torch

from unclip.errors import UnclipError
from unclip.train import TrainConfig, load_train_state, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _config(**kw) -> TrainConfig:
    base = dict(
        steps=12, lr=1e-2, warmup_steps=2, checkpoint_every=4, log_every=3, ema_decay=0.9, seed=3, device="cuda"
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_resume_is_bit_identical(tmp_path, tiny_stage, read_state, precision):
    straight, split = tmp_path / "straight", tmp_path / "split"
    stage = tiny_stage(record_dtype=True)
    result = train(stage, _config(precision=precision), straight, progress=False)
    expected = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    assert set(stage.dtypes) == {expected}
    assert next(stage.model.parameters()).is_cuda and torch.isfinite(torch.tensor(result.final_loss))
    train(tiny_stage(), _config(precision=precision), split, progress=False, stop_after=6)
    train(tiny_stage(), _config(precision=precision), split, resume=True, progress=False)
    a, b = read_state(straight), read_state(split)
    for name in a:
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), f"{name}:{key}"
    scaler = json.loads((split / "train_state" / "state.json").read_text())["scaler"]
    assert (scaler is not None and scaler["scale"] > 0) == (precision == "fp16")


def test_cuda_auto_precision_and_tf32(tmp_path, tiny_stage):
    stage = tiny_stage(record_dtype=True)
    train(stage, _config(steps=2, precision="auto"), tmp_path, progress=False)
    assert stage.dtypes[0] == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32)
    assert torch.get_float32_matmul_precision() == "high"


def test_cuda_nan_is_named_with_deferred_checks(tmp_path, tiny_stage):
    with pytest.raises(UnclipError, match="at step 5 "):
        train(tiny_stage(nan_at=5), _config(log_every=100), tmp_path, progress=False)
    assert load_train_state(tmp_path).step == 4
