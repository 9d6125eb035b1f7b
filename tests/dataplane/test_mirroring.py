"""Request mirroring (issue 11): a route's `mirrors` send a copy of a share of its requests to
another cluster, with `-shadow` added to the Host and the body teed up to 64 KiB (a longer one is
not mirrored, counted as `mirror_skipped`). The copies' answers are dropped: a shadow that is down
or slow never delays or fails the primary request."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from helpers import HttpBackend, cluster, header_values, http_listener, route, unused_port, wait_until
from meshctl import ConfigError, DataPlane


@pytest.fixture
def shadow(http_backend: Callable[..., HttpBackend]) -> Callable[..., HttpBackend]:
    """Mirror targets that record each copy as it arrives, then answer 500 (after `delay`
    seconds): the shadow's answer must not matter to anyone."""
    return lambda delay=0.0: http_backend("shadow", 500, delay=delay)


def copies(shadow: HttpBackend) -> list[tuple[str, str, str, bytes]]:
    """What the shadow received: (method, path, Host, body) per copy."""
    return [(s["method"], s["path"], header_values(s, "host")[0], s["body"]) for s in shadow.seen]


def mirrored_config(primary: str, shadow: str, percent: float = 100, **route_extra: Any) -> dict[str, Any]:
    return {
        "listeners": [
            http_listener(
                "web",
                [
                    {**route("primary"), "mirrors": [{"cluster": "shadow", "percent": percent}], **route_extra},
                ],
            )
        ],
        "clusters": [cluster("primary", [primary]), cluster("shadow", [shadow])],
    }


