"""Training on two processes (gloo, CPU), launched as torchrun or srun would launch them.

One 2-rank launch trains several tiny runs (each worker runs a list of jobs, so torch is
imported once per rank); the tests compare them with 1-rank runs trained in this process.

Tolerance of the 1-rank vs 2-rank comparisons. Both runs see the same samples and noise,
but the gradient of the global mean loss is summed in a different order: DDP all-reduces
two half-batch gradients (a sum of two float32 sums) where one process reduces the whole
batch in one backward. The gradients therefore agree to float32 rounding (~1e-7 relative).
AdamW then divides each coordinate by its own RMS gradient, so a coordinate whose exact
gradient is ~0 (a bias right before a GroupNorm, which cancels it) moves by O(lr) per step
in a direction set by that rounding noise. Hence two bounds: 99.9% of the coordinates agree
to 1e-5 (a run on other samples or with unaveraged gradients misses this by orders of
magnitude: O(lr) = 1e-3 per step on most coordinates), and every coordinate to 2 * lr * K
(the most AdamW can move a coordinate in K steps of rate lr, in either direction).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from unclip.storage.checkpoint import load_tensors
from unclip.train import distributed
from unclip.train.components import train_component

WORKER = Path(__file__).with_name("dist_worker.py")
SRC = Path(__file__).resolve().parents[2] / "src"
K, LR = 4, 1e-3  # steps of each compared run; the tiny presets' learning rate
COMPONENT = {
    "prior": "prior_diffusion",
    "decoder": "decoder",
    "clip": "clip",
    "ar-prior": "prior_ar",
    "upsampler": "upsampler_128",
}
STAGES = list(COMPONENT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(rank: int, world: int, port: int) -> dict[str, str]:
    env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    return env


def _launch(argv: list[str], world: int = 2, log_dir: Path | None = None) -> list[subprocess.Popen]:
    """Start ``world`` processes of ``argv`` with the environment torchrun would give them."""
    port = _free_port()
    procs = []
    for rank in range(world):
        out = open(log_dir / f"rank{rank}.log", "w") if log_dir else subprocess.DEVNULL  # noqa: SIM115
        procs.append(
            subprocess.Popen([sys.executable, *argv], env=_env(rank, world, port), stdout=out, stderr=subprocess.STDOUT)
        )
    return procs


def _wait(procs: list[subprocess.Popen], log_dir: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"2-rank run did not finish in {timeout} s:\n" + _logs(log_dir))
    if any(p.returncode for p in procs):
        pytest.fail(f"2-rank run failed (exit {[p.returncode for p in procs]}):\n" + _logs(log_dir))


def _logs(log_dir: Path) -> str:
    return "\n".join(f"--- {f.name}\n{f.read_text()[-3000:]}" for f in sorted(log_dir.glob("rank*.log")))


def _state(out: Path, component: str) -> dict[str, dict[str, torch.Tensor]]:
    folder = out / "runs" / component / "train_state"
    names = [n for n in ("model", "ema", "optimizer") if (folder / f"{n}.safetensors").is_file()]  # CLIP keeps no EMA
    return {name: load_tensors(folder / f"{name}.safetensors") for name in names}


def _losses(out: Path, component: str) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "runs" / component / "loss_log.jsonl").read_text().splitlines()]


def _assert_close_runs(a: Path, b: Path, component: str, *, same_log: bool = True) -> None:
    sa, sb = _state(a, component), _state(b, component)
    assert sa.keys() == sb.keys()
    for name in ("model", "ema") if "ema" in sa else ("model",):
        assert sa[name].keys() == sb[name].keys()
        diff = torch.cat([(sa[name][k].float() - sb[name][k].float()).abs().flatten() for k in sa[name]])
        assert float(diff.quantile(0.999)) < 1e-5, (
            f"{component} {name}: 99.9% quantile of |diff| {float(diff.quantile(0.999)):.3g}"
        )
        assert float(diff.max()) <= 2 * LR * K, f"{component} {name}: max |diff| {float(diff.max()):.3g}"
    if same_log:  # the loss log, averaged over ranks, is the 1-rank log
        assert _losses(a, component) == pytest.approx(_losses(b, component), rel=1e-5)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny model directory (CLIP, cached embeddings) to train the prior and decoder in."""
    from unclip.train.components import train_all

    out = tmp_path_factory.mktemp("dist") / "base"
    train_all("shapes", "tiny", out, steps=2, progress=False)
    return out


