"""Retries after bytes may have reached the upstream (issue 11): answers with a retried status
(gateway-error, 5xx, listed codes, gRPC statuses), resets and per-try timeouts. Bodies up to
64 KiB are kept for replay; POST is retried only when nothing was processed unless the route
opts in; `max_retries` bounds retries in flight; the budget bounds them over time."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import httpx

from helpers import cluster, http_listener, route

NO_OUTLIER = {"consecutive_gateway_errors": 0, "consecutive_5xx": 0}
FAST = {"base_ms": 1, "max_ms": 2}


def _proxy(proxy, addresses: list[str], retry: dict[str, Any] | None, **cluster_options: Any):
    r = route("c")
    if retry is not None:
        r["retry"] = retry
    options = {"lb": "round_robin", "outlier_detection": NO_OUTLIER, **cluster_options}
    dp = proxy({"listeners": [http_listener("web", [r])], "clusters": [cluster("c", addresses, **options)]})
    return dp, f"http://{dp.addresses()['web']}"


def test_gateway_errors_are_retried_elsewhere_and_bodies_replayed(proxy, http_backend) -> None:
    bad, good = http_backend("bad", 503), http_backend("good")
    dp, url = _proxy(proxy, [bad.address, good.address], {"retry_on": ["gateway-error"], "backoff": FAST})
    with httpx.Client() as c:
        for i in range(10):
            body = f"{i}:" + "x" * 10_000
            r = c.put(f"{url}/item", content=body)
            assert r.status_code == 200 and (r.json()["by"], r.json()["body"]) == ("good", body)
    # Every try on the bad endpoint read the whole body, and the retry sent it again whole.
    assert len(bad.bodies) >= 4 and all(b.endswith(b"x" * 10_000) for b in bad.bodies)
    stats = dp.stats()["clusters"]["c"]
    assert stats["retries"] == len(bad.bodies) and stats["responses"]["5xx"] == len(bad.bodies)


def test_the_last_answer_is_the_upstreams_own(proxy, http_backend) -> None:
    bad = http_backend("bad", 503)
    dp, url = _proxy(proxy, [bad.address], {"attempts": 2, "retry_on": ["5xx"], "backoff": FAST})
    r = httpx.get(f"{url}/")
    assert r.status_code == 503 and r.json()["by"] == "bad"
    assert len(bad.bodies) == 3
    stats = dp.stats()["clusters"]["c"]
    assert (stats["retries"], stats["retries_exhausted"]) == (2, 1)


def test_only_listed_conditions_and_codes_are_retried(proxy, http_backend) -> None:
    teapot, error = http_backend("teapot", 418), http_backend("error", 500)
    good = http_backend("good")
    policy = {"retry_on": ["gateway-error"], "codes": [418], "backoff": FAST}
    _, url = _proxy(proxy, [teapot.address, error.address, good.address], policy)
    with httpx.Client() as c:
        statuses = [c.get(f"{url}/").status_code for _ in range(30)]
    # 418 is listed; 500 is neither listed nor a gateway error.
    assert 418 not in statuses and 500 in statuses and 200 in statuses


def test_post_is_retried_only_when_the_route_opts_in(proxy, http_backend) -> None:
    bad, good = http_backend("bad", 503), http_backend("good")
    _, plain = _proxy(proxy, [bad.address, good.address], {"retry_on": ["5xx"], "backoff": FAST})
    with httpx.Client() as c:
        statuses = [c.post(f"{plain}/", content=b"order").status_code for _ in range(10)]
    assert statuses.count(503) == 5, "a POST answered by the upstream is its answer"
    before = len(bad.bodies)
    opt_in = {"retry_on": ["5xx"], "non_idempotent": True, "backoff": FAST}
    _, opted = _proxy(proxy, [bad.address, good.address], opt_in)
    with httpx.Client() as c:
        assert all(c.post(f"{opted}/", content=b"order").status_code == 200 for _ in range(10))
    assert bad.bodies[before:] and set(bad.bodies[before:]) == {b"order"}


def test_a_reset_before_the_answer_is_retried_by_default(proxy, http_backend) -> None:
    dropping, good = http_backend("dropping", reset=True), http_backend("good")
    dp, url = _proxy(proxy, [dropping.address, good.address], None)
    with httpx.Client() as c:
        assert all(c.get(f"{url}/").status_code == 200 for _ in range(10))
        # Not for a POST: the upstream may have acted on it.
        statuses = [c.post(f"{url}/", content=b"x").status_code for _ in range(10)]
    assert statuses.count(502) == 5
    assert dp.stats()["clusters"]["c"]["retries"] >= 5


def test_a_per_try_timeout_moves_on_to_another_endpoint(proxy, http_backend) -> None:
    slow, fast = http_backend("slow", delay=2.0), http_backend("fast")
    dp, url = _proxy(proxy, [slow.address, fast.address], {"per_try_timeout_ms": 150, "backoff": FAST})
    with httpx.Client(timeout=5) as c:
        started = time.monotonic()
        answers = [c.get(f"{url}/").json()["by"] for _ in range(6)]
        took = time.monotonic() - started
    assert answers == ["fast"] * 6
    assert took < 6 * 0.15 + 1.5, took
    assert dp.stats()["clusters"]["c"]["timeouts"] >= 3


def test_the_route_timeout_bounds_every_try_together(proxy, http_backend) -> None:
    slow = http_backend("slow", delay=2.0)
    dp = proxy(
        {
            "listeners": [
                http_listener(
                    "web", [{**route("c"), "timeout_ms": 400, "retry": {"per_try_timeout_ms": 150, "attempts": 5}}]
                )
            ],
            "clusters": [cluster("c", [slow.address], outlier_detection=NO_OUTLIER)],
        }
    )
    started = time.monotonic()
    r = httpx.get(f"http://{dp.addresses()['web']}/", timeout=5)
    assert r.status_code == 504 and time.monotonic() - started < 1.0


def test_max_retries_bounds_retries_in_flight(proxy, http_backend) -> None:
    slow_bad = http_backend("slow-bad", 503, delay=0.3)
    dp, url = _proxy(
        proxy,
        [slow_bad.address],
        {"retry_on": ["5xx"], "attempts": 1, "backoff": FAST},
        circuit_breakers={"max_retries": 2},
        retry_budget={"percent": 100, "min_per_second": 100},
    )

    def call(_: int) -> httpx.Response:
        return httpx.get(f"{url}/", timeout=5)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, range(8)))
    overflow = [r for r in answers if r.headers.get("x-meshctl-error") == "overflow"]
    retried = [r for r in answers if r.status_code == 503 and "x-meshctl-error" not in r.headers]
    assert len(overflow) >= 4 and retried, [r.status_code for r in answers]
    stats = dp.stats()["clusters"]["c"]
    assert stats["retries"] <= 4 and stats["overflow"] == len(overflow)


def test_a_failing_cluster_under_load_gets_retries_within_its_budget(proxy, http_backend) -> None:
    bad = http_backend("bad", 503)
    dp, url = _proxy(
        proxy, [bad.address], {"retry_on": ["5xx"], "backoff": FAST}, retry_budget={"percent": 20, "min_per_second": 0}
    )

    def client(_: int) -> list[int]:
        with httpx.Client() as c:
            return [c.get(f"{url}/").status_code for _ in range(50)]

    with ThreadPoolExecutor(8) as pool:
        statuses = [s for batch in pool.map(client, range(8)) for s in batch]
    assert statuses == [503] * 400
    stats = dp.stats()["clusters"]["c"]
    # The policy allows 2 retries each (800); the budget, 20 % of the requests.
    assert 0.15 * 400 <= stats["retries"] <= 0.2 * 400 + 2, stats
    assert len(bad.bodies) == 400 + stats["retries"]


SERVICE = "demo.Flaky"
NO_PROXY = [("grpc.enable_http_proxy", 0)]


def _grpc_server(name: str, unavailable: bool) -> grpc.Server:
    def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
        if unavailable:
            context.abort(grpc.StatusCode.UNAVAILABLE, "draining")
        return f"{name}:".encode() + request

    server = grpc.server(ThreadPoolExecutor(max_workers=4), options=NO_PROXY)
    handler = grpc.method_handlers_generic_handler(SERVICE, {"Call": grpc.unary_unary_rpc_method_handler(unary)})
    server.add_generic_rpc_handlers((handler,))
    server.port = server.add_insecure_port("127.0.0.1:0")  # type: ignore[attr-defined]
    server.start()
    return server


def test_grpc_unavailable_is_retried_on_another_endpoint(proxy) -> None:
    draining, serving = _grpc_server("draining", True), _grpc_server("serving", False)
    try:
        addresses = [f"127.0.0.1:{s.port}" for s in (draining, serving)]  # type: ignore[attr-defined]
        dp = proxy(
            {
                "listeners": [
                    http_listener("grpc", [{**route("g"), "retry": {"grpc_codes": ["unavailable"], "backoff": FAST}}])
                ],
                "clusters": [cluster("g", addresses, protocol="http2", lb="round_robin", outlier_detection=NO_OUTLIER)],
            }
        )
        with grpc.insecure_channel(dp.addresses()["grpc"], options=NO_PROXY) as ch:
            call = ch.unary_unary(f"/{SERVICE}/Call")
            replies = [call(f"m{i}".encode(), timeout=10) for i in range(10)]
        assert replies == [f"serving:m{i}".encode() for i in range(10)]
        assert dp.stats()["clusters"]["g"]["retries"] >= 4
    finally:
        draining.stop(0)
        serving.stop(0)


def test_the_default_policy_shows_in_config(proxy, http_backend) -> None:
    good = http_backend("good")
    dp, _ = _proxy(proxy, [good.address], None)
    admin = proxy(
        {
            "admin": {"address": "127.0.0.1:0"},
            "listeners": [http_listener("web", [route("c")])],
            "clusters": [cluster("c", [good.address])],
        }
    )
    shown = httpx.get(f"http://{admin.addresses()['admin']}/config").json()
    assert shown["listeners"][0]["routes"][0]["retry"] == {
        "attempts": 2,
        "retry_on": ["connect-failure", "refused-stream", "reset"],
        "non_idempotent": False,
        "backoff": {"base_ms": 25, "max_ms": 250},
    }
    c = shown["clusters"][0]
    assert c["retry_budget"] == {"percent": 20, "min_per_second": 10, "window_ms": 10000}
    assert c["circuit_breakers"]["max_retries"] == 1024
    assert c["outlier_detection"]["consecutive_5xx"] == 5
    assert dp.stats()["clusters"]["c"]["retries"] == 0
