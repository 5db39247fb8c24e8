"""A real `unclip serve` under load, and its shutdown on SIGTERM (loopback only, bounded in count and time)."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from serve_helpers import ServerProcess

httpx = pytest.importorskip("httpx", reason="the load tests need httpx")

BURST = 32


def test_burst_of_concurrent_generate_requests(live_server):
    """32 concurrent /api/generate at tiny settings against 1 worker and a queue of 4: every request
    is answered 200 or 503 (none lost), each 200 carries its own request's prompt and seed and the
    server ran exactly that many jobs (none duplicated), /api/health answers throughout, and the
    server's RSS after the burst is within 300 MB of before."""
    url = live_server.url
    warm = httpx.post(f"{url}/api/generate", json={"prompts": ["warm up"], "steps": 2, "prior_steps": 2}, timeout=120)
    assert warm.status_code == 200, warm.text
    done_before = httpx.get(f"{url}/api/health", timeout=10).json()["queues"]
    (done_before,) = [q["done"] for q in done_before.values()]
    rss_before = live_server.rss_mb()

    stop, health = threading.Event(), []

    def poll_health() -> None:
        with httpx.Client(timeout=10) as c:
            while not stop.is_set():
                start = time.monotonic()
                try:
                    status = c.get(f"{url}/api/health").status_code
                except httpx.HTTPError as exc:
                    status = repr(exc)
                health.append((status, time.monotonic() - start))
                stop.wait(0.05)

    go = threading.Barrier(BURST)

    def one(k: int):
        body = {"prompts": [f"request {k}"], "num_images": 1, "seed": k, "steps": 2, "prior_steps": 2}
        go.wait(30)
        r = httpx.post(f"{url}/api/generate", json=body, timeout=120)
        return k, r.status_code, r.headers.get("retry-after"), r.json()

    poller = threading.Thread(target=poll_health)
    poller.start()
    start = time.monotonic()
    try:
        with ThreadPoolExecutor(BURST) as ex:
            results = list(ex.map(one, range(BURST)))
    finally:
        time.sleep(0.3)
        stop.set()
        poller.join(30)
    took = time.monotonic() - start

    assert sorted(k for k, *_ in results) == list(range(BURST))  # every request answered exactly once
    statuses = [s for _, s, _, _ in results]
    assert set(statuses) <= {200, 503}, statuses
    ok = [(k, body) for k, s, _, body in results if s == 200]
    assert ok, "no request succeeded"
    for k, body in ok:  # each answer is its own request's, not another's
        assert [(im["prompt"], im["seed"]) for im in body["images"]] == [(f"request {k}", k)]
    for k, s, retry, body in results:
        if s == 503:
            assert retry is not None and int(retry) >= 1 and "full" in body["error"]
    queues = httpx.get(f"{url}/api/health", timeout=10).json()["queues"]
    (q,) = queues.values()
    assert q["done"] - done_before == len(ok) and q["waiting"] == 0 and q["running"] == 0  # no job ran twice or leaked
    assert health and all(s == 200 for s, _ in health), health
    assert max(t for _, t in health) < 5.0, max(t for _, t in health)
    rss_after = live_server.rss_mb()
    assert rss_after - rss_before < 300, (rss_before, rss_after)
    print(
        f"\nburst of {BURST}: {len(ok)} x 200, {statuses.count(503)} x 503 in {took:.2f} s; "
        f"{len(health)} health checks, slowest {max(t for _, t in health) * 1000:.0f} ms; "
        f"RSS {rss_before:.0f} -> {rss_after:.0f} MB"
    )


def test_sigterm_lets_in_flight_requests_finish(tiny_model, tmp_path):
    """SIGTERM while a request runs and another waits: both are answered (200, or 503 for a job the
    closing pool refused), and the server exits 0 without a traceback."""
    extra = ["--no-ui", "--shutdown-timeout", "60"]
    server = ServerProcess(["--model", f"tiny={tiny_model}"], extra, tmp_path / "server.log")
    try:
        slow = {"prompts": ["a red circle"], "num_images": 4, "steps": 50, "prior_steps": 20}
        answers: dict[int, object] = {}

        def post(k: int) -> None:
            try:
                answers[k] = httpx.post(f"{server.url}/api/generate", json=slow, timeout=120).status_code
            except httpx.HTTPError as exc:
                answers[k] = repr(exc)

        threads = [threading.Thread(target=post, args=(k,)) for k in range(2)]
        threads[0].start()
        for _ in range(200):  # until the first job is running
            if httpx.get(f"{server.url}/api/health", timeout=10).json()["queues"]["tiny"]["running"] == 1:
                break
            assert 0 not in answers, answers  # answered before it could run: the test would prove nothing
            time.sleep(0.05)
        threads[1].start()
        for _ in range(400):  # until the second request is queued (or, if the first finished, running)
            queue = httpx.get(f"{server.url}/api/health", timeout=10).json()["queues"]["tiny"]
            if queue["waiting"] + queue["running"] >= 2 or 1 in answers:
                break
            time.sleep(0.05)
        start = time.monotonic()
        status = server.stop(signal.SIGTERM, timeout=90)
        for t in threads:
            t.join(60)
        log = server.log()
        assert status == 0, log
        assert answers[0] == 200 and answers[1] in (200, 503), (answers, log)
        assert "Traceback" not in log, log
        print(f"\nSIGTERM: answers {answers}, exit {status} after {time.monotonic() - start:.1f} s")
    finally:
        server.stop(signal.SIGKILL)
