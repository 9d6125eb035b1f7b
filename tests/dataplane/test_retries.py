"""Retries (issue 11, first part): a try that cannot connect is sent again, on another endpoint
when there is one, as the route's policy (2 retries by default) and the cluster's retry budget
allow. Nothing was sent, so any method and body is safe to send again."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx

from helpers import cluster, http_listener, route, unused_port


def test_a_dead_endpoint_costs_no_request(backend, proxy) -> None:
    a, b = backend("a"), backend("b")
    dead = f"127.0.0.1:{unused_port()}"
    dp = proxy(
        {
            "listeners": [http_listener("web", [route("c")])],
            "clusters": [cluster("c", [a.address, dead, b.address])],
        }
    )
    url = f"http://{dp.addresses()['web']}/"

    def client(_: int) -> list[int]:
        with httpx.Client() as c:
            return [c.get(url).status_code for _ in range(30)]

    with ThreadPoolExecutor(10) as pool:
        statuses = [s for batch in pool.map(client, range(10)) for s in batch]
    assert statuses == [200] * 300
    stats = dp.stats()["clusters"]["c"]
    assert stats["retries"] >= 1 and stats["retries"] == stats["connect_failures"]
    assert stats["responses"]["2xx"] == 300 and stats["retries_exhausted"] == 0
    # After five failures in a row the dead endpoint is ejected: retries stop being needed.
    assert stats["endpoints"][dead]["ejections"] == 1 and stats["retries"] <= 10


def test_a_post_body_goes_whole_to_the_endpoint_that_answers(backend, proxy) -> None:
    live = backend("live")
    dead = f"127.0.0.1:{unused_port()}"
    dp = proxy(
        {
            "listeners": [http_listener("web", [route("c")])],
            "clusters": [cluster("c", [dead, live.address], lb="round_robin")],
        }
    )
    body = "x" * 100_000  # larger than any buffer: nothing was read, nothing needs replaying
    with httpx.Client() as c:
        for i in range(6):
            r = c.post(f"http://{dp.addresses()['web']}/items", content=f"{i}:{body}")
            assert r.status_code == 200, r.text
            assert json.loads(r.text)["body"] == f"{i}:{body}"
    assert dp.stats()["clusters"]["c"]["retries"] >= 1


def test_the_budget_caps_retries_against_a_failing_cluster(proxy) -> None:
    dead = f"127.0.0.1:{unused_port()}"
    dp = proxy(
        {
            "listeners": [http_listener("web", [route("c")])],
            "clusters": [
                cluster(
                    "c",
                    [dead],
                    outlier_detection={"consecutive_gateway_errors": 0, "consecutive_5xx": 0},
                    retry_budget={"percent": 20, "min_per_second": 0},
                )
            ],
        }
    )
    n = 200
    with httpx.Client() as c:
        statuses = [c.get(f"http://{dp.addresses()['web']}/").status_code for _ in range(n)]
    assert statuses == [502] * n
    stats = dp.stats()["clusters"]["c"]
    # 20 % of the requests, not the 2 retries each that the route allows.
    assert 0.18 * n <= stats["retries"] <= 0.2 * n + 2, stats
    assert stats["connect_failures"] == n + stats["retries"]
    assert stats["retry_budget_exhausted"] >= n - stats["retries"]


def test_the_route_policy_sets_attempts_and_zero_disables(proxy) -> None:
    dead = f"127.0.0.1:{unused_port()}"
    dp = proxy(
        {
            "listeners": [
                http_listener(
                    "web",
                    [
                        {**route("c", path_prefix="/none"), "retry": {"attempts": 0}},
                        {**route("c"), "retry": {"attempts": 4, "backoff": {"base_ms": 1, "max_ms": 2}}},
                    ],
                )
            ],
            "clusters": [
                cluster("c", [dead], outlier_detection={"consecutive_gateway_errors": 0, "consecutive_5xx": 0})
            ],
        }
    )
    web = dp.addresses()["web"]
    assert httpx.get(f"http://{web}/none").status_code == 502
    stats = dp.stats()["clusters"]["c"]
    assert (stats["connect_failures"], stats["retries"], stats["retries_exhausted"]) == (1, 0, 0)
    assert httpx.get(f"http://{web}/").status_code == 502
    stats = dp.stats()["clusters"]["c"]
    assert (stats["connect_failures"], stats["retries"], stats["retries_exhausted"]) == (6, 4, 1)
