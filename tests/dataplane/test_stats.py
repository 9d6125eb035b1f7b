"""Latency histograms in the stats: listener request latency and cluster
upstream response time, against a backend that is slow on purpose."""

from __future__ import annotations

import httpx

from helpers import cluster, http_listener, route

# Buckets start at powers of 2^(1/3) us and an estimate may sit anywhere in
# its bucket; 2^16 us = 65.5 ms is an edge, so 66 ms puts every sample near the
# bottom of [65.5, 82.6) and the interpolated p50 (capped at the max) >= 66.
DELAY_MS = 66
# Within one bucket (26% wide): what the quantiles promise for any delay.
BUCKET_RATIO = 2 ** (1 / 3)
# A loaded two-core CI machine can add a lot; the point is the order of magnitude.
MARGIN_MS = 200
LATENCY_KEYS = {"count", "mean", "p50", "p90", "p99", "max"}


def test_latency_of_a_slow_backend(backend, proxy) -> None:
    b = backend("slow", delay_ms=DELAY_MS)
    dp = proxy(
        {
            "admin": {"address": "127.0.0.1:0"},
            "listeners": [http_listener("web", [route("c", path_prefix="/")])],
            "clusters": [cluster("c", [b.address])],
        }
    )
    before = dp.stats()
    assert before["listeners"]["web"]["latency_ms"] == dict.fromkeys(LATENCY_KEYS, 0)
    assert before["clusters"]["c"]["latency_ms"]["count"] == 0

    sent = 20
    addr = dp.addresses()["web"]
    with httpx.Client(timeout=10) as c:
        for _ in range(sent):
            assert c.get(f"http://{addr}/").status_code == 200
        admin_stats = c.get(f"http://{dp.addresses()['admin']}/stats").json()

    stats = dp.stats()
    for latency in (stats["listeners"]["web"]["latency_ms"], stats["clusters"]["c"]["latency_ms"]):
        assert set(latency) == LATENCY_KEYS
        assert latency["count"] == sent
        assert DELAY_MS <= latency["p50"] < DELAY_MS + MARGIN_MS, latency
        assert DELAY_MS <= latency["mean"] < DELAY_MS + MARGIN_MS, latency
        assert latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"], latency
    # The listener's span holds the cluster's.
    assert stats["listeners"]["web"]["latency_ms"]["max"] >= stats["clusters"]["c"]["latency_ms"]["max"]
    assert admin_stats["listeners"]["web"]["latency_ms"]["count"] == sent
    assert admin_stats["clusters"]["c"]["latency_ms"]["count"] == sent


def test_quantiles_split_fast_and_slow(backend, proxy) -> None:
    b = backend("b")
    dp = proxy({"listeners": [http_listener("web", [route("c")])], "clusters": [cluster("c", [b.address])]})
    addr = dp.addresses()["web"]
    with httpx.Client(timeout=10) as c:
        # p50 among the fast ones, p90 among the slow ones (263 ms: just above the 2^18 us edge).
        for ms in [9] * 15 + [263] * 5:
            assert c.get(f"http://{addr}/?ms={ms}").status_code == 200
    latency = dp.stats()["clusters"]["c"]["latency_ms"]
    assert latency["count"] == 20
    assert 9 / BUCKET_RATIO <= latency["p50"] < 9 + MARGIN_MS, latency
    assert 263 <= latency["p90"] <= latency["max"] < 263 + MARGIN_MS, latency


def test_local_replies_count_for_the_listener_only(backend, proxy) -> None:
    b = backend("b")
    dp = proxy(
        {
            "listeners": [
                http_listener("web", [route("c", path_prefix="/api")]),
                {"name": "db", "address": "127.0.0.1:0", "protocol": "tcp", "cluster": "c"},
            ],
            "clusters": [cluster("c", [b.address])],
        }
    )
    addr = dp.addresses()["web"]
    with httpx.Client(timeout=10) as c:
        assert c.get(f"http://{addr}/nope").status_code == 404
        assert c.get(f"http://{addr}/api").status_code == 200
    stats = dp.stats()
    assert stats["listeners"]["web"]["latency_ms"]["count"] == 2
    assert stats["clusters"]["c"]["latency_ms"]["count"] == 1
    assert "latency_ms" not in stats["listeners"]["db"]  # TCP listeners have no requests


def test_cluster_connections_count_http_upstream_connections(backend, proxy) -> None:
    b = backend("b")
    dp = proxy({"listeners": [http_listener("web", [route("c")])], "clusters": [cluster("c", [b.address])]})
    addr = dp.addresses()["web"]
    # Two clients in turn, each on its own connection: the first upstream connection is
    # reused for the second (kept alive), so the count says connections, not requests.
    for _ in range(2):
        with httpx.Client(timeout=10) as c:
            for _ in range(3):
                assert c.get(f"http://{addr}/").status_code == 200
    clusters = dp.stats()["clusters"]["c"]
    assert clusters["requests"] == 6
    assert 1 <= clusters["connections"] <= 2, clusters
    assert clusters["active_connections"] >= 1  # pooled, still open
