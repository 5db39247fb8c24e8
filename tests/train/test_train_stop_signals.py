"""Stopping on SIGTERM / SIGUSR1 / Ctrl-C: a checkpoint at the step, then an exact resume;
``--checkpoint-every`` and its freedom to change on resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_train_loop import _assert_same_run, _config

from unclip.errors import TrainingInterrupted
from unclip.train import LOSS_LOG, TrainConfig, load_train_state, train
from unclip.train.budget import train_config
from unclip.train.fingerprint import stage_fingerprint

ROOT = Path(__file__).resolve().parents[2]


def _signal_at(step: int, sig: signal.Signals, times: int = 1):
    """An ``on_log`` callback that sends ``sig`` to this process when the log reaches ``step``."""

    def on_log(record: dict) -> None:
        if record.get("step") == step and "eval" not in record:
            for _ in range(times):
                os.kill(os.getpid(), sig)

    return on_log


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_a_signal_stops_after_the_step_with_a_checkpoint_and_resumes_exactly(tmp_path, tiny_stage, read_state, sig):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    train(tiny_stage(), _config(), straight, progress=False)
    before = signal.getsignal(signal.SIGTERM)

    first = tiny_stage()
    # log_every=3: the signal arrives while step 6 is logged; step 7 is the one that finishes
    result = train(first, _config(), stopped, progress=False, on_log=_signal_at(6, sig))
    assert result.interrupted == sig.name and result.stopped_early and result.steps == 7
    assert load_train_state(stopped).step == 7  # checkpoint_every=4 alone would have kept step 4
    assert first.exported is None and not (stopped / "tiny").exists()
    assert signal.getsignal(signal.SIGTERM) is before  # the loop's handlers are gone again

    second = tiny_stage()
    resumed = train(second, _config(), stopped, resume=True, progress=False)
    assert second.steps_seen == list(range(7, 20)) and resumed.interrupted is None
    _assert_same_run(straight, stopped, read_state)


def test_a_second_ctrl_c_stops_at_once(tmp_path, tiny_stage):
    with pytest.raises(KeyboardInterrupt):
        train(tiny_stage(), _config(), tmp_path, progress=False, on_log=_signal_at(6, signal.SIGINT, times=2))
    assert load_train_state(tmp_path).step == 4  # the last regular checkpoint; no export
    assert not (tmp_path / "tiny").exists()


def test_training_off_the_main_thread_leaves_signals_alone(tmp_path, tiny_stage):
    results = []
    thread = threading.Thread(
        target=lambda: results.append(train(tiny_stage(), _config(steps=4), tmp_path, progress=False))
    )
    thread.start()
    thread.join()
    assert results and results[0].steps == 4 and results[0].interrupted is None


def test_checkpoint_every_option_overrides_the_preset_and_is_not_part_of_the_fingerprint():
    section = {"train": {"steps": 100, "checkpoint_every": 50, "warmup_steps": 5}}
    opts = SimpleNamespace(
        seed=0, device="cpu", fsdp=False, grad_checkpointing=False, steps=None, time_limit_s=None, checkpoint_every=7
    )
    config, _ = train_config(section, opts)
    assert isinstance(config, TrainConfig) and config.checkpoint_every == 7 and config.steps == 100
    config, _ = train_config(section, SimpleNamespace(**{**vars(opts), "checkpoint_every": None}))
    assert config.checkpoint_every == 50
    a = stage_fingerprint("shapes", "tiny", {**vars(opts), "checkpoint_every": 7})
    b = stage_fingerprint("shapes", "tiny", {**vars(opts), "checkpoint_every": None})
    assert a == b


def test_training_interrupted_exit_code():
    assert TrainingInterrupted("x", "SIGTERM").exit_code == 128 + signal.SIGTERM
    assert TrainingInterrupted("x", "a stop signal on another rank").exit_code == 1


def _start(argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "unclip", *argv]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_log(path: Path, beyond: int, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    """Wait until ``path`` (a loss log) records a step > ``beyond``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if path.is_file():
            steps = [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]
            if steps and steps[-1] > beyond:
                return
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"no log step beyond {beyond} in {path} after {timeout} s")


def test_cli_sigterm_writes_a_checkpoint_and_resume_continues_with_another_checkpoint_interval(tmp_path):
    out = tmp_path / "model"
    run_dir = out / "runs" / "clip"
    argv = ["train", "clip", "--data", "shapes", "--preset", "tiny", "--steps", "100000", "--out", str(out)]
    argv += ["--no-progress"]
    proc = _start([*argv, "--checkpoint-every", "100000"])
    _wait_for_log(run_dir / LOSS_LOG, 0, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "--resume" in err
    first = load_train_state(run_dir).step
    assert 0 < first < 100000  # only the signal could have written it
    assert not (out / "clip").exists()  # not exported: the stage has not finished

    # the checkpoint interval may change on resume (it does not change the result)
    proc = _start([*argv, "--resume", "--checkpoint-every", "50"])
    _wait_for_log(run_dir / LOSS_LOG, first + 5, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert load_train_state(run_dir).step > first
