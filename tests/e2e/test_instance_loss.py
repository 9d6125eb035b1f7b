"""An upstream instance killed with SIGKILL under open-loop load (issue 11): the proxy's default
retry policy (connect-failure, refused-stream, reset for idempotent methods), its retry budget
and outlier detection keep every GET successful. Real processes: three `meshctl backend`
instances, the proxy, and the built-in open-loop load generator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from helpers import cluster, http_listener, route, unused_port, wait_until
from meshctl.loadgen import run_bench


@pytest.fixture
def instances() -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    started = []
    for _ in range(3):
        address = f"127.0.0.1:{unused_port()}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "meshctl", "backend", "--http", address],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append((address, proc))
    for address, _ in started:
        wait_until(lambda a=address: _answers(a), timeout=20, what=f"backend {address}")
    yield started
    for _, proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _answers(address: str) -> bool:
    try:
        return httpx.get(f"http://{address}/", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_killed_instance_costs_no_get_request(instances, proxy) -> None:
    addresses = [a for a, _ in instances]
    dp = proxy({"listeners": [http_listener("web", [route("c")])], "clusters": [cluster("c", addresses)]})
    url = f"http://{dp.addresses()['web']}/"
    report: dict[str, Any] = {}

    def load() -> None:
        options = {"url": url, "connections": 16, "rps": 800, "duration": 5, "threads": 1}
        report.update(run_bench(options, show_progress=False))

    loader = threading.Thread(target=load)
    loader.start()
    # Kill one instance once the load is well under way (its connections are in use).
    wait_until(lambda: dp.stats()["clusters"]["c"]["requests"] > 1000, timeout=10, what="load")
    victim_address, victim = instances[1]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    killed_at = time.monotonic()
    loader.join(timeout=30)
    assert not loader.is_alive()
    assert time.monotonic() - killed_at > 1.5, "the load went on well after the kill"
    assert report["requests"] >= 3500, report
    assert report["statuses"].get("2xx") == report["requests"], report
    assert sum(report["errors"].values()) == 0, report["errors"]
    stats = dp.stats()["clusters"]["c"]
    assert stats["endpoints"][victim_address]["ejections"] >= 1, stats["endpoints"][victim_address]
    assert stats["retries"] >= 1 and stats["retries_exhausted"] == 0, stats
