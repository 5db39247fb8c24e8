"""The bounded worker pool, the step-progress hook and the serve command's helpers, without a server."""

from __future__ import annotations

import threading
import time

import pytest

from unclip.apps.serve.limits import Limits
from unclip.apps.serve.progress import JobProgress, track
from unclip.apps.serve.server import allowed_hosts_for, model_specs
from unclip.apps.serve.workers import PoolClosed, QueueFull, WorkerPool
from unclip.errors import InputError


def _wait_running(pool: WorkerPool, n: int) -> None:
    for _ in range(500):
        if pool.stats()["running"] == n:
            return
        time.sleep(0.01)
    raise AssertionError(pool.stats())


def test_pool_runs_jobs_and_bounds_its_queue():
    pool = WorkerPool("m", workers=2, queue_size=3)
    try:
        assert [f.result(5) for f in [pool.submit(pow, 2, k) for k in range(3)]] == [1, 2, 4]
        release = threading.Event()
        running = [pool.submit(release.wait, 10) for _ in range(2)]
        _wait_running(pool, 2)
        waiting = [pool.submit(lambda k=k: k) for k in range(3)]
        start = time.monotonic()
        with pytest.raises(QueueFull) as info:
            pool.submit(print, "never")
        assert time.monotonic() - start < 0.5  # refused at once, not after a wait
        assert info.value.retry_after >= 1 and "full" in str(info.value)
        release.set()
        assert all(f.result(5) for f in running) and [f.result(5) for f in waiting] == [0, 1, 2]
        assert pool.stats()["done"] == 8
    finally:
        pool.close(5)


def test_job_errors_reach_the_caller():
    pool = WorkerPool("m", workers=1, queue_size=1)
    try:
        with pytest.raises(ZeroDivisionError):
            pool.submit(lambda: 1 / 0).result(5)
        assert pool.submit(lambda: "still alive").result(5) == "still alive"
    finally:
        pool.close(5)


def test_close_finishes_running_jobs_and_refuses_queued_ones():
    pool = WorkerPool("m", workers=1, queue_size=2)
    release = threading.Event()
    running = pool.submit(lambda: release.wait(10) and "finished")
    _wait_running(pool, 1)
    queued = pool.submit(lambda: "never run")
    closer = threading.Thread(target=pool.close, args=(10,))
    closer.start()
    with pytest.raises(PoolClosed):
        queued.result(5)
    with pytest.raises(PoolClosed):
        pool.submit(print)
    release.set()
    closer.join(10)
    assert running.result(1) == "finished" and not closer.is_alive()


def test_retry_hint_follows_the_mean_job_time():
    pool = WorkerPool("m", workers=1, queue_size=1)
    try:
        pool.submit(time.sleep, 0.3).result(5)
        assert pool.retry_after() == 1  # ceil(0.3 s x 1 job ahead)
        pool._mean_s = 7.2
        assert pool.retry_after() == 8
    finally:
        pool.close(5)


def test_bad_pool_sizes():
    with pytest.raises(Exception, match="queue_size >= 1"):
        WorkerPool("m", workers=1, queue_size=0)


def test_progress_counts_sampler_steps_on_its_own_thread_only(served_pipe):
    """The hook reports every DDIM step of a job on its thread; another thread's sampling is untouched."""
    state, other = JobProgress(), []
    assert state.fraction() is None and state.describe() == "waiting in the queue"

    def elsewhere():
        other.append(len(served_pipe.generate("a red circle", steps=2, prior_steps=2)))

    with track(state):
        t = threading.Thread(target=elsewhere)
        t.start()
        served_pipe.generate(["a red circle"], num_images=1, steps=3, prior_steps=2)
        t.join()
    assert state.loops == 2  # prior, then decoder
    assert (state.n, state.total) == (3, 3) and state.fraction() == 1.0 and "step 3 of 3" in state.describe()
    assert other == [1]


def test_limits_must_be_positive():
    with pytest.raises(InputError, match="max_steps"):
        Limits(max_steps=0)
    with pytest.raises(InputError, match="max_guidance"):
        Limits(max_guidance=float("nan"))
    assert Limits().max_body_bytes > 2 * Limits().max_upload_bytes


def test_model_specs_and_hosts():
    assert model_specs(["shapes", "mine=/tmp/x/model", "/data/run7/"]) == {
        "shapes": "shapes",
        "mine": "/tmp/x/model",
        "run7": "/data/run7/",
    }
    with pytest.raises(InputError, match="served twice"):
        model_specs(["shapes", "shapes"])
    with pytest.raises(InputError, match="NAME=DIR"):
        model_specs(["bad name=/x"])
    assert allowed_hosts_for("127.0.0.1") == ["127.0.0.1", "::1", "[::1]", "localhost"]
    assert allowed_hosts_for("::") is None and "myhost" in allowed_hosts_for("myhost")


def test_ui_jobs_report_queue_position_then_steps(served_pipe):
    """The UI's runner shows 'waiting in the queue' while its job waits and the sampler's steps while it
    runs, and refuses what the API refuses with the same message."""
    pytest.importorskip("gradio", reason="the UI needs gradio")
    from unclip.apps.serve.registry import Registry
    from unclip.apps.serve.ui import UIJobs

    registry = Registry({"tiny": served_pipe}, workers=1, queue_size=2)
    jobs = UIJobs(registry, Limits(max_steps=100))
    seen: list[str] = []
    try:
        release = threading.Event()
        blocker = registry.models["tiny"].pool.submit(release.wait, 10)
        threading.Timer(0.6, release.set).start()
        body = {"prompts": ["a red circle"], "num_images": 2, "steps": 50, "prior_steps": 50}
        result = jobs.run("generate", body, lambda frac, desc: seen.append(desc))
        assert blocker.result(5) and len(result.images) == 2
        assert seen[0] == "waiting in the queue" and any("step" in d for d in seen), seen
        files = jobs.files(result)
        assert [p.rsplit("/", 1)[1] for p in files] == ["manifest.json"]
        import gradio as gr

        with pytest.raises(gr.Error, match="num_images"):
            jobs.run("generate", {"prompts": ["a"], "num_images": 9}, lambda *a: None)
    finally:
        jobs.close()
        registry.close(5)
    assert not jobs.downloads.exists()