def latencies(urls: list[str], threads: int = 4) -> list[float]:
    """Seconds taken by a GET of each of `urls` (in their order), shared round-robin among
    `threads` keep-alive clients; every answer must be the primary's 200."""

    def client(first: int) -> list[float]:
        out = []
        with httpx.Client(timeout=10) as c:
            for url in urls[first::threads]:
                t0 = time.perf_counter()
                r = c.get(url)
                out.append(time.perf_counter() - t0)
                assert r.status_code == 200 and r.json()["backend"] == "primary", r.text
        return out

    with ThreadPoolExecutor(threads) as pool:
        batches = list(pool.map(client, range(threads)))
    return [batches[i % threads][i // threads] for i in range(len(urls))]


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


def test_the_shadow_sees_every_request_and_the_client_only_the_primary(backend, shadow, proxy) -> None:
    primary, copy = backend("primary"), shadow()
    dp = proxy(mirrored_config(primary.address, copy.address))
    url = f"http://{dp.addresses()['web']}"
    sent = []
    with httpx.Client(headers={"host": "shop.example"}) as c:
        for i in range(50):
            if i % 2:
                r = c.post(f"{url}/orders/{i}?q={i}", content=f"order {i}")
                sent.append(("POST", f"/orders/{i}?q={i}", "shop.example-shadow", f"order {i}".encode()))
            else:
                r = c.get(f"{url}/items/{i}")
                sent.append(("GET", f"/items/{i}", "shop.example-shadow", b""))
            assert r.status_code == 200
            assert r.json()["backend"] == "primary" and r.json()["headers"]["host"] == "shop.example"
            if i % 2:
                assert r.json()["body"] == f"order {i}"
    # Copies travel on their own: wait for all of them, then compare as sets (their order may vary).
    wait_until(lambda: len(copy.seen) >= 50, what="50 copies at the shadow")
    assert sorted(copies(copy)) == sorted(sent)
    assert primary.requests == 50
    stats = dp.stats()["clusters"]
    assert stats["shadow"]["mirrored"] == 50 and stats["shadow"]["mirror_skipped"] == 0
    assert stats["primary"]["mirrored"] == 0 and stats["primary"]["responses"]["2xx"] == 50


@pytest.mark.parametrize("shadow_state", ["down", "slow"])
def test_a_down_or_slow_shadow_does_not_touch_the_primary(shadow_state, backend, shadow, proxy) -> None:
    primary = backend("primary")
    if shadow_state == "down":
        address = f"127.0.0.1:{unused_port()}"
    else:
        slow = shadow(delay=2.0)
        address = slow.address
    dp = proxy(
        {
            "listeners": [
                http_listener(
                    "web",
                    [
                        {**route("primary", path_prefix="/plain")},
                        {**route("primary"), "mirrors": [{"cluster": "shadow"}]},
                    ],
                )
            ],
            "clusters": [cluster("primary", [primary.address]), cluster("shadow", [address])],
        }
    )
    web = dp.addresses()["web"]
    n = 200
    # The same primary through a route without mirror is the baseline, measured alongside: each
    # client alternates.
    took = latencies([f"http://{web}/plain", f"http://{web}/"] * n)
    baseline, mirrored = took[0::2], took[1::2]
    assert p99(mirrored) < max(3 * p99(baseline), p99(baseline) + 0.05), (p99(mirrored), p99(baseline))
    assert statistics.median(mirrored) < statistics.median(baseline) + 0.01
    shadow_stats = dp.stats()["clusters"]["shadow"]
    assert shadow_stats["mirrored"] == n
    if shadow_state == "slow":
        assert len(slow.seen) >= 1
        assert shadow_stats["active_requests"] >= 1, "copies are still waiting on the slow shadow"
    assert dp.stats()["clusters"]["primary"]["responses"]["2xx"] == 2 * n


def test_copies_that_cannot_connect_are_counted_as_connect_failures(backend, proxy) -> None:
    primary = backend("primary")
    dp = proxy(mirrored_config(primary.address, f"127.0.0.1:{unused_port()}"))
    with httpx.Client() as c:
        for _ in range(20):
            assert c.get(f"http://{dp.addresses()['web']}/").status_code == 200

    def settled() -> dict[str, Any] | None:
        shadow = dp.stats()["clusters"]["shadow"]
        return shadow if shadow["connect_failures"] + shadow["upstream_errors"] >= 20 else None

    # As the primary path counts them: a copy's connect failure is one, not an upstream error.
    shadow = wait_until(settled, timeout=5, what="every copy's failure counted")
    assert (shadow["mirrored"], shadow["connect_failures"], shadow["upstream_errors"]) == (20, 20, 0), shadow


def test_a_partial_mirror_copies_its_share(backend, shadow, proxy) -> None:
    primary, copy = backend("primary"), shadow()
    dp = proxy(mirrored_config(primary.address, copy.address, percent=30))
    url = f"http://{dp.addresses()['web']}/"
    n = 1000
    with ThreadPoolExecutor(4) as pool:

        def client(count: int) -> None:
            with httpx.Client() as c:
                for _ in range(count):
                    assert c.get(url).status_code == 200

        list(pool.map(client, [n // 4] * 4))
    mirrored = dp.stats()["clusters"]["shadow"]["mirrored"]
    assert 0.25 * n <= mirrored <= 0.35 * n, mirrored
    wait_until(lambda: len(copy.seen) == mirrored, what="every copy at the shadow")
    assert primary.requests == n


def test_a_body_over_64_kib_is_not_mirrored_but_reaches_the_primary_whole(backend, shadow, proxy) -> None:
    primary, copy = backend("primary"), shadow()
    dp = proxy(mirrored_config(primary.address, copy.address))
    url = f"http://{dp.addresses()['web']}/upload"
    small = "s" * (64 * 1024)  # at the limit: still mirrored
    large = "L" * (64 * 1024 + 1)
    with httpx.Client() as c:
        for body in (small, large):
            r = c.post(url, content=body)
            assert r.status_code == 200 and json.loads(r.text)["body"] == body
    wait_until(lambda: dp.stats()["clusters"]["shadow"]["mirror_skipped"] == 1, what="the large body skipped")
    wait_until(lambda: len(copy.seen) == 1, what="the small body's copy")
    assert copy.bodies == [small.encode()]
    assert dp.stats()["clusters"]["shadow"]["mirrored"] == 1
    assert primary.requests == 2


def test_a_bad_mirror_is_refused_with_its_field_path(backend) -> None:
    primary = backend("primary")
    unknown = mirrored_config(primary.address, primary.address)
    unknown["clusters"] = unknown["clusters"][:1]
    over = mirrored_config(primary.address, primary.address, percent=150)
    for config, field in ((unknown, "cluster"), (over, "percent")):
        with pytest.raises(ConfigError) as e:
            DataPlane(config)
        assert [p for p, _ in e.value.errors] == [f"listeners[0].routes[0].mirrors[0].{field}"]