@pytest.fixture(scope="module")
def runs(base, tmp_path_factory) -> dict[str, Path]:
    """1-rank runs here, one 2-rank launch of several jobs, then 1-rank resumes of its checkpoints."""
    root = tmp_path_factory.mktemp("runs")
    names = [f"{n}{w}" for n in STAGES for w in (1, 2)] + ["from2", "from1", "fsdp2", "fsdp_from1"]
    dirs = {n: root / n for n in names}
    for d in dirs.values():
        shutil.copytree(base, d)
    for name in STAGES:
        train_component(name, "shapes", "tiny", dirs[f"{name}1"], steps=K, progress=False)
    for name in ("from1", "fsdp_from1"):  # resumed on 2 ranks (DDP, FSDP)
        train_component("decoder", "shapes", "tiny", dirs[name], steps=K // 2, progress=False)
    jobs = [{"name": n, "out": str(dirs[f"{n}2"]), "steps": K} for n in STAGES]
    jobs += [
        {"name": "decoder", "out": str(dirs["from2"]), "steps": K // 2},  # resumed on 1 rank below
        {"name": "decoder", "out": str(dirs["from1"]), "steps": K, "resume": True},
        {"name": "decoder", "out": str(dirs["fsdp2"]), "steps": K, "fsdp": True},
        {"name": "decoder", "out": str(dirs["fsdp_from1"]), "steps": K, "resume": True, "fsdp": True},
    ]
    _wait(_launch([str(WORKER), json.dumps(jobs)], log_dir=root), root)
    train_component("decoder", "shapes", "tiny", dirs["from2"], steps=K, resume=True, progress=False)
    return dirs


@pytest.mark.parametrize("name", STAGES)
def test_two_ranks_train_like_one_rank_with_the_same_global_batch(runs, name):
    _assert_close_runs(runs[f"{name}1"], runs[f"{name}2"], COMPONENT[name])


@pytest.mark.parametrize("name", STAGES)
def test_every_rank_holds_identical_weights_and_ema(runs, name):
    r0, r1 = (load_tensors(runs[f"{name}2"] / f"rank{r}_{COMPONENT[name]}.safetensors") for r in (0, 1))
    assert r0.keys() == r1.keys() and any(k.startswith("ema.") for k in r0)
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    saved = _state(runs[f"{name}2"], COMPONENT[name])["model"]
    assert all(torch.equal(saved[k], r0[f"model.{k}"]) for k in saved)


def test_checkpoints_resume_on_another_number_of_ranks(runs):
    # 2-rank checkpoint at step K/2 resumed on 1 rank, and 1-rank checkpoint resumed on 2 ranks
    # (their logs differ: a run of K/2 steps logs at its last step)
    _assert_close_runs(runs["decoder1"], runs["from2"], "decoder", same_log=False)
    _assert_close_runs(runs["decoder1"], runs["from1"], "decoder", same_log=False)


def test_fsdp_trains_like_one_rank_and_saves_whole_tensors(runs):
    _assert_close_runs(runs["decoder1"], runs["fsdp2"], "decoder")
    _assert_close_runs(
        runs["decoder1"], runs["fsdp_from1"], "decoder", same_log=False
    )  # 1-rank checkpoint, FSDP resume
    whole = _state(runs["decoder1"], "decoder")
    sharded_run = _state(runs["fsdp2"], "decoder")
    for name in ("model", "ema", "optimizer"):
        assert {k: v.shape for k, v in whole[name].items()} == {k: v.shape for k, v in sharded_run[name].items()}
    assert (runs["fsdp2"] / "decoder" / "weights.safetensors").is_file()


def test_rank_rows_split_the_global_batch_and_refuse_uneven_batches(monkeypatch):
    monkeypatch.setattr(distributed, "context", lambda: distributed.DistContext(rank=1, world_size=2))
    x = torch.arange(8)
    assert distributed.take_rows(x).tolist() == [4, 5, 6, 7]
    a, (b, c) = distributed.take_rows(x, (x * 2, x * 3))
    assert b.tolist() == [8, 10, 12, 14] and c.shape == (4,)
    with pytest.raises(distributed.ConfigError, match="divisible by 2"):
        distributed.take_rows(torch.arange(7))


def test_grad_checkpointing_gives_the_same_gradients():
    from unclip.nn.unet import UNet, UNetConfig

    torch.manual_seed(0)
    unet = UNet(
        UNetConfig(
            image_size=8,
            base_channels=8,
            channel_mults=(1, 2),
            num_res_blocks=1,
            attention_resolutions=(4,),
            head_channels=8,
        )
    )
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([3, 40])
    grads = []
    for on in (False, True):
        unet.zero_grad()
        unet.grad_checkpointing = on
        unet(x, t).square().mean().backward()
        grads.append([p.grad.clone() for p in unet.parameters()])
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(*grads))


def test_killing_a_rank_fails_the_other_quickly_and_resume_finishes(base, tmp_path):
    out = tmp_path / "model"
    shutil.copytree(base, out)
    shutil.rmtree(out / "runs" / "decoder")  # the base's own checkpoint must not count as this run's
    argv = [
        "-m",
        "unclip",
        "train",
        "decoder",
        "--preset",
        "tiny",
        "--steps",
        "5000",
        "--out",
        str(out),
        "--no-progress",
        "--dist-timeout",
        "30",
        "--overwrite",  # the copied base holds a decoder: start this run over (issue 18's folder guard)
    ]
    procs = _launch(argv, log_dir=tmp_path)
    state = out / "runs" / "decoder" / "train_state" / "state.json"
    deadline = time.monotonic() + 180
    while not state.is_file():
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            for p in procs:
                p.kill()
            pytest.fail("no checkpoint appeared:\n" + _logs(tmp_path))
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    try:
        code = procs[0].wait(timeout=60)
    except subprocess.TimeoutExpired:
        procs[0].kill()
        pytest.fail("rank 0 still running 60 s after rank 1 was killed:\n" + _logs(tmp_path))
    elapsed = time.monotonic() - killed_at
    log = (tmp_path / "rank0.log").read_text()
    assert code != 0 and elapsed < 60
    assert "rank 0 of 2: a collective failed" in log and "--resume" in log, log[-2000:]
    # the last complete checkpoint loads, and --resume (here on one process) finishes the run
    step = json.loads(state.read_text())["step"]
    from unclip.apps.cli import main

    assert (
        main(
            [
                "train",
                "decoder",
                "--preset",
                "tiny",
                "--steps",
                str(step + 10),
                "--out",
                str(out),
                "--resume",
                "--no-progress",
            ]
        )
        == 0
    )
    assert json.loads(state.read_text())["step"] == step + 10
    assert (out / "decoder" / "weights.safetensors").is_file()


def test_a_stop_signal_on_one_rank_stops_every_rank_at_one_checkpoint(base, tmp_path):
    out = tmp_path / "model"
    shutil.copytree(base, out)
    shutil.rmtree(out / "runs" / "decoder")
    argv = ["-m", "unclip", "train", "decoder", "--preset", "tiny", "--steps", "5000", "--out", str(out)]
    argv += ["--checkpoint-every", "100000", "--no-progress", "--dist-timeout", "30", "--overwrite"]
    procs = _launch(argv, log_dir=tmp_path)
    log = out / "runs" / "decoder" / "loss_log.jsonl"
    deadline = time.monotonic() + 180
    while not (log.is_file() and any(json.loads(x)["step"] > 10 for x in log.read_text().splitlines())):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            for p in procs:
                p.kill()
            pytest.fail("no training progress:\n" + _logs(tmp_path))
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGTERM)  # torchrun would signal every rank; one is the harder case
    try:
        codes = [p.wait(timeout=60) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail("the ranks did not stop within 60 s of SIGTERM:\n" + _logs(tmp_path))
    logs = _logs(tmp_path)
    assert codes == [1, 128 + signal.SIGTERM], logs  # rank 0 stopped for rank 1's signal
    assert "collective failed" not in logs and "stopped by a stop signal on another rank" in logs, logs
    step = json.loads((out / "runs" / "decoder" / "train_state" / "state.json").read_text())["step"]
    assert 10 < step < 5000  # the only checkpoint is the one the signal asked for
    from unclip.apps.cli import main

    argv = ["train", "decoder", "--preset", "tiny", "--steps", str(step + 4), "--out", str(out), "--resume"]
    assert main([*argv, "--no-progress"]) == 0
    assert (out / "decoder" / "weights.safetensors").is_file()


@pytest.mark.slow
def test_train_all_under_torchrun_writes_a_model_that_generate_loads(tmp_path):
    out = tmp_path / "model"
    argv = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "unclip"]
    argv += ["train", "all", "--data", "shapes", "--preset", "tiny", "--steps", "4", "--out", str(out), "--no-progress"]
    env = _env(0, 1, 0)
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key)
    done = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["stages"]["decoder"]["world_size"] == 2
    from unclip.apps.cli import main

    assert (
        main(
            ["generate", "a red circle", "--model", str(out), "-n", "1", "--steps", "4", "--out", str(tmp_path / "gen")]
        )
        == 0
    )
    assert (tmp_path / "gen" / "000.png").is_file()
