"""The stage-agnostic loop: exact resume, logs, precision, errors."""

from __future__ import annotations

import json

import pytest
import torch

from unclip.errors import CheckpointError, UnclipError
from unclip.storage.checkpoint import load_component, load_tensors
from unclip.train import LOSS_LOG, TrainConfig, has_train_state, load_train_state, train
from unclip.train import loop as loop_module


def _config(**kw) -> TrainConfig:
    base = dict(
        steps=20, lr=1e-2, warmup_steps=3, checkpoint_every=4, log_every=3, ema_decay=0.9, seed=7, weight_decay=0.01
    )
    base.update(kw)
    return TrainConfig(**base)


def _log(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / LOSS_LOG).read_text().splitlines()]


def _assert_same_run(a, b, read_state, *, same_log: bool = True):
    """Params, EMA and optimizer state bit-identical; the same log except timing."""
    sa, sb = read_state(a), read_state(b)
    for name in sa:
        assert sa[name].keys() == sb[name].keys(), name
        for key in sa[name]:
            assert torch.equal(sa[name][key], sb[name][key]), f"{name}:{key} differs"
    ea = load_tensors(a / "tiny" / "weights.safetensors")
    eb = load_tensors(b / "tiny" / "weights.safetensors")
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "steps_per_s"} for r in rows]  # noqa: E731
    if same_log:
        assert strip(_log(a)) == strip(_log(b))


def test_training_reduces_loss_and_exports_ema(tmp_path, tiny_stage):
    stage = tiny_stage()
    result = train(stage, _config(steps=60, log_every=10, checkpoint_every=30), tmp_path, progress=False)
    log = _log(tmp_path)
    assert [r["step"] for r in log] == [10, 20, 30, 40, 50, 60]
    assert log[-1]["loss"] < 0.5 * log[0]["loss"]
    assert result.steps == 60 and result.final_loss == log[-1]["loss"] and not result.stopped_early
    assert result.steps_per_s > 0 and result.wall_time_s > 0
    for key in ("lr", "grad_norm", "steps_per_s", "mae", "batch_mean"):
        assert key in log[-1]
    # the exported component holds the EMA weights, not the raw ones
    ema = load_tensors(tmp_path / "train_state" / "ema.safetensors")
    raw = load_tensors(tmp_path / "train_state" / "model.safetensors")
    _, exported, _ = load_component(tmp_path / "tiny", "tiny", type(stage.model.config))
    assert all(torch.equal(exported[k], ema[k]) for k in ema)
    assert any(not torch.equal(exported[k], raw[k]) for k in raw)
    assert stage.exported is result.model and not stage.exported.training


def test_resume_after_stop_is_bit_identical(tmp_path, tiny_stage, read_state):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(tiny_stage(), _config(), straight, progress=False)

    first = tiny_stage()
    partial = train(first, _config(), split, progress=False, stop_after=8)
    assert partial.stopped_early and partial.steps == 8
    assert first.exported is None and not (split / "tiny").exists()  # no export before the end
    assert load_train_state(split).step == 8

    second = tiny_stage()  # a fresh process: new model, fresh optimizer
    resumed = train(second, _config(), split, resume=True, progress=False)
    assert second.steps_seen == list(range(8, 20))
    assert resumed.start_step == 8 and resumed.steps == 20
    _assert_same_run(straight, split, read_state)


def test_resume_after_crash_is_bit_identical(tmp_path, tiny_stage, read_state):
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    train(tiny_stage(), _config(), straight, progress=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny_stage(crash_at=10), _config(), crashed, progress=False)
    assert load_train_state(crashed).step == 8  # last checkpoint before the crash
    assert max(r["step"] for r in _log(crashed)) == 9  # logged beyond the checkpoint...
    second = tiny_stage()
    train(second, _config(), crashed, resume=True, progress=False)
    steps = [r["step"] for r in _log(crashed)]
    assert steps == sorted(set(steps)) == [3, 6, 9, 12, 15, 18, 20]  # ...but no duplicates after resume
    assert second.steps_seen[0] == 8
    _assert_same_run(straight, crashed, read_state)


def test_resume_may_raise_steps(tmp_path, tiny_stage, read_state):
    straight, grown = tmp_path / "straight", tmp_path / "grown"
    train(tiny_stage(), _config(steps=12), straight, progress=False)
    train(tiny_stage(), _config(steps=8), grown, progress=False)
    assert (grown / "tiny").is_dir()  # the shorter run finished and exported
    train(tiny_stage(), _config(steps=12), grown, resume=True, progress=False)
    # the 8-step run logged its end (a partial window), so only the weights must agree
    _assert_same_run(straight, grown, read_state, same_log=False)
    assert [r["step"] for r in _log(grown)] == [3, 6, 8, 9, 12]


def test_resume_without_state_raises_helpful_error(tmp_path, tiny_stage):
    assert not has_train_state(tmp_path)
    with pytest.raises(CheckpointError, match=r"train_state.*does not exist.*without resume"):
        train(tiny_stage(), _config(), tmp_path, resume=True, progress=False)


