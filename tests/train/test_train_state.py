"""Checkpoint files: safetensors and JSON only, complete, atomic, exact."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open

from unclip.errors import CheckpointError
from unclip.train import TrainConfig, load_train_state, train
from unclip.train.state import optimizer_state_from_tensors, optimizer_state_to_tensors


def _config(**kw) -> TrainConfig:
    base = dict(steps=6, lr=1e-2, warmup_steps=2, checkpoint_every=3, log_every=2, ema_decay=0.9)
    base.update(kw)
    return TrainConfig(**base)


def test_checkpoint_files_are_safetensors_and_json(tmp_path, tiny_stage):
    train(tiny_stage(), _config(), tmp_path, progress=False)
    state_dir = tmp_path / "train_state"
    assert sorted(os.listdir(state_dir)) == [
        "ema.safetensors",
        "model.safetensors",
        "optimizer.safetensors",
        "state.json",
    ]
    assert sorted(os.listdir(tmp_path)) == [
        "eval_log.jsonl",
        "loss_log.jsonl",
        "tiny",
        "train_state",
    ]  # no temp or backup folders left
    for name in ("ema.safetensors", "model.safetensors", "optimizer.safetensors"):
        raw = (state_dir / name).read_bytes()
        assert raw[:1] != b"\x80" and raw[:2] != b"PK"  # neither a pickle nor a torch.save zip
        with safe_open(str(state_dir / name), framework="pt") as f:
            assert f.metadata()["step"] == "6"
            keys = list(f.keys())
        assert keys
    with safe_open(str(state_dir / "optimizer.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    assert {"state.0.exp_avg", "state.0.exp_avg_sq", "state.0.step"} <= keys
    state = json.loads((state_dir / "state.json").read_text())
    assert state["step"] == 6 and state["stage"] == "tiny" and state["format_version"] == 1
    assert state["config"]["lr"] == 1e-2 and state["config"]["betas"] == [0.9, 0.999]
    assert state["optimizer"]["param_groups"][0]["betas"] == [0.9, 0.999]
    assert isinstance(state["rng"]["torch"], list) and all(isinstance(v, int) for v in state["rng"]["torch"][:10])
    assert state["log"]["records"] == 3


def test_optimizer_state_roundtrip_is_exact():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    opt = torch.optim.AdamW(
        [
            {"params": [model[0].weight, model[1].weight], "weight_decay": 0.1},
            {"params": [model[0].bias, model[1].bias], "weight_decay": 0.0},
        ],
        lr=1e-2,
    )
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 3)).pow(2).mean().backward()
        opt.step()
    tensors, meta = optimizer_state_to_tensors(opt.state_dict())
    tensors = {k: v.clone() for k, v in tensors.items()}  # as if read back from disk: no shared storage
    restored = optimizer_state_from_tensors(tensors, json.loads(json.dumps(meta)))
    original = opt.state_dict()
    assert restored["param_groups"] == original["param_groups"]
    assert restored["state"].keys() == original["state"].keys()
    for i, values in original["state"].items():
        for name, value in values.items():
            assert torch.equal(restored["state"][i][name], value)
    # a fresh optimizer loaded from it takes the same next step
    clone = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    clone.load_state_dict(model.state_dict())
    opt2 = torch.optim.AdamW(
        [
            {"params": [clone[0].weight, clone[1].weight], "weight_decay": 0.1},
            {"params": [clone[0].bias, clone[1].bias], "weight_decay": 0.0},
        ],
        lr=1e-2,
    )
    opt2.load_state_dict(restored)
    x = torch.randn(5, 3)
    for m, o in ((model, opt), (clone, opt2)):
        o.zero_grad()
        m(x).pow(2).mean().backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), clone.parameters()))


def test_interrupted_swap_falls_back_to_backup(tmp_path, tiny_stage):
    train(tiny_stage(), _config(), tmp_path, progress=False)
    # a crash between the two renames leaves only the backup folder
    os.replace(tmp_path / "train_state", tmp_path / ".train_state.old")
    assert load_train_state(tmp_path).step == 6


def test_folder_without_state_json_is_not_a_checkpoint(tmp_path, tiny_stage):
    train(tiny_stage(), _config(), tmp_path, progress=False)
    (tmp_path / "train_state" / "state.json").unlink()
    with pytest.raises(CheckpointError, match="does not exist"):
        load_train_state(tmp_path)


def test_truncated_weights_are_detected(tmp_path, tiny_stage):
    train(tiny_stage(), _config(), tmp_path, progress=False)
    path = tmp_path / "train_state" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_train_state(tmp_path)


def test_wrong_format_version_is_refused(tmp_path, tiny_stage):
    train(tiny_stage(), _config(), tmp_path, progress=False)
    path = tmp_path / "train_state" / "state.json"
    state = json.loads(path.read_text())
    state["format_version"] = 99
    path.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_train_state(tmp_path)
