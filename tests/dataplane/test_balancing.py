"""Weighted splits, each balancer's distribution (peak-EWMA too) and locality with failover, through real
requests."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from helpers import cluster, http_listener, route, wait_until


def spread(addr: str, n: int, headers: dict[str, str] | None = None) -> Counter[str]:
    with httpx.Client() as c:
        return Counter(c.get(f"http://{addr}/", headers=headers).headers["x-backend"] for _ in range(n))


def test_weighted_split_across_clusters(backend, proxy) -> None:
    stable, canary = backend("stable"), backend("canary")
    dp = proxy(
        {
            "listeners": [http_listener("web", [route(("stable", 80), ("canary", 20))])],
            "clusters": [cluster("stable", [stable.address]), cluster("canary", [canary.address])],
        }
    )
    n = 2000
    got = spread(dp.addresses()["web"], n)
    # Binomial sd at p=0.2, n=2000 is ~0.9 %: 4 % is more than four sd, never a flake.
    assert abs(got["canary"] / n - 0.20) < 0.04, got
    assert got["stable"] + got["canary"] == n


def test_round_robin_follows_weights_exactly(backend, proxy) -> None:
    a, b = backend("a"), backend("b")
    dp = proxy(
        {
            "listeners": [http_listener("web", [route("c")])],
            "clusters": [cluster("c", [a.address, b.address], lb="round_robin", weights=[1, 3])],
        }
    )
    got = spread(dp.addresses()["web"], 400)
    assert got == Counter({"a": 100, "b": 300})


def test_random_follows_weights(backend, proxy) -> None:
    bs = [backend(n) for n in ("a", "b", "c")]
    dp = proxy(
        {
            "listeners": [http_listener("web", [route("c")])],
            "clusters": [cluster("c", [b.address for b in bs], lb="random", weights=[1, 1, 2])],
        }
    )
    n = 2000
    got = spread(dp.addresses()["web"], n)
    for name, share in (("a", 0.25), ("b", 0.25), ("c", 0.5)):
        assert abs(got[name] / n - share) < 0.05, got


def test_least_request_prefers_the_fast_endpoint(backend, proxy) -> None:
    slow, fast = backend("slow", delay_ms=60), backend("fast")
    dp = proxy(
        {
            "listeners": [http_listener("web", [route("c")])],
            "clusters": [cluster("c", [slow.address, fast.address], lb="least_request")],
        }
    )
    addr = dp.addresses()["web"]
    got: Counter[str] = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + 1.5

    def client() -> None:
        with httpx.Client() as c:
            while time.monotonic() < deadline:
                name = c.get(f"http://{addr}/").headers["x-backend"]
                with lock:
                    got[name] += 1

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Round robin would give the slow endpoint half of the requests.
    assert got["fast"] > 4 * got["slow"], got


def test_ring_hash_is_sticky_and_spreads(backend, proxy) -> None:
    bs = [backend(n) for n in ("a", "b", "c")]
    spec = cluster("c", [b.address for b in bs], lb="ring_hash", hash_header="x-user")
    dp = proxy({"listeners": [http_listener("web", [route("c")])], "clusters": [spec]})
    addr = dp.addresses()["web"]
    owner: dict[str, str] = {}
    for user in range(60):
        got = spread(addr, 5, {"x-user": f"user-{user}"})
        assert len(got) == 1, f"user-{user} was served by {got}"
        owner[f"user-{user}"] = next(iter(got))
    assert set(owner.values()) == {"a", "b", "c"}

    # Removing one endpoint moves only the users it owned.
    spec["endpoints"] = [{"address": bs[0].address}, {"address": bs[1].address}]
    dp.update({"listeners": [http_listener("web", [route("c")], address=addr)], "clusters": [spec]})
    for user, before in owner.items():
        after = next(iter(spread(addr, 1, {"x-user": user})))
        if before != "c":
            assert after == before, user


def test_peak_ewma_starves_the_slow_endpoint(backend, proxy) -> None:
    slow, fast = backend("slow", delay_ms=50), backend("fast")
    dp = proxy(
        {
            "listeners": [http_listener("web", [route("c")])],
            "clusters": [cluster("c", [slow.address, fast.address], lb="peak_ewma")],
        }
    )
    addr = dp.addresses()["web"]
    with ThreadPoolExecutor(4) as pool:  # low concurrency: the latency decides, not the queue
        got = sum(pool.map(lambda _: spread(addr, 100), range(4)), Counter())
    assert got.total() == 400
    # Round robin or random would give it half.
    assert got["slow"] < 40, got
    eps = dp.stats()["clusters"]["c"]["endpoints"]
    assert eps[fast.address]["rtt_ewma_ms"] > 0, eps
    if got["slow"]:
        # Every answer it gave took 50 ms: a peak counts in full at once.
        assert eps[slow.address]["rtt_ewma_ms"] >= 50, eps


def test_locality_stays_local_and_fails_over_in_order(http_backend, proxy) -> None:
    zones = {"l1": "z1", "l2": "z1", "o1": "z3", "f1": "z2", "o2": "z3"}
    bs = {name: http_backend(name) for name in zones}
    spec = cluster(
        "c",
        [],
        # Takes the failing endpoints out; 50 %: one of the two local ones still holds the zone.
        health_check={"type": "http", "path": "/healthz", "interval_ms": 200, "jitter_ms": 20, "timeout_ms": 200},
        locality={"zone": "z1", "failover": ["z2"], "min_healthy_percent": 50},
    )
    spec["endpoints"] = [{"address": bs[n].address, "zone": z} for n, z in zones.items()]
    dp = proxy({"listeners": [http_listener("web", [route("c")])], "clusters": [spec]})
    addr = dp.addresses()["web"]

    def set_health(status: int, *names: str) -> None:
        for n in names:
            bs[n].health = status
        verdict = "passing" if status == 200 else "failing"
        for n in names:
            wait_until(
                lambda n=n: dp.stats()["clusters"]["c"]["endpoints"][bs[n].address]["health_check"] == verdict,
                what=f"{n}'s check {verdict}",
            )

    assert set(spread(addr, 40)) == {"l1", "l2"}
    set_health(503, "l1")
    assert set(spread(addr, 20)) == {"l2"}
    # Both local endpoints out: the first failover zone only, not z3 (listed first among the endpoints).
    set_health(503, "l2")
    assert set(spread(addr, 30)) == {"f1"}
    set_health(200, "l1", "l2")
    assert set(spread(addr, 40)) == {"l1", "l2"}
    eps = dp.stats()["clusters"]["c"]["endpoints"]
    assert {a: ep["zone"] for a, ep in eps.items()} == {bs[n].address: z for n, z in zones.items()}
    assert dp.stats()["clusters"]["c"]["panic"] == 0
