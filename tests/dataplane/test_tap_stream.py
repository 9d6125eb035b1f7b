"""Tap in the data plane: request metadata as requests finish, only while a tap is open, filtered,
with request headers cut down to an allow-list, and bounded (a slow reader loses events, counted)."""

from __future__ import annotations

import time

import httpx

from helpers import cluster, http_listener, route


def test_a_tap_sees_matching_requests_with_allow_listed_headers(http_backend, proxy) -> None:
    b = http_backend("api")
    dp = proxy(
        {
            "listeners": [http_listener("web", [route("api", path_prefix="/")])],
            "clusters": [cluster("api", [b.address])],
        }
    )
    addr = dp.addresses()["web"]
    with httpx.Client() as c:
        assert c.get(f"http://{addr}/before").status_code == 200
        tap = dp.tap(path_prefix="/api", method="get")
        headers = {"authorization": "Bearer secret", "cookie": "s=1", "user-agent": "tap-test", "x-request-id": "r1"}
        assert c.get(f"http://{addr}/api/items?q=1", headers=headers).status_code == 200
        assert c.get(f"http://{addr}/other").status_code == 200
        assert c.post(f"http://{addr}/api/items").status_code == 200
    events = tap.poll(timeout=5)
    assert len(events) == 1, events
    (e,) = events
    assert e["method"] == "GET"
    assert e["path"] == "/api/items?q=1"
    assert e["status"] == 200
    assert e["upstream"] == b.address
    assert e["duration_ms"] > 0
    assert e["direction"] == "outbound"
    assert e["request_id"] == "r1"
    assert e["request_headers"] == {"accept": "*/*", "user-agent": "tap-test", "x-request-id": "r1"}
    assert "secret" not in str(e) and "s=1" not in str(e)
    start = time.monotonic()
    assert tap.poll(timeout=0.2) == []
    assert time.monotonic() - start < 2
    tap.close()
    start = time.monotonic()
    assert tap.poll(timeout=5) == []
    assert time.monotonic() - start < 2, "a closed tap answers at once"


def test_status_filter_and_a_bounded_queue(http_backend, proxy) -> None:
    b = http_backend("api", status=503)
    dp = proxy({"listeners": [http_listener("web", [route("api")])], "clusters": [cluster("api", [b.address])]})
    addr = dp.addresses()["web"]
    tap = dp.tap(status=503, max_queue=2)
    other = dp.tap(status=200)
    with httpx.Client() as c:
        for _ in range(5):
            assert c.get(f"http://{addr}/").status_code == 503
    assert len(tap.poll(timeout=1, max_events=10)) == 2
    assert tap.dropped == 3
    assert other.poll(timeout=0.1) == []
    assert other.dropped == 0
