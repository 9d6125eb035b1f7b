"""Run the demo: three backends, a data plane with a 90/10 canary in front of
them, some traffic through it, and what the proxy saw."""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from meshctl import DataPlane
from meshctl.demo.backends import DemoBackend


def demo_config(listen: str, v1: list[str], v2: list[str]) -> dict[str, Any]:
    """The data-plane config of the demo: canary header first, then a 90/10 split."""
    return {
        "admin": {"address": "127.0.0.1:0"},
        "listeners": [
            {
                "name": "web",
                "address": listen,
                "protocol": "http",
                "routes": [
                    {
                        "name": "canary-header",
                        "match": {"path_prefix": "/", "headers": {"x-canary": "true"}},
                        "backends": [{"cluster": "catalog-v2"}],
                    },
                    {
                        "name": "split",
                        "match": {"path_prefix": "/"},
                        "backends": [
                            {"cluster": "catalog-v1", "weight": 90},
                            {"cluster": "catalog-v2", "weight": 10},
                        ],
                    },
                ],
            }
        ],
        "clusters": [
            {"name": "catalog-v1", "lb": "round_robin", "endpoints": [{"address": a} for a in v1]},
            {"name": "catalog-v2", "lb": "round_robin", "endpoints": [{"address": a} for a in v2]},
        ],
    }


@dataclass
class TrafficResult:
    by_backend: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0


def drive(address: str, requests: int, connections: int = 4) -> TrafficResult:
    """Send `requests` GETs over `connections` keep-alive connections."""
    host, port = address.rsplit(":", 1)
    result = TrafficResult()
    lock = threading.Lock()
    per_conn = [requests // connections + (1 if i < requests % connections else 0) for i in range(connections)]

    def worker(n: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        local: list[tuple[str, int, float]] = []
        for i in range(n):
            t0 = time.perf_counter()
            conn.request("GET", f"/items/{i}")
            resp = conn.getresponse()
            resp.read()
            local.append((resp.getheader("x-backend", "-"), resp.status, (time.perf_counter() - t0) * 1000))
        conn.close()
        with lock:
            for backend, status, ms in local:
                result.by_backend[backend] += 1
                result.statuses[status] += 1
                result.latencies_ms.append(ms)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n,)) for n in per_conn]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.elapsed_s = time.perf_counter() - start
    return result


def percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


class Demo:
    """The demo's moving parts, started and stopped together."""

    def __init__(self, listen: str = "127.0.0.1:0"):
        self.backends = [DemoBackend(n).start() for n in ("catalog-v1-a", "catalog-v1-b", "catalog-v2")]
        v1 = [b.address for b in self.backends[:2]]
        v2 = [self.backends[2].address]
        self.dataplane = DataPlane(demo_config(listen, v1, v2))
        self.dataplane.start()
        self.address = self.dataplane.addresses()["web"]
        self.admin = self.dataplane.addresses()["admin"]

    def stop(self) -> None:
        self.dataplane.stop(5.0)
        for b in self.backends:
            b.stop()
