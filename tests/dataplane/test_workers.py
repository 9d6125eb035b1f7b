"""Workers: each is a thread with a runtime of its own (``meshctl-worker<N>``)
that accepts on every listener and keeps the connections it accepted: the
connections spread over the workers (counted per worker in ``/stats`` and
``/metrics``), and a stop drains what is in flight on all of them."""

from __future__ import annotations

import threading
import time

import httpx

from helpers import cluster, http_listener, route, wait_until


def test_connections_go_to_the_worker_with_the_fewest_open(backend, proxy) -> None:
    a = backend("a")
    config = {
        "admin": {"address": "127.0.0.1:0"},
        "listeners": [http_listener("web", [route("one")])],
        "clusters": [cluster("one", [a.address])],
    }
    dp = proxy(config, 2)
    url = f"http://{dp.addresses()['web']}/"
    clients = [httpx.Client(timeout=10) for _ in range(16)]
    try:
        for c in clients:  # one connection each, opened one after another, kept open
            assert c.get(url).status_code == 200
        # Requests on each connection go on where it was accepted.
        assert all(c.get(url).status_code == 200 for c in clients for _ in range(3))
        workers = dp.stats()["workers"]
        # (the admin listener's connections count too: none were made yet)
        assert workers == [{"connections": 8, "active_connections": 8}] * 2
        metrics = httpx.get(f"http://{dp.addresses()['admin']}/metrics", timeout=10).text
        # (the scrape's own connection is on worker 0, whose count it raised)
        assert f"meshctl_worker_connections_total{{{labels(1)}}} 8" in metrics
        assert f"meshctl_worker_active_connections{{{labels(1)}}} 8" in metrics
        assert f"meshctl_worker_connections_total{{{labels(0)}}} 9" in metrics
    finally:
        for c in clients:
            c.close()
    wait_until(
        lambda: [w["active_connections"] for w in dp.stats()["workers"]] == [0, 0],
        what="the closed connections to end on both workers",
    )


def labels(worker: int) -> str:
    return f'service="",namespace="",workload="",worker="{worker}"'


def test_stop_drains_requests_in_flight_on_every_worker(backend, proxy) -> None:
    slow = backend("slow")
    dp = proxy({"listeners": [http_listener("web", [route("one")])], "clusters": [cluster("one", [slow.address])]}, 2)
    url = f"http://{dp.addresses()['web']}/?ms=800"
    results: list[int] = []
    lock = threading.Lock()

    def call() -> None:
        status = httpx.get(url, timeout=10).status_code  # a connection of its own each
        with lock:
            results.append(status)

    threads = [threading.Thread(target=call) for _ in range(12)]
    for t in threads:
        t.start()
    wait_until(lambda: slow.requests == 12, what="every request to reach the backend")
    started = time.monotonic()
    dp.stop(10)
    took = time.monotonic() - started
    for t in threads:
        t.join(10)
    assert results == [200] * 12
    assert took < 5, "stop waits for what is in flight, not for the whole grace period"