def test_resume_with_changed_config_names_the_field(tmp_path, tiny_stage):
    train(tiny_stage(), _config(steps=4), tmp_path, progress=False)
    assert has_train_state(tmp_path)
    with pytest.raises(CheckpointError, match=r"lr: checkpoint 0.01, now 0.02"):
        train(tiny_stage(), _config(steps=8, lr=2e-2), tmp_path, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="steps >= 4"):
        train(tiny_stage(), _config(steps=2), tmp_path, resume=True, progress=False)


def test_fresh_run_starts_over(tmp_path, tiny_stage):
    train(tiny_stage(), _config(steps=8), tmp_path, progress=False)
    train(tiny_stage(), _config(steps=4, checkpoint_every=100), tmp_path, progress=False)
    assert load_train_state(tmp_path).step == 4
    assert [r["step"] for r in _log(tmp_path)] == [3, 4]


def test_nan_loss_raises_naming_the_step(tmp_path, tiny_stage):
    with pytest.raises(UnclipError, match=r"loss is nan at step 5 \(0-based; update 6 of 20\)"):
        train(tiny_stage(nan_at=5), _config(), tmp_path, progress=False)
    assert load_train_state(tmp_path).step == 4  # the last good checkpoint survives


def test_nan_loss_is_caught_when_checks_are_deferred(tmp_path, tiny_stage, monkeypatch):
    # on accelerators the loop only syncs at log/checkpoint steps; it must still name the right step
    monkeypatch.setattr(loop_module, "_sync_every_step", lambda device: False)
    with pytest.raises(UnclipError, match="at step 5 "):
        train(tiny_stage(nan_at=5), _config(log_every=100), tmp_path, progress=False)
    assert load_train_state(tmp_path).step == 4  # the NaN was caught before the step-8 checkpoint


def test_bf16_autocast_on_cpu(tmp_path, tiny_stage):
    stage = tiny_stage(record_dtype=True)
    result = train(stage, _config(steps=6, precision="bf16"), tmp_path, progress=False)
    assert stage.dtypes and all(d == torch.bfloat16 for d in stage.dtypes)
    assert all(p.dtype == torch.float32 for p in stage.model.parameters())  # master weights stay fp32
    assert torch.isfinite(torch.tensor(result.final_loss))


def test_fp32_does_not_autocast(tmp_path, tiny_stage):
    stage = tiny_stage(record_dtype=True)
    train(stage, _config(steps=2, precision="fp32"), tmp_path, progress=False)
    assert stage.dtypes == [torch.float32, torch.float32]
    # auto on a CPU is bf16 only where it runs natively (AVX512-BF16 / AMX)
    from unclip.nn.precision import bf16_native

    stage = tiny_stage(record_dtype=True)
    train(stage, _config(steps=2, precision="auto"), tmp_path / "auto", progress=False)
    assert stage.dtypes == [torch.bfloat16 if bf16_native("cpu") else torch.float32] * 2


def test_grad_clip_bounds_the_update(tmp_path, tiny_stage):
    train(
        tiny_stage(),
        _config(steps=3, log_every=1, grad_clip=1e-3, lr=1.0, warmup_steps=0),
        tmp_path / "a",
        progress=False,
    )
    norms = [r["grad_norm"] for r in _log(tmp_path / "a")]
    assert all(n > 1e-3 for n in norms)  # the norm is reported before clipping


def test_no_ema_exports_raw_weights(tmp_path, tiny_stage):
    stage = tiny_stage()
    result = train(stage, _config(steps=4, ema_decay=0.0), tmp_path, progress=False)
    assert not (tmp_path / "train_state" / "ema.safetensors").exists()
    assert result.model is stage.model


def test_on_log_evaluate_and_silence(tmp_path, tiny_stage, capsys):
    stage = tiny_stage()
    records = []
    result = train(stage, _config(steps=10, log_every=5, eval_every=4), tmp_path, progress=False, on_log=records.append)
    assert stage.evaluated == [4, 8, 10]
    assert [r["step"] for r in records] == [4, 5, 8, 10, 10]
    assert "val_mse" in records[-1]["eval"] and result.eval == records[-1]["eval"]
    assert [json.loads(x)["step"] for x in (tmp_path / "eval_log.jsonl").read_text().splitlines()] == [4, 8, 10]
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_loss_must_be_a_trainable_scalar(tmp_path, tiny_stage):
    stage = tiny_stage()
    stage.loss = lambda batch, g: (torch.zeros(3), {})
    with pytest.raises(UnclipError, match="scalar"):
        train(stage, _config(steps=2), tmp_path, progress=False)
    stage.loss = lambda batch, g: (torch.tensor(1.0), {})
    with pytest.raises(UnclipError, match="does not depend"):
        train(stage, _config(steps=2), tmp_path / "b", progress=False)
